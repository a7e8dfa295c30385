"""Exact search: every query scores every (allowed) vector. Always right, O(n) per query."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ragstore.index.base import Ids, Matrix, Scores
from ragstore.index.matching import Allowed

_INITIAL_CAPACITY = 1024


class FlatIndex:
    """Vectors in one contiguous float32 matrix, scored with one matrix-vector product."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors: Matrix = np.empty((_INITIAL_CAPACITY, dim), dtype=np.float32)
        self._ids: Ids = np.empty(_INITIAL_CAPACITY, dtype=np.int64)
        self._row_of: dict[int, int] = {}

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, ids: Ids, vectors: Matrix) -> None:
        """Insert vectors; an id already present is overwritten in place."""
        listed = ids.tolist()
        if len(set(listed)) == len(listed) and not any(i in self._row_of for i in listed):
            self._append_rows(ids, vectors)  # the usual case: all new, copied in one go
            return
        for chunk_id, vector in zip(listed, vectors, strict=True):
            row = self._row_of.get(chunk_id)
            if row is None:
                row = self._append_row(chunk_id)
            self._vectors[row] = vector

    def _append_rows(self, ids: Ids, vectors: Matrix) -> None:
        start = len(self._row_of)
        while start + len(ids) > len(self._ids):
            self._grow()
        self._ids[start : start + len(ids)] = ids
        self._vectors[start : start + len(ids)] = vectors
        self._row_of.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))

    def remove(self, ids: Ids) -> None:
        """Drop ids: a few by moving the last row into each freed slot, many (as when a
        segment is sealed) by compacting into right-sized arrays."""
        size = len(self._row_of)
        if not size or not len(ids):
            return
        gone = np.isin(self._ids[:size], ids)
        count = int(np.count_nonzero(gone))
        if count > size // 2:
            self._compact(~gone)
            return
        for row in np.flatnonzero(gone)[::-1].tolist():
            self._drop_row(row)

    def _drop_row(self, row: int) -> None:
        del self._row_of[int(self._ids[row])]
        last = len(self._row_of)
        if row != last:
            moved = int(self._ids[last])
            self._vectors[row] = self._vectors[last]
            self._ids[row] = moved
            self._row_of[moved] = row

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        size = len(self._row_of)
        ids = self._ids[:size][keep]
        capacity = max(_INITIAL_CAPACITY, 1 << len(ids).bit_length())
        self._ids = np.empty(capacity, dtype=np.int64)
        self._ids[: len(ids)] = ids
        vectors = np.empty((capacity, self._dim), dtype=np.float32)
        vectors[: len(ids)] = self._vectors[:size][keep]
        self._vectors = vectors
        self._row_of = {chunk_id: row for row, chunk_id in enumerate(ids.tolist())}

    def search(self, query: Matrix, k: int, allowed: Allowed | None = None) -> tuple[Ids, Scores]:
        """Exact top-k by inner product, over all vectors or only the allowed ids."""
        size = len(self._row_of)
        rows: Ids | None = None
        if allowed is None:
            scores = self._vectors[:size] @ query
        else:
            rows = np.flatnonzero(allowed.contains(self._ids[:size]))
            scores = self._vectors[rows] @ query
        if k <= 0 or scores.size == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        top = top_k(scores, k)
        positions = top if rows is None else rows[top]
        return self._ids[positions].copy(), scores[top].astype(np.float32)

    def contains(self, ids: Ids) -> npt.NDArray[np.bool_]:
        """Which of ``ids`` are present."""
        return np.fromiter((i in self._row_of for i in ids.tolist()), dtype=bool, count=len(ids))

    def ids_between(self, first: int, last: int) -> Ids:
        """Ids present in ``[first, last]``."""
        ids = self._ids[: len(self._row_of)]
        return ids[(ids >= first) & (ids <= last)].copy()

    def snapshot(self) -> tuple[Ids, Matrix]:
        """Copies of every id (ascending) and its vector."""
        size = len(self._row_of)
        order = np.argsort(self._ids[:size], kind="stable")
        return self._ids[:size][order].copy(), self._vectors[:size][order].copy()

    def _append_row(self, chunk_id: int) -> int:
        row = len(self._row_of)
        if row == len(self._ids):
            self._grow()
        self._ids[row] = chunk_id
        self._row_of[chunk_id] = row
        return row

    def _grow(self) -> None:
        capacity = 2 * len(self._ids)
        vectors = np.empty((capacity, self._dim), dtype=np.float32)
        vectors[: len(self._ids)] = self._vectors
        ids = np.empty(capacity, dtype=np.int64)
        ids[: len(self._ids)] = self._ids
        self._vectors, self._ids = vectors, ids


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> Ids:
    """Positions of the k largest scores, best first; ties broken by position, also at
    the k-th place (the lowest positions among equal scores make the cut)."""
    if k < scores.size:
        candidates = np.argpartition(-scores, k - 1)[:k]
        kth = scores[candidates].min()
        if np.count_nonzero(scores == kth) > np.count_nonzero(scores[candidates] == kth):
            above = np.flatnonzero(scores > kth)
            tied = np.flatnonzero(scores == kth)[: k - len(above)]
            candidates = np.concatenate([above, tied])
    else:
        candidates = np.arange(scores.size)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order].astype(np.int64)
