"""Index kinds on FAISS: how a sealed segment's index is built and searched.

Vectors are unit length, so cosine similarity is the inner product. A FAISS index here
numbers its vectors by position (0..n-1); the segment maps positions to chunk ids. A
search may be restricted to some positions with a bitmap, which FAISS honours inside the
graph or list traversal rather than after it.

Kind ``binary`` keeps one bit per dimension (set where the value is positive) in a
``faiss.IndexBinaryFlat`` and ranks by Hamming distance, which tracks the angle between
vectors (for random hyperplanes the expected share of differing bits is the angle over
pi: Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002).
Its candidates are re-ranked with the exact vectors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from ragstore.config import IndexConfig, IndexKind
from ragstore.index.base import Matrix, Scores

# faiss's bundled stubs miss most of its SWIG API, so it is used untyped.
faiss: Any = _faiss
FaissIndex = Any
"""A ``faiss.Index``, or a ``faiss.IndexBinary`` for kind ``binary``."""

Positions = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint8]

COMPRESSED: frozenset[str] = frozenset({"ivfpq", "sq8", "binary"})
"""Kinds whose stored codes are lossy: their candidates are re-ranked exactly."""

_TRAINING_PER_LIST = 256
"""K-means training points per IVF list: what FAISS's k-means samples by default
(``max_points_per_centroid``). With 64, lists came out less even: a probe scanned ~12 %
more vectors on average (1M vectors, 1,024 lists)."""


def effective_kind(kind: IndexKind, n: int, config: IndexConfig) -> IndexKind:
    """The kind a segment of ``n`` vectors gets: too few to train a quantizer means flat."""
    if kind == "ivf" and n < 39 * 4:
        return "flat"
    if kind == "ivfpq" and n < 39 * (1 << config.nbits):
        return "flat"
    return kind


def nlist_for(n: int, config: IndexConfig) -> int:
    """The number of IVF lists: the configured one, else about 2·sqrt(n), capped by n/39."""
    wanted = config.nlist or int(2 * math.sqrt(n))
    return max(1, min(wanted, n // 39))


def build(kind: IndexKind, vectors: Matrix, config: IndexConfig) -> FaissIndex:
    """A FAISS index of ``kind`` over ``vectors`` (rows are positions)."""
    n, dim = vectors.shape
    index = _empty(kind, n, dim, config)
    if kind == "binary":
        index.add(binary_codes(vectors))
        return index
    if not index.is_trained:
        index.train(_training_sample(vectors, kind, n, config))
    index.add(vectors)
    return index


def binary_codes(vectors: Matrix) -> Codes:
    """Each row's sign bits, packed eight to a byte (the last byte padded with zeros):
    the codes a ``binary`` index stores and is queried with."""
    codes: Codes = np.packbits(vectors > 0, axis=-1)
    return codes


@contextmanager
def one_faiss_thread() -> Iterator[None]:
    """Run FAISS on one OpenMP thread in the calling thread inside the block.

    FAISS scans for a single query (flat, sq8, binary, Hamming) in an OpenMP parallel
    region. While another process keeps the other core busy, the region's barrier waits
    for a descheduled thread: in ``benchmarks/busy_core.py`` a Hamming scan of 20,000
    codes had a p99 of 23.7 ms on two threads against 4.6 ms on one.
    One search uses one core. OpenMP keeps this setting per thread, so a build running
    in another thread keeps all of its threads.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def hamming_nearest(codes: Codes, query_code: Codes, k: int) -> Positions:
    """Rows of ``codes`` with the ``k`` smallest Hamming distances to ``query_code``."""
    with one_faiss_thread():
        _, rows = faiss.knn_hamming(query_code.reshape(1, -1), codes, min(k, len(codes)))
    found: Positions = rows[0]
    return found[found >= 0]


def _empty(kind: IndexKind, n: int, dim: int, config: IndexConfig) -> FaissIndex:
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.m, metric)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
        return index
    if kind == "sq8":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, metric)
    if kind == "binary":
        return faiss.IndexBinaryFlat(8 * math.ceil(dim / 8))
    quantizer = faiss.IndexFlatIP(dim)
    nlist = nlist_for(n, config)
    ivf: FaissIndex
    if kind == "ivf":
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
    else:
        ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, config.nbits, metric)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.nprobe = config.nprobe
    return ivf


def _training_sample(vectors: Matrix, kind: IndexKind, n: int, config: IndexConfig) -> Matrix:
    wanted = n
    if kind in ("ivf", "ivfpq"):
        wanted = _TRAINING_PER_LIST * max(nlist_for(n, config), 1 << config.nbits)
    if wanted >= n:
        return vectors
    rows = np.random.default_rng(0).choice(n, size=wanted, replace=False)
    return np.ascontiguousarray(vectors[np.sort(rows)])


@dataclass(frozen=True, slots=True)
class Knobs:
    """Per-query search settings; ``None`` keeps the collection's configured value."""

    ef_search: int | None = None
    nprobe: int | None = None


def search(
    index: FaissIndex,
    kind: IndexKind,
    query: Matrix,
    k: int,
    knobs: Knobs,
    allowed: npt.NDArray[np.uint8] | None = None,
) -> tuple[Positions, Scores]:
    """Top-``k`` positions (``-1`` pads a short result) and scores for one query; a
    ``binary`` index scores by negated Hamming distance.

    ``allowed`` is a little-endian bitmap over positions; only set positions may be
    returned. It must stay alive for the duration of the call, which it does here.
    """
    selector = None
    if allowed is not None:
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(allowed))
    params = _params(kind, index, knobs, selector)
    with one_faiss_thread():
        if kind == "binary":
            codes = binary_codes(query.reshape(1, -1))
            distances, positions = index.search(codes, k, params=params)
            return positions[0], -distances[0].astype(np.float32)
        scores, positions = index.search(query.reshape(1, -1), k, params=params)
    return positions[0], scores[0]  # FAISS positions are int64 already


def _params(kind: IndexKind, index: FaissIndex, knobs: Knobs, selector: Any) -> Any:
    if kind == "hnsw":
        ef = knobs.ef_search if knobs.ef_search is not None else index.hnsw.efSearch
        if selector is None:
            return _plain_params(kind, ef)
        return faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
    if kind in ("ivf", "ivfpq"):
        nprobe = min(knobs.nprobe if knobs.nprobe is not None else index.nprobe, index.nlist)
        if selector is None:
            return _plain_params(kind, nprobe)
        return faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
    if selector is None:
        return None
    return faiss.SearchParameters(sel=selector)


@functools.lru_cache(maxsize=256)
def _plain_params(kind: IndexKind, breadth: int) -> Any:
    """Search parameters without a selector: read-only in a search, so they are shared."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=breadth)
    return faiss.SearchParametersIVF(nprobe=breadth)


def write(index: FaissIndex, path: str) -> None:
    """Write an index file."""
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, path)
    else:
        faiss.write_index(index, path)


def read(path: str, kind: IndexKind) -> FaissIndex:
    """Read an index file of ``kind``; raises ``RuntimeError`` for a missing or corrupt
    one."""
    if kind == "binary":
        return faiss.read_index_binary(path)
    return faiss.read_index(path)
