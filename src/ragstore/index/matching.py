"""What a filter lets through: across chunk ids, and within one sealed segment.

A filter's matches inside a segment are held the cheaper way for their size: a compressed
bitmap of positions (``pyroaring``) when few match, a boolean per position when many do.
Searches then ask for what they need: the count (to pick a plan), the positions (for an
exact scan over them) or a packed bitmap (for a FAISS ``IDSelectorBitmap``), each made
once and kept.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from ragstore.types import Ids

__all__ = ["Allowed", "Mask", "Matching"]

Mask = npt.NDArray[np.bool_]


class Allowed(Protocol):
    """Which chunks a filter lets through, asked of any chunk ids."""

    def contains(self, ids: Ids) -> Mask:
        """Per id of ``ids``: whether the filter lets that chunk through."""


class Matching:
    """The positions of one segment that a filter lets through.

    Built from a :class:`~pyroaring.BitMap` of positions or a boolean per position;
    :meth:`positions` and :meth:`bits` are computed on first use and kept. ``deleted`` is
    how many of the segment's positions were deleted when it was made: it is out of date
    once the segment has lost more.
    """

    def __init__(
        self,
        size: int,
        *,
        sparse: BitMap | None = None,
        dense: Mask | None = None,
        deleted: int = 0,
    ) -> None:
        if (sparse is None) == (dense is None):
            raise ValueError("give exactly one of sparse and dense")
        self.size = size
        self.deleted = deleted
        self._sparse = sparse
        self._dense = dense
        self.count = int(np.count_nonzero(dense)) if dense is not None else len(sparse or ())
        self._positions: Ids | None = None
        self._bits: npt.NDArray[np.uint8] | None = None

    @classmethod
    def of_positions(cls, size: int, positions: Ids, deleted: int = 0) -> Matching:
        """The matches at ``positions`` (ascending, distinct)."""
        matching = cls(size, sparse=BitMap(positions.astype(np.uint32)), deleted=deleted)
        matching._positions = positions.astype(np.int64, copy=False)
        return matching

    @property
    def share(self) -> float:
        """The share of the segment's positions that match."""
        return self.count / self.size if self.size else 0.0

    def positions(self) -> Ids:
        """Matching positions, ascending."""
        if self._positions is None:
            if self._dense is not None:
                self._positions = np.flatnonzero(self._dense).astype(np.int64)
            else:
                assert self._sparse is not None
                raw = np.frombuffer(self._sparse.to_array(), dtype=np.uint32)
                self._positions = raw.astype(np.int64)
        return self._positions

    def bits(self) -> npt.NDArray[np.uint8]:
        """A little-endian packed bitmap over every position, set where it matches."""
        if self._bits is None:
            dense = self._dense
            if dense is None:
                dense = np.zeros(self.size, dtype=bool)
                dense[self.positions()] = True
            self._bits = np.packbits(dense, bitorder="little")
        return self._bits
