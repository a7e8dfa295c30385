"""Types shared by the index code: ids, scores and vectors.

Indexes are derived data: they can always be rebuilt from the vectors the store keeps.
Vectors are unit length, so inner product is cosine similarity.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from ragstore.types import Ids, Matrix, Scores

__all__ = ["Ids", "Matrix", "Scores", "one_blas_thread"]


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
