"""A collection searched inside its database (index kind ``pgvector``).

Nothing is held in memory and nothing needs catching up: every search is a statement in
the caller's snapshot (see :mod:`ragstore.store.postgres.search`). Chosen for the
memory it saves, at the cost of a round trip per side and the database's own ranking on
the keyword side.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ragstore.config import IndexConfig
from ragstore.filters import Filter
from ragstore.index.ann import Knobs
from ragstore.index.vectors import DenseResult
from ragstore.store.base import DatabaseSearch, Reader
from ragstore.types import Ids, Matrix, Scores

_LAST_ID = 2**63 - 1


class DatabaseIndex:
    """The in-database search of one collection."""

    def __init__(self, collection_id: int, dim: int, config: IndexConfig) -> None:
        self._collection_id = collection_id
        self._dim = dim
        self.config = config

    def dense(
        self, reader: Reader, query: Matrix, k: int, where: Filter | None, knobs: Knobs
    ) -> DenseResult:
        """The ``k`` best chunks by inner product, with their documents' ids."""
        ef_search = knobs.ef_search or self.config.ef_search
        ids, scores = _searcher(reader).dense_search(
            self._collection_id, self._dim, query, k, where, ef_search
        )
        hits = reader.hits_by_chunk(ids.tolist())
        docs = [hits[i].doc_id for i in ids.tolist()]
        plan = {"segment": "database", "plan": "pgvector hnsw", "ef_search": ef_search}
        return DenseResult(ids, scores, docs, [plan])

    def keyword(
        self, reader: Reader, text: str, k: int, where: Filter | None
    ) -> tuple[Ids, Scores]:
        """The ``k`` best chunks by PostgreSQL full-text rank."""
        return _searcher(reader).text_search(self._collection_id, text, k, where)

    def exact(self, reader: Reader, queries: Matrix, k: int) -> Ids:
        """Exact top-``k`` chunk ids of each query over every stored vector, ``(nq,
        k)``, padded with ``-1``: the truth :meth:`dense` is checked against."""
        ids, vectors, _ = reader.chunk_vectors(self._collection_id, 0, _LAST_ID, self._dim)
        best = np.full((len(queries), k), -1, dtype=np.int64)
        if not len(ids):
            return best
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best[:, : top.shape[1]] = ids[top]
        return best

    def stats(self, reader: Reader) -> dict[str, Any]:
        """The collection's vectors and the size of its database indexes."""
        vectors = reader.chunk_count(self._collection_id)
        size = _searcher(reader).search_index_bytes(self._collection_id)
        return {
            "kind": "pgvector",
            "segments": [],
            "vectors": vectors,
            "index_bytes": size,
            "bytes_per_vector": round(size / max(vectors, 1), 1),
        }


def _searcher(reader: Reader) -> DatabaseSearch:
    """The reader as the database search it is (the store was checked to offer it)."""
    return cast(DatabaseSearch, reader)
