"""ANN indexes: ragstore's index kinds beside the same indexes built directly with FAISS
and beside hnswlib's HNSW, on the same data, in one process, with the same threads.

Data. The real all-MiniLM-L6-v2 chunk vectors of a BEIR corpus, read from the store that
``ragstore eval`` built (collection ``eval-scifact`` in ``.eval-store/``), and N (default
1,000,000) seeded synthetic 384-d vectors shaped like them: k-means (``--centroids``) on
the real vectors; the residuals, each divided by its cluster's RMS residual norm, give one
shared 384x384 covariance (Cholesky factor L); a synthetic vector is a centroid picked with
its cluster's weight, plus that cluster's RMS norm times L·z (z standard normal), then
L2-normalised. 1,000 queries come from a separate stream of the same generator (never in
the data). Ground truth is exact inner-product top-k (``faiss.IndexFlatIP``), also per
metadata filter restricted to the allowed rows. Data and ground truth are cached under
``.bench-cache/ann/`` keyed by the real vectors' digest, seed, N and query count.
``shape_validation`` checks the generator at the real set's size: real (1,000 chunks held
out as queries) and synthetic sets of the same size get the same statistics: top-1 and
top-10 neighbour cosine, random-pair cosine, local intrinsic dimensionality (MLE over the
20 nearest), FAISS HNSW recall@10 at a few ef_search and IVF recall@10 at a few nprobe.
``--real-only`` runs the whole benchmark on the real set instead.

Indexes. Per kind (``flat``, ``hnsw``, ``ivf``, ``ivfpq``, ``sq8``, ``binary``): FAISS
built directly (``IndexFlatIP``, ``IndexHNSWFlat``, ``IndexIVFFlat``, ``IndexIVFPQ`` and
``IndexScalarQuantizer(QT_8bit)``; the compressed two wrapped in ``IndexRefineFlat`` so
``rerank x k`` candidates are re-ranked with the float vectors, as ragstore does;
``binary``: ``IndexBinaryFlat`` over the sign bits, its ``rerank x k`` nearest by Hamming
distance re-ranked in numpy, since FAISS has no refine index over a binary one), hnswlib's
HNSW (for ``hnsw``; same M and ef_construction), and ragstore: one vector collection
loaded once with ``upsert_vectors`` (metadata ``{"bucket": i % 1000}``), sealed as ``flat``
by ``optimize()``, then switched to each kind with ``rebuild_index`` (``hnsw`` last).
``binary`` re-ranks ``--binary-rerank`` x k candidates (default: ragstore's default for
the kind) and also gets a re-rank frontier: FAISS's binary baseline at several depths,
recall@10 over every query and single-query p50.

Per index: build time (FAISS: train + add; hnswlib: add; ragstore: optimize or
rebuild_index), bytes per vector (serialized index size / N: FAISS ``write_index``, for
``ivfpq``/``sq8``/``binary`` the compressed index alone, the float vectors used to re-rank
not counted; hnswlib ``save_index``; ragstore ``index_stats()``), and per search setting
(ef_search for ``hnsw``, nprobe for ``ivf``/``ivfpq``): recall@10, single-query latency
p50/p99 and single-query QPS (one query per call, like an application; all engines timed
on the same query back to back, in an order rotated per query, so machine noise hits them
alike), and batch QPS (all queries in one call; ragstore has no batch call). Single
queries run with one OpenMP thread in every engine (FAISS does not split one query of
these indexes across threads, and idle OpenMP workers cost ~10 ms a call when the other
core is busy); builds and batch calls use ``--threads``. A setting's single-query timing
stops after ``--budget`` seconds once 100 queries ran (slow exact scans at 1M); recall is
then over the queries that ran (``queries`` in each row). ragstore is timed through
``Collection.search_vectors`` (the engine: ids and scores, no hydration);
``Collection.search`` (full API, hits hydrated from SQLite) is timed beside it at the
lowest setting where ragstore reaches recall 0.95. ``equal_recall`` interpolates each
engine's single-query QPS and p50 at recall@10 = 0.90 and 0.95 and gives ragstore / FAISS.

On the ``hnsw`` collection (or the last kind measured) also: filtered queries at 50%, 10%,
1% and 0.1% selectivity (recall@10 against exact search over the allowed rows, whether
every query returned k hits all matching, p50), beside FAISS with an ``IDSelectorBitmap``
at the same setting; then ``--upsert-seconds`` of one thread upserting new vectors in
batches while another searches (upserts/s, search p50/p99, new vectors found at once).

    python benchmarks/ann.py                               # 1M synthetic, all kinds
    python benchmarks/ann.py --n 100000 --kinds hnsw,sq8   # quick run
    python benchmarks/ann.py --real-only --no-write        # the real chunks only
    python benchmarks/ann.py --kinds binary --merge        # one kind into the saved results

``--merge`` replaces only the measured kinds' sections of the existing results file and
keeps the rest; each replaced section records its own run (date, machine, load, command,
data), the filtered queries and upserts measured on it, and whether its data set is the
one the file's other kinds ran on.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss
import numpy as np
import numpy.typing as npt
from environment import describe

import ragstore
from ragstore.config import IndexConfig
from ragstore.engine.shape import VectorShape as Generator
from ragstore.engine.shape import normalize
from ragstore.index import ann as ragstore_ann

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "ann.json"
CACHE = ROOT / ".bench-cache" / "ann"
DIM = 384
K = 10
GT_K = 20  # ground truth depth: recall uses the first K, intrinsic dimension all of them
KINDS = ("flat", "hnsw", "ivf", "ivfpq", "sq8", "binary")
COMPRESSION_TARGETS = {"ivfpq": 4.0, "sq8": 4.0, "binary": 30.0}  # times smaller than flat
FRONTIER_RERANKS = (2, 4, 8, 16, 32, 48, 64, 100, 200)  # binary baseline: depths x k
BUCKETS = 1000
FILTERS: dict[str, dict[str, Any]] = {  # selectivity -> filter on {"bucket": i % 1000}
    "50%": {"bucket": {"$lt": 500}},
    "10%": {"bucket": {"$lt": 100}},
    "1%": {"bucket": {"$lt": 10}},
    "0.1%": {"bucket": {"$lt": 1}},
}
TARGET_RECALLS = (0.90, 0.95)
WARMUP = 10
MIN_QUERIES = 100  # timed per setting even past the time budget
FULL_API_QUERIES = 300
UPSERT_POOL_BATCHES = 200  # new vectors made up front: 200 batches, reused in a cycle

Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
Search = Callable[[Matrix], "Ids | list[str]"]
"""One query vector -> ids, best first: row numbers, or ragstore's document ids (row
numbers as text), turned into row numbers after the clock stops."""
Batch = Callable[[Matrix], Ids]  # all query vectors -> (nq, k) ids
Setting = int | None  # ef_search (hnsw) or nprobe (ivf, ivfpq); None: nothing to set


# --------------------------------------------------------------------------- real vectors


def read_real(store: Path, collection: str) -> Matrix:
    """The collection's chunk vectors in chunk-id order, read from SQLite directly."""
    db = store / "ragstore.db"
    if not db.exists():
        raise SystemExit(f"no store at {store}: build it with `ragstore --store {store} eval ...`")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT id FROM collections WHERE name = ?", (collection,)).fetchone()
        if row is None:
            raise SystemExit(f"no collection {collection!r} in {store}")
        blobs = conn.execute(
            "SELECT vector FROM chunks WHERE collection_id = ? ORDER BY id", (row[0],)
        ).fetchall()
    matrix = np.frombuffer(b"".join(b[0] for b in blobs), dtype=np.float32)
    return matrix.reshape(len(blobs), DIM).copy()


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent random streams for the data, the queries and the live upserts."""
    children = np.random.SeedSequence(seed).spawn(3)
    data, queries, upserts = (np.random.default_rng(s) for s in children)
    return data, queries, upserts


# --------------------------------------------------------------------------- data sets


@dataclass
class DataSet:
    """Vectors, held-out queries and exact ground truth, unfiltered and per filter."""

    base: Matrix
    queries: Matrix
    gt_ids: Ids  # (nq, GT_K)
    gt_scores: Matrix
    filtered_gt: dict[str, Ids]  # selectivity -> (nq, K), -1 padded
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of data vectors."""
        return len(self.base)


def buckets(n: int) -> npt.NDArray[np.int64]:
    """Each row's ``bucket`` metadata value."""
    return np.arange(n, dtype=np.int64) % BUCKETS


def allowed_mask(n: int, selectivity: str) -> npt.NDArray[np.bool_]:
    """Rows that the named filter allows (the filters only use ``bucket < t``)."""
    return buckets(n) < FILTERS[selectivity]["bucket"]["$lt"]


def exact_top(base: Matrix, queries: Matrix, k: int, threads: int) -> tuple[Ids, Matrix]:
    """Exact inner-product top-k with FAISS."""
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    scores, ids = index.search(queries, k)
    return ids.astype(np.int64), scores


def filtered_truth(base: Matrix, queries: Matrix, threads: int) -> dict[str, Ids]:
    """Exact top-K over just the rows each filter allows, as row numbers of ``base``."""
    out = {}
    for name in FILTERS:
        rows = np.flatnonzero(allowed_mask(len(base), name))
        ids, _ = exact_top(base[rows], queries, K, threads)
        out[name] = np.where(ids >= 0, rows[np.maximum(ids, 0)], -1)
    return out


def synthetic(
    real: Matrix, args: argparse.Namespace
) -> tuple[DataSet, Generator, np.random.Generator]:
    """The seeded synthetic set (cached), its generator and the upsert stream."""
    digest = hashlib.sha256(real.tobytes()).hexdigest()[:12]
    key = f"real{digest}-c{args.centroids}-seed{args.seed}-n{args.n}-q{args.queries}"
    folder = CACHE / key
    started = time.perf_counter()
    gen = Generator.fit(real, args.centroids, args.seed)
    data_rng, query_rng, upsert_rng = streams(args.seed)
    if (folder / "done").exists():
        data = _load_cached(folder)
        cached = True
    else:
        base = gen.sample(data_rng, args.n)
        queries = gen.sample(query_rng, args.queries)
        data = _with_truth(base, queries, args.threads)
        _save_cached(folder, data)
        cached = False
    data.info = {
        "source": "synthetic",
        "cache_key": key,
        "from_cache": cached,
        "prepare_s": round(time.perf_counter() - started, 1),
        "generator": gen.summary(),
    }
    return data, gen, upsert_rng


def real_only(real: Matrix, args: argparse.Namespace) -> DataSet:
    """The real set: ``--queries`` random chunks held out as queries, the rest as data."""
    queries, base = split_real(real, args.queries, args.seed)
    data = _with_truth(base, queries, args.threads)
    data.info = {"source": "real"}
    return data


def split_real(real: Matrix, queries: int, seed: int) -> tuple[Matrix, Matrix]:
    """(held-out queries, the remaining chunks), both as copies."""
    order = np.random.default_rng(seed).permutation(len(real))
    held = min(queries, len(real) // 5)
    return real[order[:held]].copy(), real[order[held:]].copy()


def _with_truth(base: Matrix, queries: Matrix, threads: int) -> DataSet:
    ids, scores = exact_top(base, queries, GT_K, threads)
    return DataSet(base, queries, ids, scores, filtered_truth(base, queries, threads))


def _save_cached(folder: Path, data: DataSet) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"base": data.base, "queries": data.queries, "gt_ids": data.gt_ids}
    arrays["gt_scores"] = data.gt_scores
    arrays |= {f"filtered_{i}": data.filtered_gt[name] for i, name in enumerate(FILTERS)}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
    (folder / "done").write_text("ok\n")


def _load_cached(folder: Path) -> DataSet:
    def load(name: str) -> Any:
        return np.load(folder / f"{name}.npy", allow_pickle=False)

    filtered = {name: load(f"filtered_{i}") for i, name in enumerate(FILTERS)}
    return DataSet(load("base"), load("queries"), load("gt_ids"), load("gt_scores"), filtered)


# --------------------------------------------------------------------------- statistics


def recall_at_k(found: Ids, truth: Ids) -> float:
    """Mean over queries of |found ∩ true top-K| / K."""
    hits = [
        len(set(f[:K].tolist()) & set(t[:K].tolist()) - {-1})
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / K


def lid_mle(scores: Matrix) -> float:
    """Mean local intrinsic dimensionality (Levina-Bickel MLE) from top-k cosine scores."""
    dist = np.sqrt(np.maximum(2.0 - 2.0 * scores.astype(np.float64), 1e-12))
    ratios = np.log(dist[:, :-1] / dist[:, -1:])
    mean = ratios.mean(axis=1)
    return float(np.mean(-1.0 / mean[mean < 0]))


def neighbour_stats(base: Matrix, queries: Matrix, scores: Matrix, seed: int) -> dict[str, float]:
    """Neighbour cosines, random-pair cosine and intrinsic dimension of a set."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(base), (2, 20_000))
    return {
        "top1_cosine_mean": round(float(scores[:, 0].mean()), 4),
        "top10_cosine_mean": round(float(scores[:, :K].mean()), 4),
        "tenth_cosine_mean": round(float(scores[:, K - 1].mean()), 4),
        "random_pair_cosine_mean": round(float((base[a] * base[b]).sum(1).mean()), 4),
        "query_to_random_cosine_mean": round(float((queries @ base[a[:200]].T).mean()), 4),
        "lid_mle_top20": round(lid_mle(scores), 1),
    }


def percentile(ms: Sequence[float], q: float) -> float:
    """``q``-th percentile, rounded for the report."""
    return round(float(np.percentile(np.asarray(ms), q)), 4)


# --------------------------------------------------------------------------- shape validation


def shape_validation(
    real: Matrix, gen: Generator, params: Params, args: argparse.Namespace
) -> dict[str, Any]:
    """The same statistics and index recalls on real vectors and on synthetic ones of the
    same size (both with held-out queries), so the generator's shape can be judged."""
    queries, base = split_real(real, args.queries, args.seed)
    rng = np.random.default_rng(args.seed + 7)
    sets = {
        "real": (base, queries),
        "synthetic": (gen.sample(rng, len(base)), gen.sample(rng, len(queries))),
    }
    out: dict[str, Any] = {"n": len(base), "queries": len(queries)}
    for name, (b, q) in sets.items():
        ids, scores = exact_top(b, q, GT_K, args.threads)
        row = neighbour_stats(b, q, scores, args.seed)
        row |= _validation_recalls(b, q, ids, params, args.threads)
        out[name] = row
    return out


def _validation_recalls(
    base: Matrix, queries: Matrix, truth: Ids, params: Params, threads: int
) -> dict[str, float]:
    faiss.omp_set_num_threads(threads)
    out = {}
    hnsw = faiss.IndexHNSWFlat(DIM, params.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = params.ef_construction
    hnsw.add(base)
    for ef in (8, 16, 32, 64):
        _, ids = hnsw.search(queries, K, params=faiss.SearchParametersHNSW(efSearch=ef))
        out[f"faiss_hnsw_m{params.m}_ef{ef}_recall"] = round(recall_at_k(ids, truth), 4)
    nlist = max(16, int(np.sqrt(len(base))))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base)
    ivf.add(base)
    for nprobe in (1, 4, 16):
        _, ids = ivf.search(queries, K, params=faiss.SearchParametersIVF(nprobe=nprobe))
        out[f"faiss_ivf{nlist}_nprobe{nprobe}_recall"] = round(recall_at_k(ids, truth), 4)
    return out


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params:
    """Index build and search settings, the same for every engine."""

    m: int
    ef_construction: int
    nlist: int
    pq_m: int
    nbits: int
    rerank: int
    binary_rerank: int
    ef_sweep: tuple[int, ...]
    nprobe_sweep: tuple[int, ...]

    def settings(self, kind: str) -> list[Setting]:
        """The search settings swept for a kind."""
        if kind == "hnsw":
            return list(self.ef_sweep)
        if kind in ("ivf", "ivfpq"):
            return [p for p in self.nprobe_sweep if p <= self.nlist]
        return [None]

    def ragstore_config(self, kind: str) -> dict[str, Any]:
        """The ragstore index config of a kind with these parameters."""
        configs: dict[str, dict[str, Any]] = {
            "flat": {},
            "hnsw": {"m": self.m, "ef_construction": self.ef_construction},
            "ivf": {"nlist": self.nlist},
            "ivfpq": {"nlist": self.nlist, "pq_m": self.pq_m, "nbits": self.nbits},
            "sq8": {"rerank": self.rerank},
            "binary": {"rerank": self.binary_rerank},
        }
        if kind == "ivfpq":
            configs[kind]["rerank"] = self.rerank
        return {"kind": kind, **configs[kind]}


def default_nlist(n: int) -> int:
    """The power of two nearest to sqrt(n)."""
    return int(2 ** round(np.log2(max(np.sqrt(n), 16))))


# --------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """One built index: how to search it at a setting, and what building it cost."""

    build_s: float
    bytes_per_vector: float | None
    single: Callable[[Setting], Search]
    batch: Callable[[Setting], Batch] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def serialized_bytes(write: Callable[[str], None]) -> int:
    """Size of the file that ``write(path)`` writes."""
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as folder:
        path = os.path.join(folder, "index")
        write(path)
        return os.path.getsize(path)


def faiss_engine(kind: str, data: DataSet, params: Params) -> Engine:
    """The kind's index built directly with FAISS."""
    index, sized = _faiss_index(kind, params)
    started = time.perf_counter()
    if not index.is_trained:
        index.train(data.base)
    index.add(data.base)
    build_s = time.perf_counter() - started
    size = serialized_bytes(lambda path: _write_index(sized, path))

    def single(setting: Setting) -> Search:
        p = _faiss_params(kind, setting, params)
        return lambda q: index.search(q[None], K, params=p)[1][0]

    def batch(setting: Setting) -> Batch:
        p = _faiss_params(kind, setting, params)
        return lambda qs: index.search(qs, K, params=p)[1]

    engine = Engine(build_s, size / data.n, single, batch)
    engine.extra["index"] = index
    return engine


def _faiss_index(kind: str, params: Params) -> tuple[Any, Any]:
    """(index to search, index whose serialized size counts)."""
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        flat = faiss.IndexFlatIP(DIM)
        return flat, flat
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(DIM, params.m, ip)
        hnsw.hnsw.efConstruction = params.ef_construction
        return hnsw, hnsw
    if kind == "ivf":
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, params.nlist, ip)
        return ivf, ivf
    if kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(DIM)
        pq = faiss.IndexIVFPQ(quantizer, DIM, params.nlist, params.pq_m, params.nbits, ip)
        return faiss.IndexRefineFlat(pq), pq
    if kind == "binary":
        binary = BinaryRerank(params.binary_rerank)
        return binary, binary.codes
    sq = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, ip)
    return faiss.IndexRefineFlat(sq), sq


def _write_index(index: Any, path: str) -> None:
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, path)
    else:
        faiss.write_index(index, path)


class BinaryRerank:
    """The ``binary`` baseline: FAISS's ``IndexBinaryFlat`` over each vector's sign bits,
    then its ``rerank x k`` nearest by Hamming distance re-ranked with the float vectors,
    which it keeps in RAM as ``IndexRefineFlat`` does. Searched like a FAISS index."""

    is_trained = True

    def __init__(self, rerank: int) -> None:
        self.codes = faiss.IndexBinaryFlat(DIM)
        self.rerank = rerank
        self.base: Matrix = np.empty((0, DIM), dtype=np.float32)

    def add(self, base: Matrix) -> None:
        """Keep the float vectors and add their sign bits."""
        self.base = base
        self.codes.add(sign_bits(base))

    def search(
        self, queries: Matrix, k: int, params: Any = None, rerank: int | None = None
    ) -> tuple[Matrix, Ids]:
        """(scores, ids) of each query's best ``k``, ``-1`` padded; ``params`` (an id
        selector) applies to the Hamming search."""
        depth = k * (rerank or self.rerank)
        _, candidates = self.codes.search(sign_bits(queries), depth, params=params)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = found[found >= 0]
            exact = self.base[found] @ query
            best = np.argsort(-exact, kind="stable")[:k]
            ids[row, : len(best)] = found[best]
            scores[row, : len(best)] = exact[best]
        return scores, ids


def sign_bits(vectors: Matrix) -> npt.NDArray[np.uint8]:
    """One bit per dimension, set where the value is positive, eight to a byte."""
    bits: npt.NDArray[np.uint8] = np.packbits(vectors > 0, axis=1)
    return bits


def _faiss_params(kind: str, setting: Setting, params: Params, sel: Any = None) -> Any:
    """Search parameters for a kind and setting, restricted to ``sel`` if given."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=setting, sel=sel)
    if kind in ("ivf", "ivfpq"):
        inner = faiss.SearchParametersIVF(nprobe=setting, sel=sel)
    else:
        inner = faiss.SearchParameters(sel=sel) if sel is not None else None
    if kind not in ("ivfpq", "sq8"):
        return inner  # binary: BinaryRerank applies its own re-rank depth
    outer = faiss.IndexRefineSearchParameters(k_factor=params.rerank, base_index_params=inner)
    outer.inner = inner  # the outer object does not own it: keep it alive
    return outer


def hnswlib_engine(data: DataSet, params: Params, threads: int, seed: int) -> Engine:
    """hnswlib's HNSW with the same M and ef_construction."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(
        max_elements=data.n, ef_construction=params.ef_construction, M=params.m, random_seed=seed
    )
    index.set_num_threads(threads)
    started = time.perf_counter()
    index.add_items(data.base, np.arange(data.n), num_threads=threads)
    build_s = time.perf_counter() - started
    size = serialized_bytes(index.save_index)

    def single(setting: Setting) -> Search:
        def search(q: Matrix) -> Ids:
            return index.knn_query(q[None], k=K, num_threads=1)[0][0].astype(np.int64)

        index.set_ef(int(setting or 0))
        return search

    def batch(setting: Setting) -> Batch:
        index.set_ef(int(setting or 0))
        return lambda qs: index.knn_query(qs, k=K, num_threads=threads)[0].astype(np.int64)

    return Engine(build_s, size / data.n, single, batch)


class RagstoreAdapter:
    """Every ragstore call the benchmark makes, in one place."""

    def __init__(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self.path = path
        self.store = ragstore.open(path)
        self.col: Any = None
        self.faiss_clock = FaissClock()

    @staticmethod
    def available() -> str | None:
        """Why ragstore cannot be benchmarked here, or None."""
        needed = ("search_vectors", "upsert_vectors", "optimize", "rebuild_index", "index_stats")
        missing = [name for name in needed if not hasattr(ragstore.Collection, name)]
        return f"Collection lacks {', '.join(missing)}" if missing else None

    def create(self, name: str, index: dict[str, Any]) -> None:
        """A new vector collection (no embedder) with this index config."""
        self.col = self.store.create_collection(name, embedder=None, dim=DIM, index=index)

    def upsert(self, ids: list[str], vectors: Matrix, meta: list[dict[str, Any]] | None) -> None:
        """The bulk vector path."""
        self.col.upsert_vectors(ids, vectors, metadata=meta)

    def optimize(self) -> None:
        """Seal and build now; blocks."""
        self.col.optimize()

    def rebuild(self, index: dict[str, Any]) -> None:
        """Switch the index kind and rebuild it from the stored vectors; blocks."""
        self.col.rebuild_index(index)

    def stats(self) -> dict[str, Any]:
        """``index_stats()`` as plain JSON."""
        return json.loads(json.dumps(self.col.index_stats(), default=str))

    def bytes_per_vector(self, stats: dict[str, Any]) -> float | None:
        """Index bytes per vector over all segments."""
        for totals in (stats, stats.get("totals") or {}):
            if totals.get("bytes_per_vector") is not None:
                return float(totals["bytes_per_vector"])
        segments = stats.get("segments") or []
        vectors = sum(s.get("vectors", 0) for s in segments)
        size = sum(s.get("index_bytes", 0) for s in segments)
        return size / vectors if vectors else None

    def search_vectors(
        self, q: Matrix, kind: str, setting: Setting, where: dict[str, Any] | None = None
    ) -> list[str]:
        """The engine layer: ids, best first."""
        ids, _ = self.col.search_vectors(q, k=K, where=where, **self._knobs(kind, setting))
        return list(ids)

    def search(self, q: Matrix, kind: str, setting: Setting) -> list[Any]:
        """The full API: hydrated hits."""
        return list(self.col.search(vector=q, k=K, **self._knobs(kind, setting)))

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    @staticmethod
    def _knobs(kind: str, setting: Setting) -> dict[str, int]:
        if kind == "hnsw":
            return {"ef_search": int(setting or 0)}
        if kind in ("ivf", "ivfpq"):
            return {"nprobe": int(setting or 0)}
        return {}


def as_ids(found: Sequence[str]) -> Ids:
    """ragstore document ids (row numbers as text) as int64, -1 for anything else."""
    return np.array([int(x) if x.isdigit() else -1 for x in found], dtype=np.int64)


def ragstore_load(rs: RagstoreAdapter, data: DataSet, batch: int) -> dict[str, Any]:
    """Create the collection as ``flat`` and upsert every vector with its bucket."""
    rs.create("ann", {"kind": "flat"})
    started = time.perf_counter()
    for start in range(0, data.n, batch):
        stop = min(start + batch, data.n)
        ids = [str(i) for i in range(start, stop)]
        meta = [{"bucket": i % BUCKETS} for i in range(start, stop)]
        rs.upsert(ids, data.base[start:stop], meta)
    load_s = time.perf_counter() - started
    return {
        "vectors": data.n,
        "batch": batch,
        "upsert_vectors_s": round(load_s, 1),
        "vectors_per_s": round(data.n / load_s),
    }


def ragstore_engine(rs: RagstoreAdapter, kind: str, params: Params, first: bool) -> Engine:
    """Build the kind (optimize the fresh flat collection, or rebuild_index)."""
    config = params.ragstore_config(kind)
    started = time.perf_counter()
    if first and kind == "flat":
        rs.optimize()
    else:
        rs.rebuild(config)
    build_s = time.perf_counter() - started
    stats = rs.stats()

    def single(setting: Setting) -> Search:
        return lambda q: rs.faiss_clock.query(lambda: rs.search_vectors(q, kind, setting))

    engine = Engine(build_s, rs.bytes_per_vector(stats), single)
    engine.extra = {"config": config, "index_stats": stats}
    return engine


class FaissClock:
    """How long each ragstore query spent inside FAISS's own search calls.

    A ragstore query's latency minus this is the wrapper's share (Python, planning, id
    mapping); this minus raw FAISS's latency on the same query is what FAISS itself took
    longer on ragstore's copy of the index. From its creation on, every ``ann.search``
    of this process goes through one more Python call and two clock reads.
    """

    def __init__(self) -> None:
        self.per_query: list[float] = []
        self._current = 0.0
        self._search = ragstore_ann.search
        ragstore_ann.search = self._timed

    def query(self, search: Callable[[], Any]) -> Any:
        """Run one ragstore search, recording its time inside FAISS."""
        self._current = 0.0
        try:
            return search()
        finally:
            self.per_query.append(self._current)

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return self._search(*args, **kwargs)
        finally:
            self._current += (time.perf_counter_ns() - t0) / 1e6


# --------------------------------------------------------------------------- timing


def time_interleaved(
    searches: dict[str, Search], queries: Matrix, budget_s: float
) -> dict[str, tuple[list[float], Ids]]:
    """Every engine on every query, one call each, engine order rotated per query; stops
    early once ``budget_s`` is spent and at least ``MIN_QUERIES`` queries ran. Returns per
    engine the milliseconds and ids of the queries that ran (the first ones)."""
    with omp_threads(1):
        return _interleaved(searches, queries, budget_s)


def _interleaved(
    searches: dict[str, Search], queries: Matrix, budget_s: float
) -> dict[str, tuple[list[float], Ids]]:
    names = list(searches)
    for name in names:
        for q in queries[:WARMUP]:
            searches[name](q)
    ms: dict[str, list[float]] = {name: [] for name in names}
    found: dict[str, Ids] = {name: np.full((len(queries), K), -1, np.int64) for name in names}
    started = time.perf_counter()
    ran = 0
    for i, q in enumerate(queries):
        if i >= MIN_QUERIES and time.perf_counter() - started > budget_s:
            break
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter_ns()
            result = searches[name](q)
            ms[name].append((time.perf_counter_ns() - t0) / 1e6)
            ids = as_ids(result) if isinstance(result, list) else result
            found[name][i, : len(ids)] = ids[:K]
        ran = i + 1
    return {name: (ms[name], found[name][:ran]) for name in names}


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP threads for this thread set to ``n`` for a while.

    Single queries run with one: FAISS cannot split one query of these indexes across
    threads, and idle OpenMP workers waiting at a barrier cost ~10 ms per call when the
    other core is busy.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def time_batch(batch: Batch, queries: Matrix) -> float:
    """Queries per second of one call over all queries (after a small warm-up call)."""
    batch(queries[:WARMUP])
    started = time.perf_counter()
    batch(queries)
    return len(queries) / (time.perf_counter() - started)


def sweep(
    kind: str,
    engines: dict[str, Engine],
    data: DataSet,
    params: Params,
    budget_s: float,
    rs_clock: FaissClock | None,
) -> list[dict[str, Any]]:
    """One row per engine and search setting."""
    rows = []
    for setting in params.settings(kind):
        searches = {name: e.single(setting) for name, e in engines.items()}
        timed = time_interleaved(searches, data.queries, budget_s)
        for name, (ms, found) in timed.items():
            row: dict[str, Any] = {"engine": name, "setting": setting, "queries": len(ms)}
            row["recall"] = round(recall_at_k(found, data.gt_ids[: len(found)]), 4)
            row |= {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}
            row["qps_single"] = round(1000.0 * len(ms) / sum(ms), 1)
            if name == "ragstore" and rs_clock is not None:
                row["inside_faiss_p50_ms"] = percentile(rs_clock.per_query[-len(ms) :], 50)
            batch = engines[name].batch
            row["qps_batch"] = round(time_batch(batch(setting), data.queries)) if batch else None
            rows.append(row)
        _print_rows(kind, rows[-len(timed) :])
    return rows


def at_recall(rows: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """Single-query QPS and p50 at ``target`` recall, interpolated between the two settings
    around it; None when no setting reaches it."""
    rows = sorted(rows, key=lambda r: (r["setting"] is None, r["setting"] or 0))
    for i, row in enumerate(rows):
        if row["recall"] < target:
            continue
        if i == 0 or rows[i - 1]["recall"] >= row["recall"]:
            return {"setting": row["setting"], "qps_single": row["qps_single"], **_p50s(row)}
        lo = rows[i - 1]
        t = (target - lo["recall"]) / (row["recall"] - lo["recall"])
        return {
            "setting": row["setting"],
            "interpolated_between": [lo["setting"], row["setting"]],
            "qps_single": round(lo["qps_single"] + t * (row["qps_single"] - lo["qps_single"]), 1),
            **{key: round(lo[key] + t * (row[key] - lo[key]), 4) for key in _p50s(row)},
        }
    return None


def _p50s(row: dict[str, Any]) -> dict[str, Any]:
    """The row's p50 latency, and for ragstore its time inside FAISS."""
    return {key: row[key] for key in ("p50_ms", "inside_faiss_p50_ms") if key in row}


def equal_recall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target recall: each engine's interpolated figures and ragstore / FAISS."""
    out: dict[str, Any] = {}
    engines = sorted({r["engine"] for r in rows})
    for target in TARGET_RECALLS:
        entry: dict[str, Any] = {
            e: at_recall([r for r in rows if r["engine"] == e], target) for e in engines
        }
        rs, fa = entry.get("ragstore"), entry.get("faiss")
        if rs and fa:
            entry["ragstore_over_faiss_qps"] = round(rs["qps_single"] / fa["qps_single"], 3)
        out[f"{target:.2f}"] = entry
    return out


def full_api_p50(
    rs: RagstoreAdapter, kind: str, setting: Setting, data: DataSet, budget_s: float
) -> dict[str, Any]:
    """``Collection.search`` (hydrated hits) beside ``search_vectors`` on the same queries."""
    queries = data.queries[:FULL_API_QUERIES]
    timed = time_interleaved(
        {
            "search_vectors": lambda q: rs.search_vectors(q, kind, setting),
            "search": lambda q: [h.doc_id for h in rs.search(q, kind, setting)],
        },
        queries,
        budget_s,
    )
    return {
        "setting": setting,
        "queries": len(next(iter(timed.values()))[0]),
        **{f"{name}_p50_ms": percentile(ms, 50) for name, (ms, _) in timed.items()},
        **{f"{name}_p99_ms": percentile(ms, 99) for name, (ms, _) in timed.items()},
    }


# --------------------------------------------------------------------------- filters, upserts


def filtered(
    kind: str,
    setting: Setting,
    params: Params,
    rs: RagstoreAdapter | None,
    faiss_index: Any,
    data: DataSet,
    queries: int,
    budget_s: float,
) -> list[dict[str, Any]]:
    """Per selectivity, on the first ``queries`` queries: ragstore's filtered search and
    FAISS with an id selector."""
    rows = []
    for name, where in FILTERS.items():
        mask = allowed_mask(data.n, name)
        searches = {"faiss_selector": _selector_search(kind, setting, params, faiss_index, mask)}
        if rs is not None:
            searches["ragstore"] = _where_search(rs, kind, setting, where)
        timed = time_interleaved(searches, data.queries[:queries], budget_s)
        for engine, (ms, found) in timed.items():
            truth = data.filtered_gt[name][: len(found)]
            returned = (found >= 0).sum(axis=1)
            matching = np.where(found >= 0, mask[np.maximum(found, 0)], True).all()
            rows.append(
                {
                    "selectivity": name,
                    "where": where,
                    "engine": engine,
                    "setting": setting,
                    "queries": len(found),
                    "recall": round(recall_at_k(found, truth), 4),
                    "always_k": bool((returned == K).all()),
                    "queries_short_of_k": int((returned < K).sum()),
                    "all_hits_match": bool(matching),
                    "p50_ms": percentile(ms, 50),
                    "p99_ms": percentile(ms, 99),
                }
            )
            _print_filtered(rows[-1])
    return rows


def _selector_search(
    kind: str, setting: Setting, params: Params, index: Any, mask: npt.NDArray[np.bool_]
) -> Search:
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
    p = _faiss_params(kind, setting, params, sel=selector)
    p.keep = (bitmap, selector)  # the selector reads this memory: keep it alive

    def search(q: Matrix) -> Ids:
        ids: Ids = index.search(q[None], K, params=p)[1][0]
        return ids[ids >= 0]

    return search


def _where_search(rs: RagstoreAdapter, kind: str, setting: Setting, where: Any) -> Search:
    return lambda q: rs.search_vectors(q, kind, setting, where=where)


def upserts_while_searching(
    rs: RagstoreAdapter,
    kind: str,
    setting: Setting,
    gen: Generator | None,
    rng: np.random.Generator,
    data: DataSet,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One thread upserts new vectors in batches while another searches."""
    pool = _new_vectors(gen, rng, data, args.upsert_batch * UPSERT_POOL_BATCHES)
    stop = threading.Event()
    written: list[list[int]] = []  # pool rows of each batch written
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for b in itertools.count():
                if stop.is_set():
                    return
                rows = [(b * args.upsert_batch + i) % len(pool) for i in range(args.upsert_batch)]
                ids = [f"new-{b}-{row}" for row in rows]
                rs.upsert(ids, pool[rows], [{"bucket": BUCKETS} for _ in ids])
                written.append(rows)
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)
            stop.set()

    started = time.perf_counter()
    thread = threading.Thread(target=writer, daemon=True)
    with omp_threads(1):
        latencies = _search_until(rs, kind, setting, data, args.upsert_seconds, thread, stop)
    thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    count = sum(len(rows) for rows in written)
    return {
        "seconds": round(seconds, 1),
        "batch": args.upsert_batch,
        "vectors_upserted": count,
        "upserts_per_s": round(count / seconds),
        "searches": len(latencies),
        "search_p50_ms": percentile(latencies, 50),
        "search_p99_ms": percentile(latencies, 99),
        "new_vectors_found_first": _fresh_found(rs, kind, setting, pool, written),
    }


def _search_until(
    rs: RagstoreAdapter,
    kind: str,
    setting: Setting,
    data: DataSet,
    seconds: float,
    thread: threading.Thread,
    stop: threading.Event,
) -> list[float]:
    """Start ``thread``, search in a loop for ``seconds`` (or until stopped), stop it."""
    latencies: list[float] = []
    started = time.perf_counter()
    thread.start()
    i = 0
    while time.perf_counter() - started < seconds and not stop.is_set():
        t0 = time.perf_counter_ns()
        rs.search_vectors(data.queries[i % len(data.queries)], kind, setting)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        i += 1
    stop.set()
    return latencies


def _new_vectors(
    gen: Generator | None, rng: np.random.Generator, data: DataSet, count: int
) -> Matrix:
    """Vectors that are not in the data set, made before the clock starts."""
    if gen is not None:
        return gen.sample(rng, count)
    rows = data.base[rng.integers(0, data.n, count)]  # real-only: perturbed real chunks
    return normalize(rows + 0.05 * rng.standard_normal(rows.shape).astype(np.float32))


def _fresh_found(
    rs: RagstoreAdapter, kind: str, setting: Setting, pool: Matrix, written: list[list[int]]
) -> str:
    """How many of a sample of the just-upserted vectors come back first for themselves
    (under any id they were written with: the pool repeats when it runs out)."""
    sample = [rows[0] for rows in written[-20:]]
    found = 0
    for row in sample:
        top = rs.search_vectors(pool[row], kind, setting)[:1]
        found += bool(top) and top[0].startswith("new-") and top[0].endswith(f"-{row}")
    return f"{found}/{len(sample)}"


# --------------------------------------------------------------------------- the run


def run_kind(
    kind: str,
    data: DataSet,
    params: Params,
    rs: RagstoreAdapter | None,
    args: argparse.Namespace,
    first: bool,
) -> tuple[dict[str, Any], dict[str, Engine]]:
    """Build every engine for a kind, sweep its settings; the report section."""
    print(f"\n== {kind}: building", flush=True)
    engines = {"faiss": faiss_engine(kind, data, params)}
    if kind == "hnsw" and not args.no_hnswlib:
        engines["hnswlib"] = hnswlib_engine(data, params, args.threads, args.seed)
    if rs is not None:
        engines["ragstore"] = ragstore_engine(rs, kind, params, first)
    builds = {
        name: {"build_s": round(e.build_s, 2), "bytes_per_vector": _round(e.bytes_per_vector)}
        for name, e in engines.items()
    }
    print(f"   {builds}", flush=True)
    rows = sweep(kind, engines, data, params, args.budget, rs.faiss_clock if rs else None)
    section: dict[str, Any] = {"builds": builds, "sweep": rows, "equal_recall": equal_recall(rows)}
    if kind == "binary":
        section["rerank"] = params.binary_rerank
        section["rerank_frontier"] = rerank_frontier(engines["faiss"].extra["index"], data)
    if rs is not None:
        section["ragstore_config"] = engines["ragstore"].extra["config"]
        section["ragstore_index_stats"] = engines["ragstore"].extra["index_stats"]
        setting = chosen_setting(kind, rows, params)
        section["ragstore_full_api"] = full_api_p50(rs, kind, setting, data, args.budget)
    return section, engines


def rerank_frontier(index: BinaryRerank, data: DataSet) -> list[dict[str, Any]]:
    """FAISS's binary baseline at each of ``FRONTIER_RERANKS``: recall@10 over every query
    (one batch call) and single-query p50 over ``MIN_QUERIES`` queries."""
    rows = []
    for rerank in FRONTIER_RERANKS:
        _, found = index.search(data.queries, K, rerank=rerank)
        timed = time_interleaved(
            {"faiss": lambda q, r=rerank: index.search(q[None], K, rerank=r)[1][0]},
            data.queries[:MIN_QUERIES],
            0.0,
        )
        ms, _ = timed["faiss"]
        row = {"rerank": rerank, "candidates": rerank * K, "queries": len(data.queries)}
        row |= {"recall": round(recall_at_k(found, data.gt_ids), 4)}
        row |= {"timed_queries": len(ms), "p50_ms": percentile(ms, 50)}
        print(f"  rerank {rerank:>4}  recall {row['recall']:.4f}  p50 {row['p50_ms']:.3f}")
        rows.append(row)
    return rows


def chosen_setting(kind: str, rows: list[dict[str, Any]], params: Params) -> Setting:
    """The lowest setting at which ragstore (else FAISS) reaches recall 0.95, else the top."""
    settings = params.settings(kind)
    for engine in ("ragstore", "faiss"):
        for setting in settings:
            if any(
                r["engine"] == engine and r["setting"] == setting and r["recall"] >= 0.95
                for r in rows
            ):
                return setting
    return settings[-1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def kinds_in_order(kinds: Sequence[str]) -> list[str]:
    """flat first (the collection is loaded as flat), hnsw last (filters and upserts)."""
    order = {"flat": 0, "ivf": 1, "ivfpq": 2, "sq8": 3, "binary": 4, "hnsw": 5}
    return sorted(kinds, key=order.__getitem__)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare data, measure every kind, filters and live upserts; the JSON report."""
    faiss.omp_set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    real = read_real(args.store, args.collection)
    print(f"real vectors: {len(real):,} from {args.collection}", flush=True)
    gen: Generator | None = None
    if args.real_only:
        data = real_only(real, args)
        upsert_rng = np.random.default_rng(args.seed + 2)
    else:
        data, gen, upsert_rng = synthetic(real, args)
    params = make_params(args, data.n)
    print(f"data: {data.n:,} x {DIM}, {len(data.queries)} queries {data.info}", flush=True)
    report: dict[str, Any] = {"data": _data_section(data, real, args)}
    if gen is not None:
        print("shape validation ...", flush=True)
        report["shape_validation"] = shape_validation(real, gen, params, args)
        print(json.dumps(report["shape_validation"], indent=1), flush=True)
    report["params"] = vars(params) | {"k": K, "threads": args.threads}
    rs = open_ragstore(args, data, report)
    kinds = kinds_in_order(args.kinds)
    engines = measure_kinds(kinds, data, params, rs, args, report)
    last = kinds[-1]
    setting = chosen_setting(last, report["kinds"][last]["sweep"], params)
    if args.filter_queries > 0:
        print(f"\n== filtered queries on {last} at setting {setting}", flush=True)
        faiss_index = engines["faiss"].extra["index"]
        report["filtered"] = filtered(
            last, setting, params, rs, faiss_index, data, args.filter_queries, args.budget
        )
    if rs is not None and args.upsert_seconds > 0:
        print(f"\n== upserts while searching ({last}, {args.upsert_seconds:g} s)", flush=True)
        live = upserts_while_searching(rs, last, setting, gen, upsert_rng, data, args)
        report["upserts_while_searching"] = {"kind": last, "setting": setting, **live}
        print(f"   {live}", flush=True)
    if rs is not None:
        rs.close()
        if not args.keep_store:
            shutil.rmtree(rs.path, ignore_errors=True)
    report["goals"] = goals(report)
    return report


def open_ragstore(
    args: argparse.Namespace, data: DataSet, report: dict[str, Any]
) -> RagstoreAdapter | None:
    """A fresh store holding the data set, or None when ragstore is left out."""
    reason = "--no-ragstore" if args.no_ragstore else RagstoreAdapter.available()
    if reason:
        report["ragstore"] = {"skipped": reason}
        print(f"ragstore skipped: {reason}", flush=True)
        return None
    rs = RagstoreAdapter(CACHE.parent / "ann-store")
    report["ragstore_load"] = ragstore_load(rs, data, args.load_batch)
    if "flat" not in args.kinds:  # seal as flat first, so every kind is a rebuild as usual
        started = time.perf_counter()
        rs.optimize()
        report["ragstore_load"]["optimize_as_flat_s"] = round(time.perf_counter() - started, 1)
    print(f"ragstore load: {report['ragstore_load']}", flush=True)
    return rs


def measure_kinds(
    kinds: list[str],
    data: DataSet,
    params: Params,
    rs: RagstoreAdapter | None,
    args: argparse.Namespace,
    report: dict[str, Any],
) -> dict[str, Engine]:
    """Every kind in turn into ``report["kinds"]``; the last kind's engines stay built."""
    report["kinds"] = {}
    engines: dict[str, Engine] = {}
    for i, kind in enumerate(kinds):
        engines.clear()  # free the previous kind's indexes first
        report["kinds"][kind], engines = run_kind(kind, data, params, rs, args, i == 0)
    return engines


def make_params(args: argparse.Namespace, n: int) -> Params:
    """Parameters from the options (nlist defaults to the power of two nearest sqrt(n))."""
    return Params(
        m=args.m,
        ef_construction=args.ef_construction,
        nlist=args.nlist or default_nlist(n),
        pq_m=args.pq_m,
        nbits=args.nbits,
        rerank=args.rerank,
        binary_rerank=args.binary_rerank or IndexConfig().rerank_for("binary"),
        ef_sweep=tuple(args.ef),
        nprobe_sweep=tuple(args.nprobe),
    )


def _data_section(data: DataSet, real: Matrix, args: argparse.Namespace) -> dict[str, Any]:
    return {
        **data.info,
        "n": data.n,
        "dim": DIM,
        "queries": len(data.queries),
        "seed": args.seed,
        "real_store": str(
            args.store.relative_to(ROOT) if args.store.is_relative_to(ROOT) else args.store
        ),
        "real_collection": args.collection,
        "real_chunks": len(real),
        "ground_truth": "exact inner-product top-k, faiss.IndexFlatIP",
        "filter_metadata": '{"bucket": i % 1000} for row i',
    }


# --------------------------------------------------------------------------- goals, printing


def goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked where this run measured them."""
    kinds = report["kinds"]
    out: dict[str, Any] = {}
    hnsw = kinds.get("hnsw", {}).get("equal_recall", {}).get("0.95", {})
    for engine in ("ragstore", "faiss"):
        row = hnsw.get(engine)
        if row:
            out[f"hnsw_{engine}_recall_0.95_p50_ms_le_1"] = row["p50_ms"] <= 1.0
    for kind, section in kinds.items():
        ratio = section["equal_recall"]["0.95"].get("ragstore_over_faiss_qps")
        if ratio is not None:
            out[f"{kind}_ragstore_qps_within_20pct_of_faiss_at_0.95"] = ratio >= 0.8
    out |= _compression_goals(kinds)
    rows = [r for r in report.get("filtered", []) if r["engine"] == "ragstore"]
    if rows:
        out["filtered_recall_ge_0.95"] = all(r["recall"] >= 0.95 for r in rows)
        out["filtered_always_k_all_matching"] = all(
            r["always_k"] and r["all_hits_match"] for r in rows
        )
    live = report.get("upserts_while_searching")
    if live:
        out["upserts_per_s_ge_10000"] = live["upserts_per_s"] >= 10_000
    return out


def _compression_goals(kinds: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flat = kinds.get("flat", {}).get("builds", {})
    for kind, times in COMPRESSION_TARGETS.items():
        section = kinds.get(kind)
        if section is None:
            continue
        for engine, build in section["builds"].items():
            best = max(r["recall"] for r in section["sweep"] if r["engine"] == engine)
            flat_bpv = (flat.get(engine) or {}).get("bytes_per_vector") or DIM * 4
            if build["bytes_per_vector"]:
                ratio = round(flat_bpv / build["bytes_per_vector"], 2)
                out[f"{kind}_{engine}_flat_over_kind_bytes"] = ratio
                out[f"{kind}_{engine}_{times:g}x_smaller_than_flat"] = ratio >= times
            out[f"{kind}_{engine}_recall_ge_0.90"] = best >= 0.90
    return out


def _print_rows(kind: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        batch = f"{r['qps_batch']:>9}" if r["qps_batch"] is not None else f"{'-':>9}"
        inside = r.get("inside_faiss_p50_ms")
        print(
            f"  {kind:6} {r['engine']:9} {r['setting']!s:>5}  recall {r['recall']:.4f}  "
            f"p50 {r['p50_ms']:8.3f}  p99 {r['p99_ms']:8.3f}  qps1 {r['qps_single']:8.0f}  "
            f"qpsB {batch}" + (f"  in-faiss p50 {inside:.3f}" if inside is not None else ""),
            flush=True,
        )


def _print_filtered(r: dict[str, Any]) -> None:
    print(
        f"  {r['selectivity']:>5} {r['engine']:15} recall {r['recall']:.4f}  "
        f"always_k {r['always_k']!s:5}  match {r['all_hits_match']!s:5}  p50 {r['p50_ms']:.3f}",
        flush=True,
    )


def print_summary(report: dict[str, Any]) -> None:
    """Builds and equal-recall figures per kind, then the goals."""
    print(f"\n{'kind':6} {'engine':9} {'build s':>9} {'B/vec':>8}  @0.95: setting  qps1   p50 ms")
    for kind, section in report["kinds"].items():
        at = section["equal_recall"]["0.95"]
        for engine, build in section["builds"].items():
            row = at.get(engine)
            reached = (
                f"{row['setting'] or 'exact'!s:>14} {row['qps_single']:>6} {row['p50_ms']:>8}"
                if row
                else f"{'not reached':>14}"
            )
            print(
                f"{kind:6} {engine:9} {build['build_s']:9.1f} {build['bytes_per_vector']!s:>8}  "
                + reached
            )
        if "ragstore_over_faiss_qps" in at:
            print(f"{'':16} ragstore/faiss qps at 0.95: {at['ragstore_over_faiss_qps']}")
    print(json.dumps(report["goals"], indent=1))


# --------------------------------------------------------------------------- entry point


def machine(threads: int) -> dict[str, Any]:
    """Where this ran."""
    return describe(
        faiss=faiss.__version__,
        hnswlib=_version("hnswlib"),
        threads=threads,
        faiss_threads=faiss.omp_get_max_threads(),
    )


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(KINDS)}")
    return kinds


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic data vectors")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", type=_kinds, default=list(KINDS), help="comma-separated")
    parser.add_argument("--real-only", action="store_true", help="the real chunks only")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--store", type=Path, default=ROOT / ".eval-store")
    parser.add_argument("--collection", default="eval-scifact", help="source of real vectors")
    parser.add_argument("--centroids", type=int, default=200, help="k-means clusters fitted")
    parser.add_argument("--m", type=int, default=32, help="HNSW M")
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef", type=_ints, default=[16, 32, 64, 128, 256], help="ef_search sweep")
    parser.add_argument("--nlist", type=int, default=0, help="0: power of two nearest sqrt(n)")
    parser.add_argument("--nprobe", type=_ints, default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--pq-m", type=int, default=48)
    parser.add_argument("--nbits", type=int, default=8)
    parser.add_argument("--rerank", type=int, default=32, help="candidates per k re-ranked")
    parser.add_argument(
        "--binary-rerank", type=int, default=0, help="the same for binary; 0: ragstore's default"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of single-query timing per setting (at least 100 queries run)",
    )
    parser.add_argument("--filter-queries", type=int, default=300, help="per selectivity")
    parser.add_argument("--load-batch", type=int, default=10_000)
    parser.add_argument("--upsert-seconds", type=float, default=10.0)
    parser.add_argument("--upsert-batch", type=int, default=1000)
    parser.add_argument("--no-ragstore", action="store_true", help="baselines only")
    parser.add_argument("--no-hnswlib", action="store_true")
    parser.add_argument("--keep-store", action="store_true", help="keep .bench-cache/ann-store")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print, write no JSON")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured kinds in the existing --output, keep the rest",
    )
    args = parser.parse_args()
    if args.merge and not args.output.exists():
        parser.error(f"--merge needs an existing {args.output}")
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    report = {
        "benchmark": "ann",
        "what": (
            "ragstore index kinds beside FAISS built directly and hnswlib, same data, same "
            "process, same threads (single queries: one thread each); recall@10 against "
            "exact search; single-query latency with engines interleaved per query; see "
            "benchmarks/ann.py's docstring"
        ),
        "machine": machine(args.threads),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    report |= run(args)
    report["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if args.merge:
        report = merged(json.loads(args.output.read_text()), report)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    print_summary(report)


def merged(saved: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the kinds this run measured replaced, each carrying this run's
    details, and the goals checked again over every kind."""
    run_info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "same_data_as_saved": report["data"].get("cache_key") == saved["data"].get("cache_key"),
        **{key: report.get(key) for key in _RUN_KEYS},
    }
    last = kinds_in_order(list(report["kinds"]))[-1]
    for kind, section in report["kinds"].items():
        extra = {key: report[key] for key in _LAST_KIND_KEYS if kind == last and key in report}
        saved["kinds"][kind] = section | extra | {"run": run_info}
    saved["kinds"] = {kind: saved["kinds"][kind] for kind in kinds_in_order(saved["kinds"])}
    saved["goals"] = goals(saved)
    return saved


_RUN_KEYS = (
    "machine",
    "loadavg_1m_before",
    "loadavg_1m_after",
    "total_seconds",
    "data",
    "shape_validation",
    "params",
    "ragstore_load",
)
"""What a merged kind records of the run that measured it."""
_LAST_KIND_KEYS = ("filtered", "upserts_while_searching")
"""Sections measured on a run's last kind, kept with that kind when merged."""


if __name__ == "__main__":
    main()
