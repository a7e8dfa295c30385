"""Sealed segments: immutable ANN indexes over a range of a collection's chunks.

A sealed segment covers the live chunks whose ids lie in ``[first_chunk, last_chunk]``
when it was built. Its files live in one directory under ``indexes/<collection id>/``:

- ``index.faiss``: the FAISS index, numbering vectors by position;
- ``ids.npy``: the chunk id at each position, ascending;
- ``vectors.npy``: the exact vectors at each position, memory-mapped; they serve exact
  search over a filter's few matches and the re-ranking of compressed kinds;
- ``doc_ids.npy`` and ``doc_offsets.npy``: each position's document id, UTF-8 bytes laid
  end to end with their offsets, so a search names documents without a database read
  (a chunk never changes document: an update replaces it with new chunks).

The directory is written under a temporary name and renamed, then recorded in the
``segments`` table with each file's CRC-32. Chunks deleted after sealing stay in the
files and are masked out at search time until the optimizer rebuilds the segment.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from isal import isal_zlib

from ragstore.config import IndexConfig, IndexKind
from ragstore.index import ann
from ragstore.index.base import Ids, Matrix, Scores, one_blas_thread
from ragstore.index.flat import top_k
from ragstore.index.matching import Matching

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"
DOC_IDS_FILE = "doc_ids.npy"
DOC_OFFSETS_FILE = "doc_offsets.npy"
_FILES = (INDEX_FILE, IDS_FILE, VECTORS_FILE, DOC_IDS_FILE, DOC_OFFSETS_FILE)

EXACT_DEPTH = 100
"""A filter matching at most ``k`` times this many vectors of a segment is searched exactly
over its matches."""
SCAN_SHARE = 0.05
"""Below this matching share, a ``hnsw``, ``ivf``, ``ivfpq`` or ``sq8`` segment scans the
matches' sign bits rather than search its index with a bitmap."""
SCAN_RERANK = 30
"""The sign-bit scan re-ranks ``k`` times this many candidates with the exact vectors."""
SCANNED_KINDS = frozenset({"hnsw", "ivf", "ivfpq", "sq8"})
"""The kinds whose filtered searches may scan sign bits (kept per segment: ``dim / 8``
bytes a vector, made on the first such search)."""
_CODE_BLOCK = 65_536
HNSW_WIDENING = 0.35
"""An ``hnsw`` search under a filter matching ``share`` of a segment widens ``ef_search``
by ``1 / share ** HNSW_WIDENING``: the graph search already walks on past the vectors the
bitmap rejects, so it needs far less than the inverse share."""
MAX_WIDENED = 2048
"""Cap on ``ef_search`` / ``nprobe`` widened for a selective filter."""


class SegmentDamaged(Exception):
    """A segment's files are missing, truncated or fail their checksum."""


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One row of the ``segments`` manifest."""

    id: int
    kind: IndexKind
    vectors: int
    first_chunk: int
    last_chunk: int
    files: dict[str, Any]

    @property
    def directory_name(self) -> str:
        """Name of the segment's directory under the collection's index folder."""
        return str(self.files["dir"])


@dataclass(frozen=True, slots=True)
class SegmentSearch:
    """One segment's answer to a query, with how it was found."""

    ids: Ids
    scores: Scores
    docs: list[str]
    plan: dict[str, Any]


@dataclass(eq=False)
class SealedSegment:
    """A loaded sealed segment and its in-memory deletion mask."""

    row: SegmentRow
    index: ann.FaissIndex
    ids: Ids
    vectors: Matrix
    doc_bytes: bytes
    """Every position's document id, UTF-8, end to end (held in memory: slicing ``bytes``
    costs a fraction of slicing a memory map, per hit)."""
    doc_offsets: Ids
    index_bytes: int
    live: np.ndarray = field(init=False)
    deleted: int = field(default=0, init=False)
    _live_bits: np.ndarray | None = field(default=None, init=False)
    _dead: Ids | None = field(default=None, init=False)
    _codes: npt.NDArray[np.uint8] | None = field(default=None, init=False)

    _offsets: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.live = np.ones(len(self.ids), dtype=bool)
        # Indexing a memoryview gives Python ints, without numpy's per-call overhead.
        self._offsets = memoryview(self.doc_offsets.data).cast("B").cast("q")

    @property
    def size(self) -> int:
        """Vectors in the files, deleted ones included."""
        return len(self.ids)

    def positions(self, chunk_ids: Ids) -> Ids:
        """Positions of those of ``chunk_ids`` (sorted) that are live in this segment."""
        if not len(chunk_ids) or not self.size:
            return np.empty(0, dtype=np.int64)
        lo, hi = np.searchsorted(chunk_ids, [self.ids[0], self.ids[-1] + 1])
        candidates = chunk_ids[lo:hi]
        found = np.searchsorted(self.ids, candidates)
        found = found[found < self.size]
        hit = self.ids[found] == candidates[: len(found)]
        found = found[hit]
        live: Ids = found[self.live[found]].astype(np.int64)
        return live

    def dead_positions(self) -> Ids:
        """Positions of the deleted vectors, ascending."""
        if self._dead is None or len(self._dead) != self.deleted:
            self._dead = np.flatnonzero(~self.live).astype(np.int64)
        return self._dead

    def mark_deleted(self, chunk_ids: Ids) -> None:
        """Mask out chunks that were deleted or replaced; absent ids are ignored."""
        found = self.positions(np.sort(chunk_ids))
        if len(found):
            self.live[found] = False
            self.deleted = int(self.size - np.count_nonzero(self.live))
            self._live_bits = None

    def doc_ids(self, positions: Ids) -> list[str]:
        """The document id of each position."""
        raw, offsets = self.doc_bytes, self._offsets
        return [raw[offsets[i] : offsets[i + 1]].decode() for i in positions.tolist()]

    def live_positions(self) -> Ids:
        """Positions of every live vector."""
        return np.flatnonzero(self.live).astype(np.int64)

    def search(
        self,
        query: Matrix,
        k: int,
        matching: Matching | None,
        knobs: ann.Knobs,
        config: IndexConfig,
    ) -> SegmentSearch:
        """Best ``k`` live chunks, restricted to the ``matching`` positions if given.

        A filter that matches few vectors is searched exactly over them. One that matches
        less than :data:`SCAN_SHARE` of a graph or inverted-list index is scanned over the
        matching vectors' sign bits (1 bit a dimension), and the :data:`SCAN_RERANK`
        times ``k`` nearest by Hamming distance are re-ranked with the exact vectors.
        Otherwise the index searches with a bitmap of the matching positions and a search
        breadth widened for the matching share; if it still finds fewer than ``k`` while more
        exist, the segment falls back to exact search.
        """
        kind = self.row.kind
        plan: dict[str, Any] = {"segment": self.row.id, "kind": kind, "vectors": self.size}
        if matching is not None:
            count = matching.count
            plan["matching"] = count
        else:
            count = self.size - self.deleted
        if count == 0:
            return SegmentSearch(_NO_IDS, _NO_SCORES, [], plan | {"plan": "none match"})
        depth = config.rerank_for(kind)
        if matching is not None:
            if count <= k * EXACT_DEPTH:
                return self._ranked(query, k, matching.positions(), plan | {"plan": "exact"})
            if kind in SCANNED_KINDS and matching.share < SCAN_SHARE:
                return self._scanned(query, k, matching.positions(), plan)
        share = count / self.size
        bits = matching.bits() if matching is not None else self._live_bitmap()
        fetch = k * depth if kind in ann.COMPRESSED else k
        widened = _widen(kind, knobs, config, share)
        found, scores = ann.search(self.index, kind, query, fetch, widened, bits)
        if len(found) and found[-1] < 0:  # FAISS pads a short result with -1
            found = found[found >= 0]
        plan |= {"plan": _ANN_PLANS[kind == "flat", bits is not None]}
        plan |= {"ef_search": widened.ef_search} if widened.ef_search else {}
        plan |= {"nprobe": widened.nprobe} if widened.nprobe else {}
        if len(found) < min(k, count):
            positions = matching.positions() if matching is not None else None
            return self._exact(query, k, positions, plan | {"plan": "exact (ann found too few)"})
        if kind in ann.COMPRESSED:
            plan["reranked"] = len(found)
            return self._ranked(query, k, np.sort(found), plan)
        return self._result(found, scores[: len(found)], plan)

    def _scanned(
        self, query: Matrix, k: int, positions: Ids, plan: dict[str, Any]
    ) -> SegmentSearch:
        """Hamming scan over the sign bits of ``positions``, re-ranked exactly."""
        codes = np.take(self.sign_codes(), positions, axis=0)
        query_code = ann.binary_codes(query.reshape(1, -1))[0]
        nearest = ann.hamming_nearest(codes, query_code, k * SCAN_RERANK)
        plan |= {"plan": "sign-bit scan + re-rank", "reranked": len(nearest)}
        return self._ranked(query, k, np.sort(positions[nearest]), plan)

    def sign_codes(self) -> npt.NDArray[np.uint8]:
        """Every position's sign bits, packed (``dim / 8`` bytes a vector); made from the
        vectors on first use and kept (a thirty-second of their size)."""
        if self._codes is None:
            codes = np.empty((self.size, (self.vectors.shape[1] + 7) // 8), dtype=np.uint8)
            for start in range(0, self.size, _CODE_BLOCK):
                block = self.vectors[start : start + _CODE_BLOCK]
                codes[start : start + len(block)] = ann.binary_codes(np.asarray(block))
            self._codes = codes
        return self._codes

    def _exact(
        self, query: Matrix, k: int, positions: Ids | None, plan: dict[str, Any]
    ) -> SegmentSearch:
        if positions is None:
            positions = self.live_positions()
        return self._ranked(query, k, positions, plan)

    def _ranked(self, query: Matrix, k: int, positions: Ids, plan: dict[str, Any]) -> SegmentSearch:
        if len(positions) > _SMALL_PRODUCT:
            with one_blas_thread():
                scores = np.asarray(self.vectors[positions] @ query, dtype=np.float32)
        else:  # too small for a second thread to matter; skip the limit's cost
            scores = np.asarray(self.vectors[positions] @ query, dtype=np.float32)
        best = top_k(scores, min(k, len(scores)))
        return self._result(positions[best], scores[best], plan)

    def _result(self, positions: Ids, scores: Scores, plan: dict[str, Any]) -> SegmentSearch:
        return SegmentSearch(self.ids[positions], scores, self.doc_ids(positions), plan)

    def _live_bitmap(self) -> npt.NDArray[np.uint8] | None:
        if self.deleted == 0:
            return None
        if self._live_bits is None:
            self._live_bits = np.packbits(self.live, bitorder="little")
        return self._live_bits


_SMALL_PRODUCT = 512
"""Rows below which a vector-matrix product is left to BLAS as it is (it runs on one
thread anyway; above, a second thread costs milliseconds when the other core is busy)."""
_ANN_PLANS = {
    (False, False): "ann",
    (False, True): "ann + filter bitmap",
    (True, False): "exact scan",
    (True, True): "exact scan + filter bitmap",
}
_NO_IDS: Ids = np.empty(0, dtype=np.int64)
_NO_SCORES: Scores = np.empty(0, dtype=np.float32)


def _widen(kind: IndexKind, knobs: ann.Knobs, config: IndexConfig, share: float) -> ann.Knobs:
    """Search breadth for a query that may only return ``share`` of the vectors."""
    if share >= 1 and (knobs.ef_search if kind == "hnsw" else knobs.nprobe) is not None:
        return knobs  # nothing to widen, and the breadth is given
    if kind == "hnsw":
        ef = knobs.ef_search or config.ef_search
        return ann.Knobs(ef_search=_scaled(ef, share**HNSW_WIDENING))
    if kind in ("ivf", "ivfpq"):
        nprobe = knobs.nprobe or config.nprobe
        return ann.Knobs(nprobe=_scaled(nprobe, share))
    return knobs


def _scaled(value: int, share: float) -> int:
    if share >= 1:
        return value
    return max(value, min(MAX_WIDENED, math.ceil(value / share)))


def build_files(
    root: Path, kind: IndexKind, ids: Ids, vectors: Matrix, docs: list[str], config: IndexConfig
) -> tuple[IndexKind, dict[str, Any]]:
    """Build a segment's index and write its directory; returns the kind built and the
    manifest's ``files`` entry (directory name and checksums)."""
    built_kind = ann.effective_kind(kind, len(ids), config)
    index = ann.build(built_kind, vectors, config)
    name = secrets.token_hex(8)
    staging = root / f"{name}.tmp"
    staging.mkdir(parents=True)
    ann.write(index, str(staging / INDEX_FILE))
    np.save(staging / IDS_FILE, np.ascontiguousarray(ids, dtype=np.int64))
    np.save(staging / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    encoded = [doc.encode() for doc in docs]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    np.save(staging / DOC_IDS_FILE, np.frombuffer(b"".join(encoded), dtype=np.uint8))
    np.save(staging / DOC_OFFSETS_FILE, offsets)
    checksums = {}
    for filename in _FILES:
        checksums[filename] = _crc32(staging / filename)
        fsync(staging / filename)
    os.replace(staging, root / name)
    fsync(root)
    return built_kind, {"dir": name, "crc32": checksums}


def verify(root: Path, row: SegmentRow, dim: int) -> tuple[Ids, Matrix]:
    """Check a segment's files against their checksums, without loading its index; its
    chunk ids and vectors (memory-mapped). Raises :class:`SegmentDamaged`."""
    directory = root / row.directory_name
    try:
        _check_sums(directory, row)
        ids = np.asarray(np.load(directory / IDS_FILE, mmap_mode="r"))
        vectors = np.asarray(np.load(directory / VECTORS_FILE, mmap_mode="r"))
    except (OSError, ValueError, KeyError) as exc:
        raise SegmentDamaged(f"{directory}: {exc}") from exc
    if ids.dtype != np.int64 or vectors.shape != (len(ids), dim):
        raise SegmentDamaged(f"{directory}: ids and vectors disagree")
    return ids, vectors


def _check_sums(directory: Path, row: SegmentRow) -> None:
    for filename in _FILES:
        if _crc32(directory / filename) != row.files["crc32"][filename]:
            raise SegmentDamaged(f"{directory / filename}: checksum mismatch")


def load(root: Path, row: SegmentRow, dim: int) -> SealedSegment:
    """Open a segment's files, verifying their checksums; raises :class:`SegmentDamaged`."""
    directory = root / row.directory_name
    try:
        _check_sums(directory, row)
        index = ann.read(str(directory / INDEX_FILE), row.kind)
        # Plain ndarray views of the maps: indexing a np.memmap costs more per call.
        ids = np.asarray(np.load(directory / IDS_FILE, mmap_mode="r"))
        vectors = np.asarray(np.load(directory / VECTORS_FILE, mmap_mode="r"))
        doc_bytes = np.load(directory / DOC_IDS_FILE, mmap_mode="r").tobytes()
        doc_offsets = np.asarray(np.load(directory / DOC_OFFSETS_FILE, mmap_mode="r"))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise SegmentDamaged(f"{directory}: {exc}") from exc
    if (
        ids.dtype != np.int64
        or index.ntotal != len(ids)
        or vectors.shape != (len(ids), dim)
        or doc_offsets.shape != (len(ids) + 1,)
        or doc_offsets[-1] != len(doc_bytes)
    ):
        raise SegmentDamaged(f"{directory}: index, ids, vectors and document ids disagree")
    size = (directory / INDEX_FILE).stat().st_size
    return SealedSegment(row, index, ids, vectors, doc_bytes, doc_offsets, size)


def remove_files(root: Path, directory_name: str) -> None:
    """Delete a segment's directory (other processes keep what they already loaded)."""
    shutil.rmtree(root / directory_name, ignore_errors=True)


def parse_row(row: tuple[Any, ...]) -> SegmentRow:
    """A manifest row from ``SELECT id, kind, vectors, first_chunk, last_chunk, files``."""
    segment_id, kind, vectors, first, last, files = row
    return SegmentRow(int(segment_id), kind, int(vectors), int(first), int(last), json.loads(files))


def merge_top(results: list[SegmentSearch], k: int) -> tuple[Ids, Scores, list[str]]:
    """The best ``k`` of several segments' results: ids, scores and document ids."""
    results = [r for r in results if len(r.ids)]
    if not results:
        return _NO_IDS, _NO_SCORES, []
    if len(results) == 1 and len(results[0].ids) <= k:
        return results[0].ids, results[0].scores, results[0].docs
    ids = np.concatenate([r.ids for r in results])
    scores = np.concatenate([r.scores for r in results])
    docs = [doc for r in results for doc in r.docs]
    best = top_k(scores, min(k, len(scores)))
    return ids[best], scores[best], [docs[i] for i in best.tolist()]


def _crc32(path: Path) -> int:
    # ISA-L's CRC-32 (the one zlib computes) runs several times zlib's own speed, and
    # every file of a segment is checked when it is loaded.
    checksum = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            checksum = isal_zlib.crc32(block, checksum)
    return checksum


def fsync(path: Path) -> None:
    """Flush a file or directory to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
