"""BM25 over in-memory postings, kept in step with the store like the vector index.

Each chunk's distinct terms (64-bit hashes, see :mod:`ragstore.terms`) and their
counts are stored with the chunk in the store. This index holds them as *runs*: immutable
inverted lists over a range of chunks, each term's postings one slice of two arrays
(chunk position, term count). New chunks become a small run; adjacent small runs are
merged, so a collection has a few large runs and a handful of small ones. Deleted chunks
are masked, and dropped when their run is merged or compacted.

Scores are Okapi BM25 exactly as SQLite FTS5's ``bm25()`` computes them (k1 = 1.2,
b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)), at least 1e-6), with N, n and the average
length taken over the live chunks only. A query scores only the postings of its own
terms, with numpy, so a common term costs one vectorised pass over its list rather than a
per-row callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ragstore.index.base import Ids
from ragstore.index.flat import top_k
from ragstore.index.matching import Allowed
from ragstore.terms import TERM_DTYPE

K1 = 1.2
B = 0.75
MIN_IDF = 1e-6
RUN_LIMIT = 32_768
"""Small runs are merged up to this many chunks; larger runs stay as they are."""
DEAD_SHARE = 0.5
"""A run with more than this share of deleted chunks is compacted."""

Floats = npt.NDArray[np.float64]
Counts = npt.NDArray[np.uint16]
_Postings = tuple[int, npt.NDArray[np.int32], Counts]
"""A query term's index in the query, and its postings' positions and counts."""


@dataclass(eq=False)
class _Run:
    """Inverted lists over a range of chunks (ids ascending)."""

    ids: Ids
    lengths: Floats
    terms: Ids
    starts: Ids
    positions: npt.NDArray[np.int32]
    counts: Counts
    live: npt.NDArray[np.bool_] = field(init=False)
    dead: int = field(default=0, init=False)
    _norms: tuple[float, Floats] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.live = np.ones(len(self.ids), dtype=bool)

    @property
    def size(self) -> int:
        return len(self.ids)

    def live_count(self, positions: npt.NDArray[np.int32]) -> int:
        """How many of ``positions`` are live chunks."""
        return len(positions) if not self.dead else int(np.count_nonzero(self.live[positions]))

    def length_norms(self, average_length: float) -> Floats:
        """Per chunk, BM25's ``k1 * (1 - b + b * length / average length)``; kept until
        the average changes, so a search does not recompute it for every posting."""
        if self._norms is None or self._norms[0] != average_length:
            self._norms = (average_length, K1 * (1.0 - B + B * self.lengths / average_length))
        return self._norms[1]

    def postings(self, terms: Ids) -> list[_Postings]:
        """``(query term index, positions, counts)`` of each query term present here."""
        if not len(self.terms):
            return []
        found = np.minimum(np.searchsorted(self.terms, terms), len(self.terms) - 1)
        out = []
        for i in np.flatnonzero(self.terms[found] == terms).tolist():
            a, b = int(self.starts[found[i]]), int(self.starts[found[i] + 1])
            out.append((i, self.positions[a:b], self.counts[a:b]))
        return out

    def triples(self) -> tuple[Ids, npt.NDArray[np.int64], Counts]:
        """Every live posting as (term, new position among live chunks, count)."""
        terms = np.repeat(self.terms, np.diff(self.starts))
        keep = self.live[self.positions]
        renumbered = np.cumsum(self.live) - 1
        return terms[keep], renumbered[self.positions[keep]], self.counts[keep]


class BM25Index:
    """A collection's keyword postings: runs, live chunk statistics, and search."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self.last_chunk = 0
        self._documents = 0
        self._total_length = 0.0

    def __len__(self) -> int:
        """Live chunks with at least one term (BM25's N)."""
        return self._documents

    def add(self, ids: Ids, encoded: Sequence[bytes]) -> None:
        """Add chunks newer than :attr:`last_chunk` (``ids`` ascending, with their stored
        terms); older ids, already here, are skipped."""
        keep = ids > self.last_chunk
        if not keep.any():
            return
        ids = ids[keep]
        encoded = [e for e, k in zip(encoded, keep.tolist(), strict=True) if k]
        for start in range(0, len(ids), RUN_LIMIT):
            run = _build(ids[start : start + RUN_LIMIT], encoded[start : start + RUN_LIMIT])
            self._runs.append(run)
            self._documents += int(np.count_nonzero(run.lengths))
            self._total_length += float(run.lengths.sum())
        self.last_chunk = int(ids[-1])
        self._merge_small()

    def remove(self, ids: Ids) -> None:
        """Mask out deleted or replaced chunks; ids not here are ignored."""
        ids = np.unique(ids)
        for run in self._runs:
            found = np.searchsorted(run.ids, ids)
            inside = found < run.size
            hit = found[inside][run.ids[found[inside]] == ids[inside]]
            hit = hit[run.live[hit]]
            if len(hit):
                run.live[hit] = False
                run.dead += len(hit)
                self._documents -= int(np.count_nonzero(run.lengths[hit]))
                self._total_length -= float(run.lengths[hit].sum())
        self._runs = [_compact(r) if _mostly_dead(r) else r for r in self._runs if r.live.any()]

    def search(self, terms: Ids, k: int, allowed: Allowed | None = None) -> tuple[Ids, Floats]:
        """The ``k`` best live chunks for a query's distinct term hashes, best first (ties
        by ascending chunk id), only ``allowed`` ones if given; chunks that contain none
        of the terms are never returned."""
        if not len(terms) or not self._documents:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        found = [run.postings(terms) for run in self._runs]
        idf = self._idf(terms, found)
        average = self._total_length / self._documents
        best_ids: list[Ids] = []
        best_scores: list[Floats] = []
        floor = 0.0
        for run, postings in zip(self._runs, found, strict=True):
            ids, scores = _score_run(run, postings, idf, average, k, allowed, floor)
            best_ids.append(ids)
            best_scores.append(scores)
            floor = _kth_best(best_scores, k, floor)
        ids = np.concatenate(best_ids)
        scores = np.concatenate(best_scores)
        top = top_k(scores, min(k, len(scores))) if len(scores) else np.empty(0, dtype=np.int64)
        return ids[top], scores[top]

    def _idf(self, terms: Ids, found: list[list[_Postings]]) -> Floats:
        containing = np.zeros(len(terms), dtype=np.float64)
        for run, postings in zip(self._runs, found, strict=True):
            for i, positions, _ in postings:
                containing[i] += run.live_count(positions)
        n = self._documents
        idf = np.log((n - containing + 0.5) / (containing + 0.5))
        return np.maximum(idf, MIN_IDF)

    def _merge_small(self) -> None:
        """Merge the newest runs while the one before is at most twice as large and the
        result stays within :data:`RUN_LIMIT`."""
        while len(self._runs) > 1:
            older, newer = self._runs[-2], self._runs[-1]
            if older.size > 2 * newer.size or older.size + newer.size > RUN_LIMIT:
                return
            self._runs[-2:] = [_merged([older, newer])]


def _kth_best(best_scores: list[Floats], k: int, floor: float) -> float:
    """The ``k``-th best score kept so far (``floor`` until ``k`` are kept): a chunk
    scoring below it cannot make the cut, since ``k`` chunks with lower ids beat it."""
    kept = sum(len(scores) for scores in best_scores)
    if kept < k:
        return floor
    scores = np.concatenate(best_scores)
    return float(np.partition(scores, kept - k)[kept - k])


def _score_run(
    run: _Run,
    postings: list[_Postings],
    idf: Floats,
    average_length: float,
    k: int,
    allowed: Allowed | None,
    floor: float,
) -> tuple[Ids, Floats]:
    """The run's ``k`` best live (and ``allowed``) chunks scoring at least ``floor``;
    only chunks at or above it are ranked, which spares most of a long run's matches."""
    if not postings:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    positions = np.concatenate([p for _, p, _ in postings])
    counts = np.concatenate([c for _, _, c in postings]).astype(np.float64)
    lengths = [len(p) for _, p, _ in postings]
    weights = np.repeat(idf[[i for i, _, _ in postings]] * (K1 + 1.0), lengths)
    parts = weights * counts / (counts + run.length_norms(average_length)[positions])
    summed = np.bincount(positions, weights=parts, minlength=run.size)
    scores: Floats = summed.astype(np.float64, copy=False)
    matched = np.flatnonzero(scores >= floor) if floor > 0 else np.flatnonzero(scores)
    if run.dead:
        matched = matched[run.live[matched]]
    if allowed is not None:
        matched = matched[allowed.contains(run.ids[matched])]
    if not len(matched):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    best = matched[top_k(scores[matched], min(k, len(matched)))]
    return run.ids[best].astype(np.int64), scores[best]


def _build(ids: Ids, encoded: Sequence[bytes]) -> _Run:
    sizes = np.fromiter((len(e) // TERM_DTYPE.itemsize for e in encoded), np.int64, len(encoded))
    pairs = np.frombuffer(b"".join(encoded), dtype=TERM_DTYPE)
    positions = np.repeat(np.arange(len(ids), dtype=np.int64), sizes)
    counts = np.array(pairs["count"], dtype=np.uint16)
    lengths = np.bincount(positions, weights=counts, minlength=len(ids)).astype(np.float64)
    return _inverted(ids.astype(np.int64), lengths, pairs["term"], positions, counts)


def _inverted(
    ids: Ids, lengths: Floats, terms: Ids, positions: npt.NDArray[np.int64], counts: Counts
) -> _Run:
    """A run from postings listed by position; a stable sort by term keeps each term's
    positions ascending."""
    order = np.argsort(terms, kind="stable")
    terms = terms[order]
    cuts = np.flatnonzero(np.diff(terms)) + 1 if len(terms) else np.empty(0, dtype=np.int64)
    starts = np.concatenate([[0], cuts, [len(terms)]]).astype(np.int64)
    distinct = terms[starts[:-1]] if len(terms) else np.empty(0, dtype=np.int64)
    return _Run(ids, lengths, distinct, starts, positions[order].astype(np.int32), counts[order])


def _merged(runs: list[_Run]) -> _Run:
    """One run holding the live chunks of ``runs`` (ascending ids, in order)."""
    ids, lengths, terms, positions, counts = [], [], [], [], []
    offset = 0
    for run in runs:
        run_terms, run_positions, run_counts = run.triples()
        ids.append(run.ids[run.live])
        lengths.append(run.lengths[run.live])
        terms.append(run_terms)
        positions.append(run_positions + offset)
        counts.append(run_counts)
        offset += int(np.count_nonzero(run.live))
    # Run by run, the postings are grouped by term in position order; the stable sort by
    # term in _inverted keeps each term's positions ascending across runs too.
    return _inverted(
        np.concatenate(ids),
        np.concatenate(lengths),
        np.concatenate(terms),
        np.concatenate(positions),
        np.concatenate(counts),
    )


def _compact(run: _Run) -> _Run:
    return _merged([run])


def _mostly_dead(run: _Run) -> bool:
    return run.size - int(np.count_nonzero(run.live)) > DEAD_SHARE * run.size
