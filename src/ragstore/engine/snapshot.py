"""Online snapshots of an embedded store: take one while searches and writes go on,
verify it, restore it.

A snapshot is a directory ``snapshot-<UTC time>-<random>`` inside a snapshot folder:

- ``ragstore.db``: the database as of one instant (see
  :mod:`ragstore.store.sqlite.copies`);
- ``indexes/<collection id>/<segment>/``: the sealed index segments that copy names;
- ``manifest.json``: ragstore and schema versions, the collections with their configs
  and counts, and every other file with its size and BLAKE3 hash (SHA-256 in
  snapshots of format 1, which are still read). Written last.

It is built under ``.unfinished-<name>`` and renamed when complete, so an interrupted
snapshot (a crash, ``kill -9``) leaves only an unfinished directory that :func:`verify`
refuses and the next :func:`create` in that folder removes.

The files of every finished segment are opened before the database is copied, and the
segments that copy names are copied after it: from those open files (which outlive a
segment merged away and deleted meanwhile) or, for one sealed in between, from the
store. Segment files never change once written.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import blake3
from isal import isal_zlib

from ragstore.engine.background import at_low_priority
from ragstore.errors import Conflict, InvalidInput, NotFound, SnapshotInvalid, StoreError
from ragstore.index.segments import fsync
from ragstore.store.base import StorageBackend
from ragstore.store.sqlite import copies
from ragstore.store.sqlite.backend import INDEX_DIRNAME, SqliteBackend
from ragstore.store.sqlite.db import DB_FILENAME

FORMAT = 2
"""Version of the snapshot layout and manifest (1: files hashed with SHA-256)."""
HASHES: dict[str, Callable[[], Any]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}
"""Content hashes a manifest may list a file with. New snapshots use BLAKE3: it hashes
several times faster than SHA-256 on one core, and hashing is most of a snapshot's
work beside the copying."""
HASH = "blake3"
MANIFEST = "manifest.json"
PREFIX = "snapshot-"
UNFINISHED = ".unfinished-"
_BLOCK = 1 << 22
_ATTEMPTS = 5
"""Tries when segments keep being merged away between the two copy passes."""


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A file in a snapshot: its path relative to the snapshot, size and content hash
    (hex, by ``algorithm``, one of :data:`HASHES`)."""

    path: str
    bytes: int
    digest: str
    algorithm: str = HASH


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A complete snapshot as its manifest describes it."""

    path: Path
    created_at: str
    ragstore_version: str
    schema_version: int
    collections: list[dict[str, Any]]
    files: list[SnapshotFile] = field(repr=False)
    seconds: float | None = None
    """How long taking it took (``None`` when read back from disk)."""

    @property
    def bytes(self) -> int:
        """Total size of the snapshot's files, the manifest left out."""
        return sum(f.bytes for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON summary (without the file list)."""
        return {
            "path": str(self.path),
            "created_at": self.created_at,
            "ragstore_version": self.ragstore_version,
            "schema_version": self.schema_version,
            "collections": self.collections,
            "files": len(self.files),
            "bytes": self.bytes,
            "seconds": self.seconds,
        }


def create(
    backend: StorageBackend,
    folder: Path,
    *,
    collections: Sequence[str] | None = None,
    keep: int | None = None,
) -> Snapshot:
    """Take a snapshot of the store (or of ``collections`` only) into ``folder``; with
    ``keep``, then remove all but the newest ``keep`` snapshots there."""
    store = _embedded(backend)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise InvalidInput("keep must be a whole number of at least 1", field="keep")
    wanted = _collection_ids(store, collections)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_unfinished(folder)
    started = time.perf_counter()
    taken = at_low_priority(lambda: _attempts(store, folder, wanted))
    if keep is not None:
        prune(folder, keep)
    return replace(taken, seconds=round(time.perf_counter() - started, 3))


def verify(path: Path) -> Snapshot:
    """Re-hash every file of a snapshot, open its database read-only and check its
    counts; raises :class:`SnapshotInvalid` naming the first bad file."""
    if path.name.startswith(UNFINISHED):
        raise SnapshotInvalid(f"{path} is an unfinished snapshot", file=MANIFEST)
    snapshot = read_manifest(path)
    listed = {f.path for f in snapshot.files}
    for listed_file in snapshot.files:
        _check_file(path, listed_file)
    for extra in sorted(_relative_files(path) - listed - {MANIFEST}):
        raise SnapshotInvalid(f"{extra} is not in the manifest", file=extra)
    _check_database(path, snapshot, listed)
    return snapshot


def restore(path: Path, to: Path, *, force: bool = False) -> Snapshot:
    """Verify a snapshot and restore it as the store in directory ``to``: written beside
    it and renamed into place. A non-empty ``to`` is replaced only with ``force``."""
    snapshot = verify(path)
    if _non_empty(to) and not force:
        raise Conflict(f"{to} is not empty: restore into a new directory, or force")
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = to.parent / f".restoring-{to.name}-{secrets.token_hex(4)}"
    try:
        for listed in snapshot.files:
            (staging / listed.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / listed.path, staging / listed.path)
            if _digest(staging, listed.path, listed.algorithm)[0] != listed:
                raise SnapshotInvalid(f"{listed.path} changed while restored", file=listed.path)
        copies.give_new_identity(staging / DB_FILENAME)
        _fsync_tree(staging)
        _swap_in(staging, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return snapshot


def read_manifest(path: Path) -> Snapshot:
    """The snapshot in directory ``path`` as its manifest says, unchecked."""
    try:
        raw = json.loads((path / MANIFEST).read_text())
        return Snapshot(
            path=path,
            created_at=str(raw["created_at"]),
            ragstore_version=str(raw["ragstore_version"]),
            schema_version=int(raw["schema_version"]),
            collections=list(raw["collections"]),
            files=[_listed(f) for f in raw["files"]],
        )
    except FileNotFoundError:
        raise SnapshotInvalid(f"{path} has no {MANIFEST}: not a snapshot", file=MANIFEST) from None
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise SnapshotInvalid(f"{path / MANIFEST} cannot be read: {exc}", file=MANIFEST) from None


def _listed(raw: dict[str, Any]) -> SnapshotFile:
    algorithm = next(name for name in HASHES if name in raw)
    return SnapshotFile(str(raw["path"]), int(raw["bytes"]), str(raw[algorithm]), algorithm)


def list_snapshots(folder: Path) -> list[Path]:
    """The finished snapshots in ``folder``, oldest first (their names sort by time)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.is_dir())


def prune(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` snapshots in ``folder``; returns those removed."""
    doomed = list_snapshots(folder)[:-keep] if keep > 0 else list_snapshots(folder)
    for old in doomed:
        shutil.rmtree(old)
    return doomed


def collection_rows(path: Path, name: str) -> Iterator[list[Any]]:
    """The rows of one collection of a verified snapshot, a batch at a time (see
    :func:`ragstore.store.sqlite.copies.document_rows`)."""
    with closing(copies.open_read_only(path / DB_FILENAME)) as conn:
        found = [c for c in copies.collections(conn) if c.name == name]
        if not found:
            raise NotFound(f"snapshot {path} has no collection named {name!r}")
        yield from copies.document_rows(conn, found[0].id)


def collection_config(snapshot: Snapshot, name: str) -> dict[str, Any]:
    """The config a collection of the snapshot was created with."""
    for described in snapshot.collections:
        if described["name"] == name:
            return dict(described["config"])
    raise NotFound(f"snapshot {snapshot.path} has no collection named {name!r}")


def _attempts(store: SqliteBackend, folder: Path, wanted: list[int] | None) -> Snapshot:
    for _ in range(_ATTEMPTS):
        taken = _attempt(store, folder, wanted)
        if taken is not None:
            return taken
    raise StoreError("segments kept being replaced while the snapshot was taken: retry")


def _attempt(store: SqliteBackend, folder: Path, wanted: list[int] | None) -> Snapshot | None:
    # Names sort by time: microseconds, then a random tail against equal clocks.
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{PREFIX}{now}-{secrets.token_hex(3)}"
    staging = folder / f"{UNFINISHED}{name}"
    staging.mkdir()
    copier = _Copier(staging)
    held: Held = {}
    try:
        held.update(_hold_segments(store.index_root, wanted))
        copies.backup(store.db, staging / DB_FILENAME)
        if wanted is not None:
            copies.keep_only(staging / DB_FILENAME, wanted)
        database = copier.digest(DB_FILENAME)
        with closing(copies.open_read_only(staging / DB_FILENAME)) as conn:
            described = copies.collections(conn)
            version = copies.schema_version(conn)
            needed = copies.segments(conn)
        files = _copy_segments(store.index_root, copier, held, needed)
        if files is None:
            copier.close()
            shutil.rmtree(staging)
            return None
        files.append(database.result()[0])
        files.sort(key=lambda f: f.path)
        copier.finish()
        snapshot = _manifest(staging, described, version, files)
        _fsync_tree(staging)
        final = folder / name
        os.replace(staging, final)
        fsync(folder)
    except BaseException:
        copier.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for files_of_segment in held.values():
            _close_all(files_of_segment)
    return replace(snapshot, path=final)


Digest = tuple[SnapshotFile, int | None]
"""A copied file as the manifest lists it, and its CRC-32 where asked for."""
Held = dict[tuple[str, str], dict[str, BinaryIO]]
"""Per segment ``(collection id, directory)``: per file name, the file held open."""


class _Copier:
    """Copies files into a snapshot in the kernel (``sendfile``) while a second thread
    hashes the files copied before and a third syncs them to disk: copying, hashing and
    writing out overlap. The copy is hashed, not its source: the manifest vouches for
    what the snapshot holds."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="ragstore-snapshot-hash")
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="ragstore-snapshot-sync")
        self._synced: list[Future[None]] = []

    def copy(self, source: BinaryIO, relative: str, *, crc: bool = False) -> Future[Digest]:
        """Copy the open file ``source`` to ``relative`` in the snapshot; its digest
        (with the CRC-32 when ``crc``), to come."""
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        size = os.fstat(source.fileno()).st_size
        with target.open("wb") as copy:
            offset = 0
            while offset < size:
                sent = os.sendfile(copy.fileno(), source.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        return self.digest(relative, crc=crc)

    def digest(self, relative: str, *, crc: bool = False) -> Future[Digest]:
        """The digest of a file already in the snapshot, to come; the file is synced to
        disk meanwhile, so little is left to sync at the end."""
        self._synced.append(self._syncer.submit(fsync, self.staging / relative))
        return self._hasher.submit(_digest, self.staging, relative, HASH, crc)

    def finish(self) -> None:
        """Wait for every hash and sync; raise the first error a sync met (a disk error
        is reported to one ``fsync`` only, so a later one may not see it)."""
        self._hasher.shutdown(wait=True)
        self._syncer.shutdown(wait=True)
        for synced in self._synced:
            synced.result()

    def close(self) -> None:
        """Wait for the hashing and syncing under way; drop the rest."""
        self._hasher.shutdown(wait=True, cancel_futures=True)
        self._syncer.shutdown(wait=True, cancel_futures=True)


def _hold_segments(index_root: Path, wanted: list[int] | None) -> Held:
    """Open every file of the finished segments under ``index_root`` (of the ``wanted``
    collections). An open file outlives its segment being merged away and deleted, so
    every segment a copy of the database taken next names is either held here or
    sealed after this (and still there unless merged away since: try again)."""
    held: Held = {}
    for collection_dir in _children(index_root):
        if wanted is not None and collection_dir.name not in {str(i) for i in wanted}:
            continue
        for segment_dir in _children(collection_dir):
            if segment_dir.name.endswith(".tmp"):  # being written
                continue
            opened = _open_segment(segment_dir)
            if opened is not None:
                held[(collection_dir.name, segment_dir.name)] = opened
    return held


def _open_segment(directory: Path) -> dict[str, BinaryIO] | None:
    """Every file of a segment directory, open; ``None`` when it is gone."""
    opened: dict[str, BinaryIO] = {}
    try:
        for item in directory.iterdir():
            opened[item.name] = item.open("rb")
    except FileNotFoundError:
        _close_all(opened)
        return None
    return opened


def _close_all(files: dict[str, BinaryIO]) -> None:
    for file in files.values():
        file.close()


def _copy_segments(
    index_root: Path, copier: _Copier, held: Held, needed: list[copies.CopiedSegment]
) -> list[SnapshotFile] | None:
    """Copy the segments the copy of the database names, from the files held open or,
    for those sealed since, from the store, largest files first (the hashing left to
    do after the last copy is then short); check each against the CRC-32 the store
    recorded for it. ``None`` when a needed segment is gone (try again)."""
    pending = []
    for segment in needed:
        key = (str(segment.collection_id), segment.directory)
        sources = held.get(key) or _open_segment(index_root / key[0] / key[1])
        if sources is None:
            return None
        try:
            by_size = sorted(sources.items(), key=lambda f: -os.fstat(f[1].fileno()).st_size)
            relative = f"{INDEX_DIRNAME}/{key[0]}/{key[1]}"
            digests = {n: copier.copy(f, f"{relative}/{n}", crc=True) for n, f in by_size}
        finally:
            if key not in held:
                _close_all(sources)
        pending.append((segment, digests))
    files = []
    for segment, digests in pending:
        copied = {name: digest.result() for name, digest in digests.items()}
        for filename, crc in segment.crc32.items():
            if filename not in copied or copied[filename][1] != crc:
                raise StoreError(
                    f"segment file {segment.directory}/{filename} of collection "
                    f"{segment.collection_id} is missing or fails its checksum in the store: "
                    "rebuild the collection's index before taking a snapshot"
                )
        files += [digest for digest, _ in copied.values()]
    return files


def _digest(root: Path, relative: str, algorithm: str = HASH, crc: bool = False) -> Digest:
    """Size and content hash of ``root / relative``, and its CRC-32 when ``crc``."""
    digest = HASHES[algorithm]()
    checksum = 0
    size = 0
    block = bytearray(_BLOCK)
    with (root / relative).open("rb", buffering=0) as reading:
        while read := reading.readinto(block):
            view = memoryview(block)[:read]
            digest.update(view)
            if crc:
                checksum = isal_zlib.crc32(view, checksum)
            size += read
    return SnapshotFile(relative, size, digest.hexdigest(), algorithm), checksum if crc else None


def _manifest(
    staging: Path,
    described: list[copies.CopiedCollection],
    version: int,
    files: list[SnapshotFile],
) -> Snapshot:
    snapshot = Snapshot(
        path=staging,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ragstore_version=importlib.metadata.version("ragstore"),
        schema_version=version,
        collections=[
            {
                "name": c.name,
                "config": json.loads(c.config),
                "documents": c.documents,
                "chunks": c.chunks,
            }
            for c in described
        ],
        files=files,
    )
    body = {
        "format": FORMAT,
        "created_at": snapshot.created_at,
        "ragstore_version": snapshot.ragstore_version,
        "schema_version": snapshot.schema_version,
        "collections": snapshot.collections,
        "files": [{"path": f.path, "bytes": f.bytes, f.algorithm: f.digest} for f in files],
    }
    (staging / MANIFEST).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return snapshot


def _check_file(root: Path, listed: SnapshotFile) -> None:
    path = root / listed.path
    if not path.is_file():
        raise SnapshotInvalid(f"{listed.path} is missing", file=listed.path)
    found = _digest(root, listed.path, listed.algorithm)[0]
    if found.bytes != listed.bytes:
        raise SnapshotInvalid(
            f"{listed.path} has {found.bytes} bytes, the manifest says {listed.bytes}",
            file=listed.path,
        )
    if found.digest != listed.digest:
        raise SnapshotInvalid(f"{listed.path} fails its {listed.algorithm} hash", file=listed.path)


def _check_database(root: Path, snapshot: Snapshot, listed: set[str]) -> None:
    if DB_FILENAME not in listed:
        raise SnapshotInvalid(f"the manifest lists no {DB_FILENAME}", file=DB_FILENAME)
    with closing(copies.open_read_only(root / DB_FILENAME)) as conn:
        problem = copies.integrity_problem(conn)
        if problem is not None:
            raise SnapshotInvalid(f"{DB_FILENAME}: {problem}", file=DB_FILENAME)
        if not copies.is_current_schema(copies.schema_version(conn)):
            raise SnapshotInvalid(
                f"{DB_FILENAME} was written by a newer ragstore", file=DB_FILENAME
            )
        counts = {c.name: (c.documents, c.chunks) for c in copies.collections(conn)}
        segments = copies.segments(conn)
    expected = {c["name"]: (c["documents"], c["chunks"]) for c in snapshot.collections}
    if counts != expected:
        raise SnapshotInvalid(
            f"{DB_FILENAME} holds collections and counts {counts}, the manifest {expected}",
            file=DB_FILENAME,
        )
    for segment in segments:
        for filename in segment.crc32:
            relative = f"{INDEX_DIRNAME}/{segment.collection_id}/{segment.directory}/{filename}"
            if relative not in listed:
                raise SnapshotInvalid(
                    f"{relative} is named by {DB_FILENAME} but missing", file=relative
                )


def _embedded(backend: StorageBackend) -> SqliteBackend:
    if not isinstance(backend, SqliteBackend):
        raise Conflict(
            "snapshots are taken of embedded stores; back up a PostgreSQL store with "
            "PostgreSQL's own tools (pg_dump, pg_basebackup): see docs/operations.md"
        )
    return backend


def _collection_ids(store: SqliteBackend, names: Sequence[str] | None) -> list[int] | None:
    if names is None:
        return None
    if isinstance(names, str) or not names:
        raise InvalidInput("collections must be a non-empty list of names", field="collections")
    ids = []
    with store.read() as reader:
        for name in names:
            found = reader.find_collection(name)
            if found is None:
                raise NotFound(f"no collection named {name!r}")
            ids.append(found.id)
    return ids


def _remove_unfinished(folder: Path) -> None:
    """Remove what snapshots interrupted over an hour ago left in ``folder`` (a younger
    one may still be running in another process)."""
    for leftover in folder.iterdir():
        if leftover.name.startswith(UNFINISHED) and _older_than(leftover, 3600.0):
            shutil.rmtree(leftover, ignore_errors=True)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _swap_in(staging: Path, to: Path) -> None:
    if to.exists():
        aside = to.parent / f".replaced-{to.name}-{secrets.token_hex(4)}"
        os.replace(to, aside)
        os.replace(staging, to)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, to)
    fsync(to.parent)


def _non_empty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        fsync(path)
    fsync(root)
