"""A collection's vector index: an exact growing segment plus sealed ANN segments.

The store is the source of truth; every index structure here can be rebuilt from it.
Chunk ids only grow and every removed chunk leaves a removal in the store's change feed
(see :mod:`ragstore.store.base`), so a process catches up after another one wrote by
reading the chunks newer than the last it saw and the removals newer than the last it
applied. Sealed segments are files
recorded in the store's segment manifest; a process loads the ones it has not seen.

New chunks go to the growing segment (exact, in memory) and are searchable at once.
When it reaches ``seal_threshold`` vectors a background thread seals it into an ANN
segment; the same thread then merges segments when there are more than
``max_segments`` and rebuilds those whose deleted share passes ``deleted_threshold``.
Reads and writes go on meanwhile: the lock is held only to snapshot and to swap.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.config import IndexConfig
from ragstore.filters import Filter
from ragstore.index import FlatIndex, ann, segments
from ragstore.index.base import Ids, Matrix, Scores, one_blas_thread
from ragstore.index.bm25 import BM25Index, Floats
from ragstore.index.payload import Filtered, PayloadIndex
from ragstore.index.segments import SealedSegment, SegmentDamaged, SegmentRow, SegmentSearch
from ragstore.store.base import Reader, StorageBackend

log = logging.getLogger(__name__)

_EXACT_BLOCK = 16_384
_LAST_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SegmentHealth:
    """What :meth:`SegmentedIndex.examine` found of one sealed segment: ``deleted``
    vectors the store no longer holds, sampled vectors ``differing`` from the stored
    ones, and why its files cannot be used (``damaged``; ``None`` when they can)."""

    segment: int
    kind: str
    vectors: int
    deleted: int
    differing: int
    damaged: str | None


@dataclass(frozen=True, slots=True)
class DenseResult:
    """Chunk ids and scores of a dense search, best first, and the plan that ran."""

    ids: Ids
    scores: Scores
    docs: list[str]
    plan: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Job:
    """Segments to replace by one new segment built from their live vectors."""

    replaced: list[SealedSegment]


class SegmentedIndex:
    """One collection's growing and sealed segments, kept in step with the store."""

    def __init__(
        self,
        backend: StorageBackend,
        collection_id: int,
        dim: int,
        config: IndexConfig,
        payload_paths: Sequence[tuple[str, ...]] = (),
    ) -> None:
        self._backend = backend
        self._root = backend.index_root
        self._collection_id = collection_id
        self._dim = dim
        self.config = config
        self.lock = threading.RLock()
        self._building = threading.Lock()
        self._worker: threading.Thread | None = None
        self._loaded = False
        self._growing = FlatIndex(dim)
        self._growing_docs: dict[int, str] = {}
        self._sealed: dict[int, SealedSegment] = {}
        self._last_chunk = 0
        self._last_removal = 0
        self._repairs: list[tuple[SegmentRow, str]] = []
        self._payload = PayloadIndex(collection_id)
        self._payload_paths = tuple(payload_paths)
        self._keywords: BM25Index | None = None  # built at the first keyword search
        self._synced_at: dict[object, Hashable] = {}

    # -- reading ---------------------------------------------------------------------

    def catch_up(self, reader: Reader) -> None:
        """Bring the segments up to what ``reader``'s snapshot sees.

        The caller holds :attr:`lock` and keeps the snapshot open while it searches.
        """
        stamp = reader.change_stamp()
        if not self._is_current(stamp):
            self._sync(reader)
            self._caught_up(stamp)

    def refresh(self) -> None:
        """:meth:`catch_up` in a snapshot of its own, opened only when something was
        committed since this thread last looked (where the backend can tell that
        cheaply). The caller holds :attr:`lock` and is not inside a transaction."""
        stamp = self._backend.change_stamp()
        if stamp is not None and self._is_current(stamp):
            return
        # A commit landing after the stamp is read is caught up too, and changes the
        # stamp, so the next call looks again: nothing is ever missed.
        with self._backend.read() as reader:
            if stamp is None:
                self.catch_up(reader)
                return
            self._sync(reader)
        self._caught_up(stamp)

    def _is_current(self, stamp: Hashable) -> bool:
        return self._loaded and self._synced_at.get(_stamp_key(stamp)) == stamp

    def _caught_up(self, stamp: Hashable) -> None:
        self._synced_at[_stamp_key(stamp)] = stamp
        self._start_background_work()

    def allowed(self, reader: Reader, where: Filter) -> Filtered:
        """What a filter lets through, from the payload indexes; the caller holds
        :attr:`lock` and has caught up in ``reader``'s snapshot."""
        return self._payload.allowed(reader, where, self._last_chunk)

    def pin_payload(self, reader: Reader, paths: Sequence[tuple[str, ...]]) -> None:
        """Index exactly these metadata paths explicitly, now and whenever the index
        loads afresh (see :meth:`~ragstore.index.payload.PayloadIndex.pin`); the caller
        holds :attr:`lock` and has caught up in ``reader``'s snapshot."""
        self._payload_paths = tuple(paths)
        self._payload.pin(reader, self._payload_paths, list(self._sealed.values()))

    def payload_stats(self) -> list[dict[str, Any]]:
        """The indexed metadata paths and what they hold; call under :attr:`lock`."""
        return self._payload.stats()

    def search(
        self, query: Matrix, k: int, allowed: Filtered | None, knobs: ann.Knobs
    ) -> DenseResult:
        """The ``k`` best live chunks over every segment, only ``allowed`` ones if given."""
        results = [
            s.search(query, k, None if allowed is None else allowed.matching(s), knobs, self.config)
            for s in self._sealed.values()
        ]
        if len(self._growing):
            with one_blas_thread():
                ids, scores = self._growing.search(query, k, allowed)
            docs = [self._growing_docs[i] for i in ids.tolist()]
            plan = {"segment": "growing", "vectors": len(self._growing), "plan": "exact"}
            results.append(SegmentSearch(ids, scores, docs, plan))
        ids, scores, docs = segments.merge_top(results, k)
        return DenseResult(ids, scores, docs, [r.plan for r in results])

    def keyword_search(
        self, reader: Reader, terms: Ids, k: int, allowed: Filtered | None
    ) -> tuple[Ids, Floats]:
        """BM25 top-``k`` chunk ids and scores for a query's term hashes.

        The caller holds :attr:`lock` and has caught up in ``reader``'s snapshot; the
        first call builds the postings from every chunk's stored terms.
        """
        if self._keywords is None:
            self._keywords = BM25Index()
            self._keywords.add(*reader.chunk_terms(self._collection_id, 0))
        return self._keywords.search(terms, k, allowed)

    def exact(self, queries: Matrix, k: int) -> Ids:
        """Exact top-``k`` chunk ids of each query row over every live vector: ``(nq, k)``,
        padded with ``-1`` when fewer than ``k`` vectors are live."""
        blocks: list[tuple[Ids, Matrix]] = []
        for segment in self._sealed.values():
            live = segment.live_positions()
            for start in range(0, len(live), _EXACT_BLOCK):
                part = live[start : start + _EXACT_BLOCK]
                blocks.append((segment.ids[part], np.asarray(segment.vectors[part])))
        if len(self._growing):
            blocks.append(self._growing.snapshot())
        best_ids = np.full((len(queries), k), -1, dtype=np.int64)
        best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for ids, vectors in blocks:
            scores = queries @ vectors.T
            if scores.shape[1] > k:
                top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(scores.shape[1]), (len(queries), scores.shape[1]))
            scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
            candidates = np.concatenate([best_ids, ids[top]], axis=1)
            keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_ids = np.take_along_axis(candidates, keep, 1)
            best_scores = np.take_along_axis(scores, keep, 1)
        return best_ids

    def stats(self) -> dict[str, Any]:
        """Segments with their sizes and memory per vector; call under :attr:`lock`."""
        listed: list[dict[str, Any]] = []
        for segment in self._sealed.values():
            live = segment.size - segment.deleted
            listed.append(
                {
                    "segment": segment.row.id,
                    "kind": segment.row.kind,
                    "vectors": segment.size,
                    "deleted": segment.deleted,
                    "live": live,
                    "first_chunk": segment.row.first_chunk,
                    "last_chunk": segment.row.last_chunk,
                    "index_bytes": segment.index_bytes,
                    "bytes_per_vector": round(segment.index_bytes / max(segment.size, 1), 1),
                }
            )
        growing = len(self._growing)
        listed.append(
            {
                "segment": "growing",
                "kind": "flat",
                "vectors": growing,
                "deleted": 0,
                "live": growing,
                "index_bytes": growing * self._dim * 4,
                "bytes_per_vector": float(self._dim * 4) if growing else 0.0,
            }
        )
        total_bytes = sum(int(s["index_bytes"]) for s in listed)
        total = sum(int(s["live"]) for s in listed)
        stored = sum(int(s["vectors"]) for s in listed)
        return {
            "kind": self.config.kind,
            "segments": listed,
            "vectors": total,
            "index_bytes": total_bytes,
            "bytes_per_vector": round(total_bytes / max(stored, 1), 1),
        }

    # -- catching up -----------------------------------------------------------------

    def _reload(self, reader: Reader, rebuild: Collection[int] = ()) -> None:
        self._payload = PayloadIndex(self._collection_id)
        self._keywords = None
        self._growing = FlatIndex(self._dim)
        self._growing_docs = {}
        self._sealed = {}
        self._last_chunk = 0
        self._last_removal = reader.last_removal()
        self._apply_manifest(reader, rebuild)
        self._add_new_chunks(reader)
        if self._payload_paths:
            self._payload.pin(reader, self._payload_paths, list(self._sealed.values()))
        self._loaded = True

    def _apply_manifest(self, reader: Reader, rebuild: Collection[int] = ()) -> None:
        current = [segments.parse_row(r) for r in reader.segments(self._collection_id)]
        wanted = {row.id for row in current}
        for segment_id in [s for s in self._sealed if s not in wanted]:
            del self._sealed[segment_id]
        for row in current:
            if row.id not in self._sealed:
                self._adopt(reader, row, rebuild=row.id in rebuild)
        self._sealed = dict(sorted(self._sealed.items(), key=lambda s: s[1].row.first_chunk))

    def _adopt(self, reader: Reader, row: SegmentRow, *, rebuild: bool = False) -> None:
        """Load a segment another process (or an earlier run) sealed; with ``rebuild``,
        build it again from the store instead."""
        if rebuild:
            log.info("rebuilding index segment %s from the store, as asked", row.id)
            segment = self._rebuild_damaged(reader, row)
        else:
            try:
                segment = segments.load(self._segment_root, row, self._dim)
            except SegmentDamaged as exc:
                log.warning("rebuilding damaged index segment %s from the store: %s", row.id, exc)
                segment = self._rebuild_damaged(reader, row)
        live = reader.chunk_ids_between(self._collection_id, row.first_chunk, row.last_chunk)
        segment.mark_deleted(np.setdiff1d(segment.ids, live, assume_unique=True))
        self._sealed[row.id] = segment
        self._shrink_growing(self._growing.ids_between(row.first_chunk, row.last_chunk))
        self._last_chunk = max(self._last_chunk, row.last_chunk)

    def _rebuild_damaged(self, reader: Reader, row: SegmentRow) -> SealedSegment:
        """Rebuild a segment's files from the chunks in its range. The manifest is pointed
        at them by the background thread, since ``reader`` is inside a read transaction."""
        ids, vectors, docs = reader.chunk_vectors(
            self._collection_id, row.first_chunk, row.last_chunk, self._dim
        )
        kind, files = segments.build_files(
            self._segment_root, self.config.kind, ids, vectors, docs, self.config
        )
        fresh = SegmentRow(row.id, kind, len(ids), row.first_chunk, row.last_chunk, files)
        self._repairs.append((fresh, row.directory_name))
        return segments.load(self._segment_root, fresh, self._dim)

    def _record_repairs(self) -> None:
        with self.lock:
            repairs, self._repairs = self._repairs, []
        for fresh, old_directory in repairs:
            values = (fresh.kind, fresh.vectors, fresh.first_chunk, fresh.last_chunk, fresh.files)
            with self._backend.write() as writer:
                current = writer.update_segment(fresh.id, values)
            # A segment merged away meanwhile by another process leaves its repair unused.
            stale = old_directory if current else fresh.directory_name
            segments.remove_files(self._segment_root, stale)

    def _apply_removals(self, reader: Reader) -> None:
        removed, self._last_removal = reader.removed_after(self._collection_id, self._last_removal)
        if removed.size:
            self._shrink_growing(removed)
            for segment in self._sealed.values():
                segment.mark_deleted(removed)
            if self._keywords is not None:
                self._keywords.remove(removed)

    def _add_new_chunks(self, reader: Reader) -> None:
        ids, vectors, docs = reader.chunk_vectors(
            self._collection_id, self._last_chunk + 1, _LAST_ID, self._dim
        )
        if ids.size:
            self._growing.add(ids, vectors)
            self._growing_docs.update(zip(ids.tolist(), docs, strict=True))
            self._last_chunk = int(ids[-1])

    def _shrink_growing(self, ids: Ids) -> None:
        self._growing.remove(ids)
        for chunk_id in ids.tolist():
            self._growing_docs.pop(chunk_id, None)

    @property
    def _segment_root(self) -> Path:
        return self._root / str(self._collection_id)

    # -- sealing and optimizing ------------------------------------------------------

    def _start_background_work(self) -> None:
        """Seal or optimize in a background thread when there is work (caller holds lock)."""
        if self._worker is not None and self._worker.is_alive():
            return
        if not self._repairs and not self._growing_full() and self._next_job(force=False) is None:
            return
        self._worker = threading.Thread(
            target=self._background, name=f"ragstore-optimize-{self._collection_id}", daemon=True
        )
        self._worker.start()

    def _background(self) -> None:
        _lower_priority()
        try:
            with self._building:
                self._work(force=False)
        except Exception:
            log.exception("index optimization of collection %s failed", self._collection_id)

    def optimize(self) -> None:
        """Seal the growing segment and merge segments now; returns when done."""
        with self._building:
            self._work(force=True)

    def examine(self, reader: Reader, sample: int = 100) -> list[SegmentHealth]:
        """Each sealed segment as its files on disk are now (checksums verified, the
        index itself not loaded), against the chunks the store holds in its range; up to
        ``sample`` of its live vectors are compared with the stored ones."""
        found = []
        for row in [segments.parse_row(r) for r in reader.segments(self._collection_id)]:
            try:
                ids, vectors = segments.verify(self._segment_root, row, self._dim)
            except SegmentDamaged as exc:
                if self._still_listed(row.id):  # else merged away meanwhile, files and all
                    found.append(SegmentHealth(row.id, row.kind, row.vectors, 0, 0, str(exc)))
                continue
            live = reader.chunk_ids_between(self._collection_id, row.first_chunk, row.last_chunk)
            kept = np.intersect1d(ids, live, assume_unique=True)
            picked = kept[np.linspace(0, len(kept) - 1, min(sample, len(kept)), dtype=np.int64)]
            differing = 0
            if len(picked):
                held = vectors[np.searchsorted(ids, picked)]
                stored = reader.vectors_for(picked.tolist()).reshape(len(picked), self._dim)
                differing = int((~np.isclose(held, stored, atol=1e-6).all(axis=1)).sum())
            deleted = len(ids) - len(kept)
            found.append(SegmentHealth(row.id, row.kind, len(ids), deleted, differing, None))
        return found

    def _still_listed(self, segment_id: int) -> bool:
        """Whether the manifest, as committed now, still lists the segment."""
        with self._backend.peek() as now:
            return any(row[0] == segment_id for row in now.segments(self._collection_id))

    def reload(self, rebuild: Collection[int] = ()) -> None:
        """Load every sealed segment from its files again, rebuilding from the store (and
        recording in the manifest) those whose files are missing or damaged, and the
        segments ``rebuild`` names."""
        with self._building:
            with self.lock, self._backend.read() as reader:
                self._reload(reader, rebuild)
            self._record_repairs()

    def wait(self) -> None:
        """Wait for background sealing or optimizing to finish."""
        worker = self._worker
        if worker is not None:
            worker.join()

    def _work(self, *, force: bool) -> None:
        with self.lock, self._backend.read() as reader:
            self._sync(reader)
        self._record_repairs()
        if force or self._growing_full():
            self._seal()
        while (job := self._locked_next_job(force)) is not None:
            self._replace(job)

    def _sync(self, reader: Reader) -> None:
        if not self._loaded or self._last_removal < reader.removal_floor(self._collection_id):
            self._reload(reader)
        else:
            self._apply_manifest(reader)
            self._apply_removals(reader)
            self._add_new_chunks(reader)
            if self._keywords is not None:
                first = self._keywords.last_chunk + 1
                self._keywords.add(*reader.chunk_terms(self._collection_id, first))

    def _growing_full(self) -> bool:
        return len(self._growing) >= self.config.seal_threshold

    def _seal(self) -> None:
        with self.lock:
            ids, vectors = self._growing.snapshot()
            docs = [self._growing_docs[i] for i in ids.tolist()]
        if not len(ids):
            return
        kind, files = segments.build_files(
            self._segment_root, self.config.kind, ids, vectors, docs, self.config
        )
        row = self._record(kind, ids, files, replaced=[])
        if row is None:
            return
        segment = segments.load(self._segment_root, row, self._dim)
        with self.lock:
            if row.id in self._sealed:
                return  # a search caught up with the manifest first and adopted it
            still_here = self._growing.contains(ids)
            segment.mark_deleted(ids[~still_here])
            self._shrink_growing(ids[still_here])
            self._add_sealed(segment)

    def _locked_next_job(self, force: bool) -> _Job | None:
        with self.lock:
            return self._next_job(force)

    def _next_job(self, force: bool) -> _Job | None:
        """The next merge or rebuild, if any is due (caller holds lock)."""
        ordered = list(self._sealed.values())
        for segment in ordered:
            if segment.deleted and segment.deleted >= self.config.deleted_threshold * segment.size:
                return _Job([segment])
        if force:
            return _merge_run(ordered, self.config)
        if len(ordered) > self.config.max_segments:
            return _cheapest_pair(ordered, self.config.max_segment_vectors)
        return None

    def _replace(self, job: _Job) -> None:
        with self.lock:
            parts = [(s, s.live_positions()) for s in job.replaced]
        ids = np.concatenate([s.ids[p] for s, p in parts]).astype(np.int64)
        if not len(ids):
            self._drop(job.replaced)
            return
        vectors = np.concatenate([np.asarray(s.vectors[p]) for s, p in parts])
        docs = [doc for s, p in parts for doc in s.doc_ids(p)]
        kind, files = segments.build_files(
            self._segment_root, self.config.kind, ids, vectors, docs, self.config
        )
        row = self._record(kind, ids, files, replaced=job.replaced)
        if row is None:
            return
        segment = segments.load(self._segment_root, row, self._dim)
        with self.lock:
            if row.id not in self._sealed:  # else a search adopted it and dropped the old
                still_live = np.concatenate([s.live[p] for s, p in parts])
                segment.mark_deleted(ids[~still_live])
                for old in job.replaced:
                    self._sealed.pop(old.row.id, None)
                self._add_sealed(segment)
        for old in job.replaced:
            segments.remove_files(self._segment_root, old.row.directory_name)

    def _drop(self, replaced: Sequence[SealedSegment]) -> None:
        """Forget segments whose every vector was deleted."""
        with self._backend.write() as writer:
            gone = writer.delete_segments([s.row.id for s in replaced])
        if not gone:
            return
        with self.lock:
            for old in replaced:
                self._sealed.pop(old.row.id, None)
        for old in replaced:
            segments.remove_files(self._segment_root, old.row.directory_name)

    def _add_sealed(self, segment: SealedSegment) -> None:
        self._sealed[segment.row.id] = segment
        self._sealed = dict(sorted(self._sealed.items(), key=lambda s: s[1].row.first_chunk))

    def _record(
        self, kind: str, ids: Ids, files: dict[str, Any], replaced: Sequence[SealedSegment]
    ) -> SegmentRow | None:
        """Swap the manifest in one transaction; ``None`` (and the new files are dropped)
        when another process changed the same range first."""
        first = min([int(ids[0])] + [s.row.first_chunk for s in replaced])
        last = max([int(ids[-1])] + [s.row.last_chunk for s in replaced])
        replaced_ids = [s.row.id for s in replaced]
        with self._backend.write() as writer:
            segment_id = writer.replace_segments(
                self._collection_id, replaced_ids, (kind, len(ids), first, last, files)
            )
        if segment_id is None:
            segments.remove_files(self._segment_root, files["dir"])
            return None
        return SegmentRow(segment_id, kind, len(ids), first, last, files)  # type: ignore[arg-type]


BACKGROUND_NICENESS = 10
"""How much lower the background sealing thread runs than searches and writes."""


def _lower_priority() -> None:
    """Lower this thread's CPU priority, so searches and writes come first and index
    builds use what is left (Linux sets niceness per thread; elsewhere nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


def _merge_run(ordered: list[SealedSegment], config: IndexConfig) -> _Job | None:
    """Adjacent segments that fit in one of at most ``max_segment_vectors``, for a forced
    merge; else a segment built as another kind than the config now asks for."""
    run: list[SealedSegment] = []
    size = 0
    for segment in ordered:
        live = segment.size - segment.deleted
        if run and size + live > config.max_segment_vectors:
            if len(run) > 1:
                return _Job(run)
            run, size = [], 0
        run.append(segment)
        size += live
    if len(run) > 1:
        return _Job(run)
    stale = [s for s in ordered if s.row.kind != ann.effective_kind(config.kind, s.size, config)]
    return _Job(stale[:1]) if stale else None


def _cheapest_pair(ordered: list[SealedSegment], limit: int) -> _Job | None:
    """The two adjacent segments with the fewest vectors together, within ``limit``."""
    pairs = [
        (a.size + b.size, i)
        for i, (a, b) in enumerate(itertools.pairwise(ordered))
        if a.size + b.size <= limit
    ]
    if not pairs:
        return None
    _, i = min(pairs)
    return _Job(ordered[i : i + 2])


def _stamp_key(stamp: Hashable) -> object:
    """Stamps are compared per connection where the backend's carry one first."""
    return stamp[0] if isinstance(stamp, tuple) else None
