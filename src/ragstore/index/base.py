"""The vector index seam.

An index maps int64 chunk ids to unit vectors and answers inner-product top-k queries,
optionally restricted to an allowed set of ids. Indexes are derived data: the store can
always rebuild one from the vectors it keeps in SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


class VectorIndex(Protocol):
    """Top-k inner-product search over vectors keyed by int64 ids."""

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def __len__(self) -> int:
        """Number of live vectors."""
        ...

    def add(self, ids: Ids, vectors: Matrix) -> None:
        """Insert vectors; an id already present is replaced."""
        ...

    def remove(self, ids: Ids) -> None:
        """Forget ids; ids that are absent are ignored."""
        ...

    def search(self, query: Matrix, k: int, allowed: Ids | None = None) -> tuple[Ids, Scores]:
        """The ``k`` best ids (best first) and their scores for one query vector.

        With ``allowed``, only those ids may be returned, and the search is exact over them.
        """
        ...


IndexFactory = Callable[..., VectorIndex]

_KINDS: dict[str, IndexFactory] = {}


def register_index(kind: str, factory: IndexFactory) -> None:
    """Make an index kind available by name to collection configs."""
    _KINDS[kind] = factory


def create_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    """A new, empty index of the named kind."""
    from ragstore.errors import InvalidConfig

    if kind not in _KINDS:
        raise InvalidConfig(f"unknown index kind {kind!r}", field="index.kind")
    return _KINDS[kind](dim=dim, **params)
