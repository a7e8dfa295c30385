"""``plan --calibrate``: what an index costs on this machine, measured.

For each index kind and each size step, vectors shaped like a real collection's
(:class:`~ragstore.engine.shape.VectorShape`) are sealed into a segment the way a store
seals one (:func:`ragstore.index.segments.build_files`, timed: the build time), and a
fresh process loads it and searches it on one core (:func:`measure_segment`): the
process memory the segment takes (``RssAnon``), its files, and for each search breadth
the recall@10 against exact search and the mean latency. The same process times
filtered searches at 1 % and 10 % of the vectors allowed. From the collection itself
come the query embedding time, the passages embedded per second on one core and the
cost of reading hits. :mod:`ragstore.engine.plan` fits its models to these points.

How far a graph or list search must reach for a recall grows with how crowded the
space around a query is, and a small sample of a collection is not crowded like the
whole. So the kinds with a search breadth are also measured on **patches**
(:func:`measure_patches`): at the largest size, vectors drawn from only the mixture
components nearest one component (a ``1 / density`` share of them), with the queries
from the inner quarter of those, so every query's neighbourhood is as crowded as in a
collection ``density`` times larger. The recall an index reaches on a patch stands for
that larger collection's (``benchmarks/plan.py``: patches put the ``ef_search`` for
recall 0.95 at 20 and 42 where 300k and 1M vectors needed 23.6 and 46; the sample sizes
alone said 22 and 37, and left IVF-PQ's ``nprobe`` at 1 where 1M vectors needed 2.7).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from ragstore.config import IndexConfig, IndexKind
from ragstore.engine.shape import VectorShape
from ragstore.errors import InvalidInput
from ragstore.index import ann, segments
from ragstore.index.base import one_blas_thread
from ragstore.index.matching import Matching
from ragstore.store.sqlite.db import DB_FILENAME
from ragstore.types import Ids, Matrix

if TYPE_CHECKING:
    from ragstore.engine.store import Collection, Store

faiss: Any = _faiss

CALIBRATION_VERSION = 2
K = 10
SIZES = (25_000, 50_000, 100_000)
MIN_SIZE = 1_000
"""The smallest size step measured."""
KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivf", "ivfpq", "sq8", "binary")
SWEEPS: dict[str, tuple[int, ...]] = {
    "hnsw": (10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    "ivf": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
    "ivfpq": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
}
"""Search breadths timed per kind (``ef_search`` for hnsw, ``nprobe`` for the IVF kinds)."""
PATCH_DENSITIES = (3, 10, 30)
"""How many times more crowded than the largest size each patch is: it stands for a
collection that many times larger."""
PATCHES = 2
"""Patches drawn per density, around different components: regions differ."""
SELECTIVITIES = (0.01, 0.1)
"""Shares of the vectors a timed filtered search may return."""
QUERIES = 200
WARMUP = 20
REPEATS = 5
QUICK_BUILD_S = 15.0
QUICK_BUILD_REPEATS = 3
"""A build quicker than ``QUICK_BUILD_S`` is timed this many times, the fastest kept."""
MIN_REAL_VECTORS = 1_000
"""Fewer real vectors than this cannot shape the synthetic ones."""
SHAPE_CENTROIDS = 800
EMBED_PASSAGES = 32
EMBED_QUERIES = 30
HIT_READ_PASSES = 5
QUERY_WORDS = 12
"""Words of a document's opening timed as a query: queries are short."""


def rss() -> dict[str, int]:
    """This process's resident memory in bytes: ``anon`` (heap, index structures) and
    ``file`` (mapped files' pages); zeros where ``/proc`` does not say."""
    found = {"anon": 0, "file": 0}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    found["anon"] = int(line.split()[1]) * 1024
                elif line.startswith("RssFile:"):
                    found["file"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found


@dataclass(frozen=True)
class SegmentJob:
    """One built segment to measure in a fresh process."""

    root: str
    row: segments.SegmentRow
    dim: int
    config: IndexConfig
    queries: Matrix
    truth: Ids
    settings: tuple[int | None, ...]


def measure_segment(job: SegmentJob) -> dict[str, Any]:
    """Load the segment, then time searches on one core (run in a fresh process)."""
    faiss.omp_set_num_threads(1)
    before = rss()
    segment = segments.load(Path(job.root), job.row, job.dim)
    loaded = rss()
    sweep = [_timed_sweep(segment, job, setting) for setting in job.settings]
    searched = rss()
    filtered = [_timed_filtered(segment, job, share) for share in SELECTIVITIES]
    after = rss()
    return {
        "anon_bytes": loaded["anon"] - before["anon"],
        "anon_bytes_after_search": searched["anon"] - before["anon"],
        "anon_bytes_after_filtered": after["anon"] - before["anon"],
        "file_resident_after_search": after["file"] - before["file"],
        "sweep": sweep,
        "filtered": filtered,
    }


def _search_call(
    segment: segments.SealedSegment,
    kind: IndexKind,
    config: IndexConfig,
    setting: int | None,
    allowed: Matching | None,
) -> Callable[[Matrix], Ids]:
    knobs = ann.Knobs(
        ef_search=setting if kind == "hnsw" else None,
        nprobe=setting if kind in ("ivf", "ivfpq") else None,
    )

    def search(query: Matrix) -> Ids:
        return segment.search(query, K, allowed, knobs, config).ids

    return search


def _time_queries(search: Callable[[Matrix], Ids], queries: Matrix) -> tuple[list[Ids], float]:
    """Every query's ids and the mean seconds per query on one core. Each query is
    timed in :data:`REPEATS` passes and its median kept, so a burst of another
    process's work on a shared machine (which spans one pass, not most) does not count
    as this index's cost."""
    times = np.empty((REPEATS, len(queries)))
    found: list[Ids] = []
    with one_blas_thread():
        for query in queries[:WARMUP]:
            search(query)
        for rep in range(REPEATS):
            found = []
            for i, query in enumerate(queries):
                started = time.perf_counter()
                found.append(search(query))
                times[rep, i] = time.perf_counter() - started
    return found, float(np.median(times, axis=0).mean())


def _timed_sweep(
    segment: segments.SealedSegment, job: SegmentJob, setting: int | None
) -> dict[str, Any]:
    search = _search_call(segment, job.row.kind, job.config, setting, None)
    found, seconds = _time_queries(search, job.queries)
    return {"setting": setting, "recall": _recall(found, job.truth), "ms": round(seconds * 1e3, 4)}


def _timed_filtered(
    segment: segments.SealedSegment, job: SegmentJob, share: float
) -> dict[str, Any]:
    chosen = np.random.default_rng(7).random(segment.size) < share
    allowed = Matching(segment.size, dense=chosen & segment.live)
    default = job.settings[len(job.settings) // 2]
    search = _search_call(segment, job.row.kind, job.config, default, allowed)
    _, seconds = _time_queries(search, job.queries)
    return {"share": share, "setting": default, "ms": round(seconds * 1e3, 4)}


def measure_patches(
    kind: IndexKind,
    shape: VectorShape,
    n: int,
    config: IndexConfig,
    workdir: Path,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Recall of ``kind`` at each breadth on :data:`PATCHES` patches of ``n`` vectors per
    density in :data:`PATCH_DENSITIES`: one point per density, for the collection of
    ``n * density`` vectors it stands for. An IVF patch gets ``1 / density`` of that
    collection's lists, so its lists are as full."""
    points = []
    for density in PATCH_DENSITIES:
        emulated = n * density
        lists = max(1, round(ann.nlist_for(emulated, config) / density))
        patch_config = config.model_copy(update={"nlist": lists})
        found: list[list[Ids]] = []  # per query, per breadth
        truths: list[Ids] = []
        for _ in range(PATCHES):
            region, inner = shape.patch(density, rng)
            base, queries = region.sample(rng, n), inner.sample(rng, QUERIES)
            truth = exact_truth(base, queries)
            found.extend(_patch_search(kind, base, queries, patch_config, workdir))
            truths.append(truth)
        truth = np.concatenate(truths)
        sweep = [
            {"setting": setting, "recall": _recall([f[i] for f in found], truth)}
            for i, setting in enumerate(SWEEPS[kind])
        ]
        points.append({"n": emulated, "vectors": n, "density": density, "patches": PATCHES,
                       "queries": PATCHES * QUERIES, "sweep": sweep})  # fmt: skip
    return points


def _patch_search(
    kind: IndexKind, base: Matrix, queries: Matrix, config: IndexConfig, workdir: Path
) -> list[list[Ids]]:
    """Per query, the ids found at each breadth of the kind's sweep (untimed)."""
    n = len(base)
    root = workdir / f"patch-{kind}-{n}"
    ids = np.arange(n, dtype=np.int64)
    built, files = segments.build_files(root, kind, ids, base, ["patch"] * n, config)
    segment = segments.load(root, segments.SegmentRow(0, built, n, 0, n - 1, files), base.shape[1])
    calls = [_search_call(segment, kind, config, setting, None) for setting in SWEEPS[kind]]
    try:
        return [[search(query) for search in calls] for query in queries]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _recall(found: Sequence[Ids], truth: Ids) -> float:
    hits = [len(set(f.tolist()) & set(t[:K].tolist())) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / K, 4)


def exact_truth(base: Matrix, queries: Matrix, k: int = K) -> Ids:
    """Exact inner-product top-``k`` rows for each query."""
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    _, rows = index.search(queries, k)
    truth: Ids = rows.astype(np.int64)
    return truth


def measure_kind(
    kind: IndexKind,
    base: Matrix,
    queries: Matrix,
    truth: Ids,
    config: IndexConfig,
    workdir: Path,
) -> dict[str, Any]:
    """Build a segment of ``kind`` over ``base`` (timed) and measure it in a fresh process."""
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    docs = [f"doc-{i:08d}" for i in range(n)]
    root = workdir / f"{kind}-{n}"
    build_s = float("inf")
    for _ in range(QUICK_BUILD_REPEATS):  # a quick build is timed again: noise dominates it
        started = time.perf_counter()
        built, files = segments.build_files(root, kind, ids, base, docs, config)
        build_s = min(build_s, time.perf_counter() - started)
        if build_s > QUICK_BUILD_S:
            break
        segments.remove_files(root, files["dir"])
    else:
        built, files = segments.build_files(root, kind, ids, base, docs, config)
    row = segments.SegmentRow(0, built, n, 0, n - 1, files)
    directory = root / files["dir"]
    file_bytes = {path.name: path.stat().st_size for path in directory.iterdir()}
    job = SegmentJob(str(root), row, dim, config, queries, truth, SWEEPS.get(kind, (None,)))
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        measured = pool.submit(measure_segment, job).result()
    shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "kind": built, "build_s": round(build_s, 3), "files": file_bytes, **measured}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "system": platform.platform(),
        "python": platform.python_version(),
        "faiss": getattr(faiss, "__version__", None),
    }


def collection_vectors(col: Collection, limit: int = 50_000) -> Matrix:
    """Up to ``limit`` of the collection's stored vectors, evenly spread over it."""
    vectors = _sample(col, limit)
    if len(vectors) < MIN_REAL_VECTORS:
        raise InvalidInput(
            f"collection {col.name!r} holds {len(vectors)} vectors; calibration needs "
            f"at least {MIN_REAL_VECTORS} to shape its test vectors like yours",
            field="collection",
        )
    return vectors


def _sample(col: Collection, count: int) -> Matrix:
    with col.backend.read() as reader:
        return as_matrix(reader.sample_vectors(col.id, count, col.config.dim, 0))


def costs_of_collection(col: Collection) -> dict[str, Any]:
    """Query embedding time, passages embedded per second on one core, and the time a
    full search spends beyond the index (reading the hits), on the collection itself."""
    import torch  # the embedders' threads; imported here to keep plan --help light

    vectors = _sample(col, EMBED_QUERIES)
    texts = [doc.text or "" for doc in col.peek(EMBED_PASSAGES)]
    if col.embedder is None:
        raise InvalidInput(f"collection {col.name!r} embeds nothing itself", field="collection")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = col.embedder
        questions = [" ".join(text.split()[:QUERY_WORDS]) for text in texts[:EMBED_QUERIES]]
        query_s = _median_s(embedder.embed_query, questions)
        started = time.perf_counter()
        embedder.embed_documents(texts)
        passages_per_s = len(texts) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return {
        "embedder": col.config.embedder,
        "query_embed_ms": round(query_s * 1e3, 3),
        "passages_per_s_per_core": round(passages_per_s, 2),
        "hit_read_ms": round(_hit_read_s(col, vectors) * 1e3, 4),
        "chunk_text_bytes": _chunk_text_bytes(col, vectors),
    }


def store_bytes_per_chunk(store: Store) -> float | None:
    """The store's database bytes per chunk (vectors, text, metadata, keyword terms), or
    ``None`` for a store that is not a directory or holds no chunks."""
    if store.path is None:
        return None
    chunks = sum(info.chunks for info in store.list_collections())
    files = [store.path / DB_FILENAME, store.path / f"{DB_FILENAME}-wal"]
    size = sum(path.stat().st_size for path in files if path.exists())
    return round(size / chunks, 1) if chunks else None


def serving_process(embedder: str | None) -> dict[str, Any]:
    """Resident bytes of a fresh process that imported ragstore and embedded one query
    with ``embedder``: what a serving process costs before any index."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return {"process_bytes": pool.submit(_serving_rss, embedder).result()}


def _serving_rss(embedder: str | None) -> int:
    from ragstore.embed import get_embedder

    if embedder is not None:
        get_embedder(embedder).embed_query("how much memory does a serving process take?")
    found = rss()
    return found["anon"] + found["file"]


def _chunk_text_bytes(col: Collection, vectors: Matrix) -> float:
    """Mean UTF-8 size of a chunk's text, over the hits of a few searches."""
    sizes = [len(hit.text.encode()) for v in vectors[:5] for hit in col.search(vector=v, k=K)]
    return round(statistics.mean(sizes), 1) if sizes else 0.0


def _hit_read_s(col: Collection, vectors: Matrix) -> float:
    """What a full search (hits with text and metadata) costs beyond the lean one (ids
    and scores): the median of the two timed back to back on the same vector, over
    :data:`HIT_READ_PASSES` passes. A difference of two separate medians drowns in the
    search's own noise."""
    extra = []
    with one_blas_thread():
        for _ in range(HIT_READ_PASSES):
            for vector in vectors:
                started = time.perf_counter()
                col.search_vectors(vector, K)
                lean = time.perf_counter() - started
                started = time.perf_counter()
                col.search(vector=vector, k=K, mode="dense")
                extra.append(time.perf_counter() - started - lean)
    return max(statistics.median(extra), 0.0) if extra else 0.0


def _median_s(call: Callable[[Any], Any], items: Sequence[Any]) -> float:
    times = []
    with one_blas_thread():
        for item in items:
            started = time.perf_counter()
            call(item)
            times.append(time.perf_counter() - started)
    return statistics.median(times) if times else 0.0


def calibrate(
    real: Matrix,
    *,
    sizes: Sequence[int] = SIZES,
    kinds: Sequence[IndexKind] = KINDS,
    config: IndexConfig | None = None,
    seed: int = 0,
    source: str = "",
    costs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every kind at every size on vectors shaped like ``real``; the calibration
    record :mod:`ragstore.engine.plan` reads."""
    config = config or IndexConfig()
    say = progress or (lambda _: None)
    shape = VectorShape.fit(real, SHAPE_CENTROIDS, seed)
    streams = np.random.SeedSequence(seed).spawn(3)
    data_rng, query_rng, patch_rng = (np.random.default_rng(s) for s in streams)
    largest = shape.sample(data_rng, max(sizes))
    queries = shape.sample(query_rng, QUERIES)
    points: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="ragstore-calibrate-") as tmp:
        for n in sorted(sizes):
            base = np.ascontiguousarray(largest[:n])
            truth = exact_truth(base, queries)
            for kind in kinds:
                say(f"{kind} at {n:,} vectors")
                points[kind].append(measure_kind(kind, base, queries, truth, config, Path(tmp)))
        patches = {}
        for kind in (kind for kind in kinds if kind in SWEEPS):
            say(f"{kind} on patches of {max(sizes):,} vectors")
            patches[kind] = measure_patches(kind, shape, max(sizes), config, Path(tmp), patch_rng)
    return {
        "version": CALIBRATION_VERSION,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "build_threads": faiss.omp_get_max_threads(),
        "dim": int(real.shape[1]),
        "k": K,
        "queries": QUERIES,
        "source": source,
        "shape": shape.summary(),
        "index": config.model_dump(),
        "kinds": points,
        "patches": patches,
        "costs": costs or {},
    }


def as_matrix(rows: npt.ArrayLike) -> Matrix:
    """``rows`` as a C-contiguous float32 matrix."""
    return np.ascontiguousarray(rows, dtype=np.float32)


def calibrate_store(
    store: Store,
    collection: str | None = None,
    *,
    sizes: Sequence[int] = SIZES,
    kinds: Sequence[IndexKind] = KINDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`calibrate` on vectors shaped like ``collection``'s (default: the store's
    collection with the most chunks), with that collection's embedding and hit costs."""
    if collection is None:
        infos = sorted(store.list_collections(), key=lambda info: info.chunks)
        if not infos:
            raise InvalidInput(
                "the store holds no collection to shape the test vectors: ingest documents "
                "first, or name one with --collection",
                field="collection",
            )
        collection = infos[-1].name
    col = store.get_collection(collection)
    real = collection_vectors(col)
    costs = serving_process(col.config.embedder)
    if col.config.embedder is not None:
        costs |= costs_of_collection(col)
    costs["store_bytes_per_chunk"] = store_bytes_per_chunk(store)
    source = f"collection {col.name!r} ({len(real):,} vectors sampled)"
    return calibrate(real, sizes=sizes, kinds=kinds, source=source, costs=costs,
                     progress=progress)  # fmt: skip
