"""From documents to stored rows: hash, skip the unchanged, chunk, embed what is new, write.

Documents are written in batches, each batch in one transaction, so a reader (or a crash)
never sees half a document. Embeddings are reused by (model, hash of the embedded text): a
chunk whose text any collection of the same model already holds is never embedded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ragstore.config import ChunkingConfig
from ragstore.embed.base import Embedder
from ragstore.errors import InvalidInput, printable
from ragstore.ingest.chunking import SECTION_CHARS, chunk_text
from ragstore.ingest.loaders import (
    DEFAULT_MAX_FILE_BYTES,
    Listing,
    LoadProblem,
    list_files,
    load_file,
)
from ragstore.store.base import (
    REMOVALS_KEPT,
    ChunkRow,
    DocumentRow,
    Reader,
    StorageBackend,
    Writer,
)
from ragstore.types import Document, IngestReport, Span

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` in chunks while files are ingested: ``done`` chunks
embedded so far out of ``total`` to embed. Until every file is read, ``total`` is an
estimate (the chunks found so far, scaled by the share of the input's bytes read) that
may still move either way; the last call has ``done == total`` (0 when nothing needed
embedding). Unchanged documents and chunks whose vector is stored already are not
embedded and count in neither."""


@runtime_checkable
class StagedProgress(Protocol):
    """A progress callback that is also told what the ingest is doing, for the stages
    that have no count (the command line shows it as the bar's label)."""

    def __call__(self, done: int, total: int) -> None:
        """Chunks embedded so far and chunks to embed, as for :data:`ProgressFn`."""

    def stage(self, label: str) -> None:
        """What runs now: ``listing files``, ``reading notes.md (3/9 files)``,
        ``chunking``, ``embedding``, ``writing``, ``deleting documents of removed files``."""


Guard = Callable[[Writer], None]
"""Called inside each write transaction before anything is written; what it raises
rolls the transaction back (an aliased collection checks that its alias still names
the collection written to)."""

BATCH_DOCUMENTS = 64
BATCH_CHUNKS = 512
EMBED_TEXTS = 256
"""Most chunk texts handed to the embedder at once (the heap it frees is trimmed after
each call)."""
FIRST_EMBED_TEXTS = 32
"""Chunk texts in the first call of a batch: one model batch, so progress moves within
seconds; the calls grow up to :data:`EMBED_TEXTS` while each takes under
:data:`EMBED_SECONDS` / 2."""
EMBED_SECONDS = 1.0
"""About how long one embedder call should take, so progress is told about that often."""
MIN_CHUNK_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Target:
    """Where a batch of documents goes: a collection and how it embeds and chunks."""

    store: StorageBackend
    collection_id: int
    embedder: Embedder
    chunking: ChunkingConfig
    guard: Guard | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A new or changed document with its chunks, waiting for vectors."""

    document: Document
    origin: str | None
    content_hash: str
    spans: list[Span]
    chunk_hashes: list[str]
    embed_texts: list[str]


def document_hash(doc: Document, metadata_json: str | None = None) -> str:
    """Hash of everything stored for a document; equal hashes mean nothing to do.

    ``metadata_json`` is the document's metadata already serialised canonically
    (:func:`ragstore.records.metadata_json`): the same hash, one serialisation fewer.
    """
    if metadata_json is None:
        payload = json.dumps(
            [doc.text, doc.title, doc.metadata, doc.source], sort_keys=True, ensure_ascii=False
        )
    else:  # exactly what json.dumps writes for the list above
        text, title = _json_string(doc.text), _json_string(doc.title)
        source = "null" if doc.source is None else _json_string(doc.source)
        payload = f"[{text}, {title}, {metadata_json}, {source}]"
    return hashlib.sha256(payload.encode()).hexdigest()


_json_string: Callable[[str], str] = json.encoder.encode_basestring
"""A JSON string literal as ``json.dumps(..., ensure_ascii=False)`` writes it."""


def text_hash(text: str) -> str:
    """Hash of the exact text a chunk is embedded from."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Tally:
    """Chunks embedded against chunks to embed, told to a progress callback (if any).

    ``bytes_total`` is the size of the input and ``bytes_read`` how much of it the
    chunks planned so far came from; until both are equal the total is estimated by
    scaling.
    """

    progress: ProgressFn | None = None
    bytes_total: int = 0
    bytes_read: float = 0.0
    planned: int = 0
    embedded: int = 0

    def stage(self, label: str) -> None:
        """Say what runs now, to a callback that listens for it."""
        if isinstance(self.progress, StagedProgress):
            self.progress.stage(label)

    def plan(self, chunks: int) -> None:
        """``chunks`` more found to embed."""
        self.planned += chunks
        self._tell()

    def advance(self, chunks: int) -> None:
        """``chunks`` more embedded."""
        self.embedded += chunks
        self._tell()

    def finish(self) -> None:
        """Everything is read: the total is what was planned."""
        self.bytes_read = self.bytes_total
        self._tell()

    @property
    def total(self) -> int:
        """Chunks to embed: exact once all is read, estimated before."""
        if not 0 < self.bytes_read < self.bytes_total:
            return self.planned
        return max(self.planned, round(self.planned * self.bytes_total / self.bytes_read))

    def _tell(self) -> None:
        if self.progress is not None:
            self.progress(self.embedded, self.total)


def write_batches(
    target: Target,
    documents: Iterable[tuple[Document, str | None]],
    report: IngestReport,
    tally: Tally | None = None,
) -> None:
    """Write ``(document, origin)`` pairs batch by batch, counting into ``report`` (and
    the chunks embedded into ``tally``)."""
    tally = tally or Tally()
    for batch in _batches(documents):
        tally.stage("chunking")
        pending = _pending(target, batch, report)
        vectors = _vectors(target, pending, report, tally=tally)
        tally.stage("writing")
        _write(target, pending, vectors)


def write_rows(
    store: StorageBackend,
    collection_id: int,
    documents: Sequence[DocumentRow],
    guard: Guard | None = None,
) -> None:
    """Write prepared rows in one transaction, after ``guard`` (if given) passed in it."""
    now = time.time()
    with store.write() as writer:
        if guard is not None:
            guard(writer)
        writer.write_documents(collection_id, documents, now)
        writer.trim_removals(collection_id, REMOVALS_KEPT)


def ingest_paths(
    target: Target,
    paths: Sequence[str | Path],
    *,
    sync: bool = False,
    progress: ProgressFn | None = None,
    follow_symlinks: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IngestReport:
    """Load every supported file under ``paths`` and write what changed.

    With ``sync``, documents that came from files under ``paths`` that are gone (or no
    longer hold them) are deleted. Nothing that could not be read this run is deleted:
    a file with any problem (unreadable, too large, or a bad record) keeps all its
    documents, and so does everything under a folder that could not be listed or a
    link that was not followed. See :func:`list_files` for which files are read.
    """
    started = time.perf_counter()
    roots = _resolve_roots(paths)
    tally = Tally(progress)
    tally.stage("listing files")
    reading = _Reading(IngestReport(), tally, max_file_bytes)
    for root in roots:
        reading.add(list_files(root, roots=roots, follow_symlinks=follow_symlinks))
    write_batches(target, reading.documents(), reading.report, tally)
    if sync:
        tally.stage("deleting documents of removed files")
        deleted = _sync_deletions(target, roots, reading.seen, reading.kept)
        reading.report.documents_deleted = deleted
    tally.finish()
    reading.report.seconds = round(time.perf_counter() - started, 3)
    return reading.report


@dataclass
class _Reading:
    """The files of one ingest, read one at a time, with what reading them found."""

    report: IngestReport
    tally: Tally
    max_file_bytes: int
    files: list[tuple[Path, str, int]] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, listing: Listing) -> None:
        """Queue the files of a listing (with their sizes) and note what it skipped."""
        for path, relpath in listing.files:
            size = _readable_size(path, self.max_file_bytes)
            self.files.append((path, relpath, size))
            self.tally.bytes_total += size
        self.kept += listing.unlisted
        _note_problems(listing.problems, self.report)
        _note_unsupported(listing.unsupported, self.report)

    def documents(self) -> Iterator[tuple[Document, str | None]]:
        """Every file's ``(document, origin)`` pairs, file by file, keeping the tally's
        ``bytes_read`` at the share of the input that the documents so far came from."""
        read = 0
        for number, (path, relpath, size) in enumerate(self.files, start=1):
            self.tally.stage(f"reading {printable(relpath)} ({number}/{len(self.files)} files)")
            documents = self._load(path, relpath)
            chars = sum(len(doc.text) for doc in documents) or 1
            done = 0
            for doc in documents:
                done += len(doc.text)
                self.tally.bytes_read = read + size * done / chars
                self.seen.add(doc.id)
                yield doc, str(path)
            read += size
            self.tally.bytes_read = read

    def _load(self, path: Path, relpath: str) -> list[Document]:
        loaded = load_file(path, relpath, max_file_bytes=self.max_file_bytes)
        _note_problems(loaded.problems, self.report)
        _note_warnings(loaded.warnings, self.report)
        if loaded.problems:  # sync must not delete what a bad line may still hold
            self.kept.append(path)
        # A skipped file is one problem; otherwise each problem is one record left out.
        self.report.documents_skipped += 1 if loaded.skipped else len(loaded.problems)
        return loaded.documents


def _readable_size(path: Path, max_file_bytes: int) -> int:
    """A file's size in bytes; 0 for one that will not be read (too large, or gone)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    return size if size <= max_file_bytes else 0


def _resolve_roots(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise InvalidInput("give at least one file or directory to ingest", field="paths")
    roots = []
    for given in paths:
        try:
            root = Path(given).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreachable, or a link loop
            name = printable(str(given))
            raise InvalidInput(f"no such file or directory: {name}", field="paths") from None
        roots.append(root)
    return roots


def _note_problems(problems: Sequence[LoadProblem], report: IngestReport) -> None:
    for problem in problems:
        logger.warning("skipped %s: %s", problem.location, problem.message)
        report.errors.append(f"{problem.location}: {problem.message}")


def _note_warnings(warnings: Sequence[LoadProblem], report: IngestReport) -> None:
    for warning in warnings:
        logger.info("%s: %s", warning.location, warning.message)
        report.warnings.append(f"{warning.location}: {warning.message}")


def _note_unsupported(relpaths: Sequence[str], report: IngestReport) -> None:
    for relpath in relpaths:
        logger.info("skipped %s: unsupported file type", relpath)
    report.files_unsupported += relpaths


def _sync_deletions(
    target: Target, roots: Sequence[Path], seen: set[str], kept: Sequence[Path]
) -> int:
    """Delete the documents of files under ``roots`` that this run did not find, except
    those from a ``kept`` path (a file with problems, or anything under a folder or
    link that was not read)."""
    kept_origins = {str(path) for path in kept}
    kept_folders = tuple(str(path) + os.sep for path in kept)
    # a root whose name is not valid UTF-8 never held a stored document
    searched = [str(root) for root in roots if printable(str(root)) == str(root)]
    with target.store.write() as writer:
        if target.guard is not None:
            target.guard(writer)
        stale = [
            doc_id
            for doc_id, origin in writer.docs_from_origins(target.collection_id, searched)
            if doc_id not in seen
            and origin not in kept_origins
            and not (origin or "").startswith(kept_folders)
        ]
        return writer.delete_documents(target.collection_id, stale)


def _batches(
    documents: Iterable[tuple[Document, str | None]],
) -> Iterator[list[tuple[Document, str | None]]]:
    batch: dict[str, tuple[Document, str | None]] = {}
    size = 0
    for doc, origin in documents:
        batch[doc.id] = (doc, origin)  # a later copy of the same id wins
        size += 1 + len(doc.text) // 1000
        if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_CHUNKS:
            yield list(batch.values())
            batch, size = {}, 0
    if batch:
        yield list(batch.values())


def prepare_rows(
    target: Target,
    batch: list[tuple[Document, str | None]],
    report: IngestReport,
    reader: Reader,
) -> list[DocumentRow]:
    """The rows to write for the new or changed ``(document, origin)`` pairs of a batch
    (no document twice), chunked and embedded; ``reader`` (a writer's own transaction,
    when the rows are written in it) says what is stored already."""
    pending = _pending(target, batch, report, reader)
    vectors = _vectors(target, pending, report, reader)
    return [_row(p, vectors) for p in pending]


def _pending(
    target: Target,
    batch: list[tuple[Document, str | None]],
    report: IngestReport,
    reader: Reader | None = None,
) -> list[Pending]:
    with _reading(target, reader) as found:
        stored = found.content_hashes(target.collection_id, [doc.id for doc, _ in batch])
    pending = []
    for doc, origin in batch:
        digest = document_hash(doc)
        if stored.get(doc.id) == digest:
            report.documents_unchanged += 1
            continue
        if doc.id in stored:
            report.documents_updated += 1
        else:
            report.documents_added += 1
        pending.append(_chunked(target, doc, origin, digest))
    return pending


def _chunked(target: Target, doc: Document, origin: str | None, digest: str) -> Pending:
    spans = chunk_document(doc, target.embedder, target.chunking)
    if len(doc.text) > SECTION_CHARS:  # hand back what tokenizing its sections left
        _release_freed_memory()
    texts = [embed_text(doc.title, span.text) for span in spans]
    return Pending(doc, origin, digest, spans, [text_hash(t) for t in texts], texts)


def chunk_document(doc: Document, embedder: Embedder, chunking: ChunkingConfig) -> list[Span]:
    """Cut a document into spans that fit the model together with the document's title."""
    title_tokens = len(embedder.token_offsets(doc.title)) + 1 if doc.title else 0
    budget = max(min(chunking.chunk_size, embedder.max_tokens - title_tokens), MIN_CHUNK_TOKENS)
    overlap = min(chunking.chunk_overlap, budget // 2 - 1)
    return chunk_text(doc.text, embedder.token_offsets, chunk_size=budget, overlap=overlap)


def embed_text(title: str, chunk: str) -> str:
    """What the model sees for a chunk: the document title, then the chunk's text."""
    return f"{title}\n{chunk}" if title else chunk


@contextmanager
def _reading(target: Target, reader: Reader | None) -> Iterator[Reader]:
    """``reader`` when given; else a read snapshot of the target's store."""
    if reader is not None:
        yield reader
        return
    with target.store.read() as opened:
        yield opened


def _vectors(
    target: Target,
    pending: list[Pending],
    report: IngestReport,
    reader: Reader | None = None,
    tally: Tally | None = None,
) -> dict[str, np.ndarray]:
    wanted = sorted({h for p in pending for h in p.chunk_hashes})
    with _reading(target, reader) as found:
        model = (target.embedder.name, target.embedder.version)
        stored = found.vectors_by_hash(model, wanted)
    vectors = {h: np.frombuffer(blob, dtype=np.float32) for h, blob in stored.items()}
    missing: dict[str, str] = {}
    for p in pending:
        for digest, text in zip(p.chunk_hashes, p.embed_texts, strict=True):
            if digest not in vectors:
                missing.setdefault(digest, text)
    report.chunks_reused += sum(len(p.chunk_hashes) for p in pending) - len(missing)
    tally = tally or Tally()
    tally.plan(len(missing))
    if missing:
        tally.stage("embedding")
    vectors.update(_embedded(target.embedder, missing, tally))
    report.chunks_embedded += len(missing)
    return vectors


def _embedded(
    embedder: Embedder, missing: dict[str, str], tally: Tally
) -> Iterator[tuple[str, np.ndarray]]:
    """``(digest, vector)`` for each ``digest: text`` of ``missing``, embedded a slice at a
    time, longest texts first (so the embedder's batches of similar length stay full)."""
    # A slice at a time: the embedder tokenizes all it is given up front (about 36 KB
    # per 256-token text): 620 MB for the chunks of a 20 MB document.
    digests = sorted(missing, key=lambda digest: -len(missing[digest]))
    offset, size = 0, FIRST_EMBED_TEXTS
    while offset < len(digests):
        part = digests[offset : offset + size]
        started = time.perf_counter()
        yield from zip(part, embedder.embed_documents([missing[d] for d in part]), strict=True)
        _release_freed_memory()
        tally.advance(len(part))
        offset += len(part)
        size = _next_size(size, time.perf_counter() - started)


def _next_size(size: int, seconds: float) -> int:
    """How many texts the next embedder call gets, after ``size`` took ``seconds``:
    twice as many while a call takes under half of :data:`EMBED_SECONDS`, half as many
    while it takes over twice that, between one model batch and :data:`EMBED_TEXTS`."""
    if seconds < EMBED_SECONDS / 2:
        return min(size * 2, EMBED_TEXTS)
    if seconds > EMBED_SECONDS * 2:
        return max(size // 2, FIRST_EMBED_TEXTS)
    return size


def _malloc_trim() -> Callable[[int], object] | None:
    """glibc's ``malloc_trim``; ``None`` where the C library has none."""
    import ctypes

    try:
        trim: Callable[[int], object] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def _release_freed_memory() -> None:
    """Give the heap freed by tokenizing and embedding back to the system (glibc only).

    A forward pass allocates and frees tensors of many sizes; glibc keeps what is freed
    in fragments it cannot reuse, and the resident set grew by 340 MB over 2,600 chunks
    here, never returning. Trimming after every 256 chunks kept it flat.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _write(target: Target, pending: list[Pending], vectors: dict[str, np.ndarray]) -> None:
    if pending:
        rows = [_row(p, vectors) for p in pending]
        write_rows(target.store, target.collection_id, rows, target.guard)


def _row(p: Pending, vectors: dict[str, np.ndarray]) -> DocumentRow:
    doc = p.document
    chunks = [
        ChunkRow(ordinal, span.text, span.start, span.end, digest, vectors[digest])
        for ordinal, (span, digest) in enumerate(zip(p.spans, p.chunk_hashes, strict=True))
    ]
    return DocumentRow(
        doc.id, doc.source, p.origin, doc.title, doc.text, doc.metadata, p.content_hash, chunks
    )
