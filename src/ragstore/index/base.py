"""Types shared by the index code: ids, scores, vectors and allowed-id masks.

Indexes are derived data: they can always be rebuilt from the vectors the store keeps.
Vectors are unit length, so inner product is cosine similarity.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from ragstore.types import AllowedMask, Ids, Matrix, Scores

__all__ = ["AllowedMask", "Ids", "Matrix", "Scores", "id_mask", "lookup", "one_blas_thread"]


def id_mask(ids: Ids, size: int = 0) -> AllowedMask:
    """An :data:`AllowedMask` that lets exactly ``ids`` through."""
    length = max(size, int(ids.max()) + 1 if len(ids) else 0)
    mask = np.zeros(length, dtype=bool)
    mask[ids] = True
    return mask


def lookup(mask: AllowedMask, ids: Ids) -> npt.NDArray[np.bool_]:
    """``mask[ids]``, with ids past the mask's end not allowed."""
    inside = ids < len(mask)
    if inside.all():
        result: npt.NDArray[np.bool_] = mask[ids]
        return result
    result = np.zeros(len(ids), dtype=bool)
    result[inside] = mask[ids[inside]]
    return result


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run numpy's matrix products on one thread inside the block.

    One search uses one core, like the FAISS searches and the query embedding: a
    vector-matrix product gains little from a second thread, and takes it from
    concurrent writes and searches. The limit is process-wide while the block runs.
    """
    with _blas().limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()
