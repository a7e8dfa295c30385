"""Peers: ragstore beside Qdrant's in-process engine (``qdrant-edge``), on the same
vectors, in one process, single-threaded queries, engines timed back to back.

Data. By default ``benchmarks/ann.py``'s realistic set: N (``--n``, default 200,000)
seeded 384-d vectors drawn from a Gaussian mixture fitted to the real all-MiniLM-L6-v2
chunk vectors of SciFact (collection ``eval-scifact`` in ``.eval-store/``, built by
``ragstore --store .eval-store eval ../shared/datasets/scifact``), ``--queries`` held-out
queries from a separate stream of the same generator, exact inner-product top-k ground
truth, unfiltered and per filter; cached under ``.bench-cache/ann/`` (shared with
``ann.py``: same key, same files). ``--random`` instead draws a seeded clustered random
set (random unit centroids, power-law residual spectrum): no store needed, but not shaped
like real embeddings, and labelled ``"source": "random"`` in the report; it is for
trying the script, and is never written to ``results/peers.json``. Each vector carries
``{"bucket": i % 1000}``, so ``bucket < 500 / 100 / 10 / 1`` keep 50 / 10 / 1 / 0.1 %.

Engines. ragstore: one vector collection (``embedder=None``), loaded as ``flat`` with
``upsert_vectors`` (ids ``"0"``..., the bucket as metadata) in ``--load-batch`` batches,
then switched to ``hnsw`` (``--m``, ``--ef-construction``, default ef ``--ef-search``) by
``rebuild_index``, which builds one HNSW over every vector. qdrant-edge: one
``EdgeShard`` with its own defaults (HNSW M 16, ef_construct 100, full-scan threshold
10,000 KB, segment count chosen by its optimizer; ``--qdrant-m`` / ``--qdrant-segments``
override), cosine distance, and an integer payload index with range lookups on
``bucket`` (a keyword index only matches strings; an integer index with ``range=True`` is
the one a ``bucket < t`` range condition uses), created before any point so the segments
are built with it; points upserted in the same batches (``Point(id, vector, payload)``),
then ``EdgeShard.optimize()``, which builds the HNSW segments and their payload indexes.
Build time is load plus index build, per engine, each with every core (FAISS's OpenMP
threads = ``--threads``; qdrant's indexing threads: its automatic count).

Queries. One query per call, one thread per engine: FAISS's OpenMP threads set to 1
around the timed loop (as ``ann.py`` does) and the shard made with
``max_search_threads=1`` (qdrant's search pool size, which otherwise fans a query out
over its segments). Every engine runs at every ef of ``--ef`` and both engines'
defaults; at its own default an engine is given no ef at all (ragstore's ``ef_search``
and qdrant's ``hnsw_ef`` unset; qdrant then uses its ``ef_construct``). Per ef, the two
engines run on the same query back to back, in an order rotated per query (ann.py's
``time_interleaved``), once per API: the lean one (ragstore ``search_vectors``: ids and
scores; qdrant ``search`` without payload: ids), then the full one (ragstore ``search``:
hydrated hits, each hit's metadata read; qdrant ``search`` with payload, each point's
payload read). One pass per API, so no search follows the same engine's other API on
the same query and finds that query's part of the index already in the CPU caches.
Recall@10 is against exact top-10; latency is per query in ms (p50, p99); a setting
stops after ``--budget`` seconds once 100 queries ran. Filtered: the same passes at each
engine's default ef, at 50/10/1/0.1 % selectivity, recall against exact top-10 over the
allowed rows, plus whether every query got 10 hits and all of them match.

Equal recall. ragstore filtered p50 / qdrant filtered p50 at 1 % and 10 % (lean and full
API; both recalls must be >= 0.95, and are stated), and ragstore full-API unfiltered p50
at the lowest ef reaching recall@10 >= 0.99, against qdrant's full-API p50 at its
default ef (whatever recall it reaches there) and at its lowest ef reaching 0.99.

    python benchmarks/peers.py                       # 200k real-shaped -> results/peers.json
    python benchmarks/peers.py --n 20000 --no-write  # smoke check, a few minutes
    python benchmarks/peers.py --random --no-write   # no .eval-store needed
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ann
import faiss
import numpy as np
import qdrant_edge as qe
from ann import Ids, Matrix, Search
from environment import describe

import ragstore
from ragstore.config import IndexConfig
from ragstore.engine.shape import VectorShape, normalize

ROOT = ann.ROOT
RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
STORES = ROOT / ".bench-cache" / "peers"
DIM, K = ann.DIM, ann.K
FILTERS = ann.FILTERS  # selectivity -> ragstore filter on {"bucket": i % 1000}
COMPARED = ("1%", "10%")  # selectivities of the filtered equal-recall comparison
FILTERED_RECALL, FULL_API_RECALL = 0.95, 0.99
QDRANT_DEFAULTS = {"m": 16, "ef_construct": 100, "full_scan_threshold_kb": 10_000}
RANDOM_SPREAD = 0.7  # --random: residual norm around each centroid

Ef = int | None  # None: the engine's own default


# --------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> ann.DataSet:
    """The realistic set of ``ann.py`` (cached), or the ``--random`` one."""
    if args.random:
        return random_clustered(args)
    real = ann.read_real(args.store, args.collection)
    data, _, _ = ann.synthetic(real, args)
    store = args.store.relative_to(ROOT) if args.store.is_relative_to(ROOT) else args.store
    data.info |= {"real_store": str(store), "real_collection": args.collection}
    data.info["real_chunks"] = len(real)
    return data


def random_clustered(args: argparse.Namespace) -> ann.DataSet:
    """Seeded clustered random unit vectors (not fitted to real ones), with ground truth."""
    rng = np.random.default_rng(args.seed)
    spectrum = 1.0 / np.arange(1, DIM + 1)  # residual variance per direction, power law
    shape = VectorShape(
        centroids=normalize(rng.standard_normal((args.centroids, DIM))),
        weights=np.full(args.centroids, 1.0 / args.centroids),
        scales=np.full(args.centroids, RANDOM_SPREAD),
        chol=np.diag(np.sqrt(spectrum / spectrum.sum())),
    )
    data_rng, query_rng, _ = ann.streams(args.seed)
    base, queries = shape.sample(data_rng, args.n), shape.sample(query_rng, args.queries)
    ids, scores = ann.exact_top(base, queries, ann.GT_K, args.threads)
    data = ann.DataSet(base, queries, ids, scores, ann.filtered_truth(base, queries, args.threads))
    data.info = {
        "source": "random",
        "note": "clustered random vectors, NOT shaped like real embeddings: for trying the script",
        "generator": shape.summary(),
    }
    return data


# --------------------------------------------------------------------------- engines


class RagstoreEngine:
    """One ragstore vector collection, loaded flat, then rebuilt as ``hnsw``."""

    name = "ragstore"

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self.path = path
        self.index = index
        self.store = ragstore.open(path)
        self.col = self.store.create_collection(
            "peers", embedder=None, dim=DIM, index={"kind": "flat"}
        )
        self.default_ef = int(index["ef_search"])

    def build(self, data: ann.DataSet, batch: int) -> dict[str, Any]:
        """Upsert every vector with its bucket, then build the HNSW index; timings."""
        started = time.perf_counter()
        for start in range(0, data.n, batch):
            stop = min(start + batch, data.n)
            ids = [str(i) for i in range(start, stop)]
            meta = [{"bucket": i % ann.BUCKETS} for i in range(start, stop)]
            self.col.upsert_vectors(ids, data.base[start:stop], metadata=meta)
        loaded = time.perf_counter()
        self.col.rebuild_index(self.index)
        return _build_times(started, loaded, time.perf_counter())

    def lean(self, ef: Ef, selectivity: str | None) -> Search:
        """``search_vectors``: ids, best first."""
        where = FILTERS[selectivity] if selectivity else None
        ef = _knob(ef, self.default_ef)
        return lambda q: self.col.search_vectors(q, k=K, where=where, ef_search=ef)[0]

    def full(self, ef: Ef, selectivity: str | None) -> Search:
        """``search``: hydrated hits; each hit's metadata is read, as a caller would."""
        where = FILTERS[selectivity] if selectivity else None
        ef = _knob(ef, self.default_ef)

        def search(q: Matrix) -> list[str]:
            hits = self.col.search(vector=q, k=K, where=where, ef_search=ef)
            return [h.doc_id for h in hits if h.metadata["bucket"] is not None]

        return search

    def describe(self) -> dict[str, Any]:
        """The index configuration and ``index_stats()``."""
        stats = json.loads(json.dumps(self.col.index_stats(), default=str))
        return {"index": self.index, "default_ef": self.default_ef, "index_stats": stats}

    def close(self) -> None:
        """Close the store and delete it."""
        self.store.close()
        shutil.rmtree(self.path, ignore_errors=True)


class QdrantEngine:
    """One qdrant-edge shard with an integer range index on ``bucket``."""

    name = "qdrant"

    def __init__(self, path: Path, m: int, segments: int) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self.path = path
        hnsw = None
        if m:
            hnsw = qe.HnswIndexConfig(
                m=m,
                ef_construct=QDRANT_DEFAULTS["ef_construct"],
                full_scan_threshold=QDRANT_DEFAULTS["full_scan_threshold_kb"],
            )
        self.config = {
            "hnsw": {**QDRANT_DEFAULTS, "m": m or QDRANT_DEFAULTS["m"]},
            "default_segment_number": segments or "auto",
            "payload_index": {"bucket": "integer, lookup=False, range=True"},
            "max_search_threads": 1,
        }
        self.default_ef = QDRANT_DEFAULTS["ef_construct"]
        self.shard = qe.EdgeShard.create(
            str(path),
            qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
                hnsw_config=hnsw,
                optimizers=qe.EdgeOptimizersConfig(default_segment_number=segments or None),
                max_search_threads=1,
            ),
        )
        range_index = qe.IntegerIndexParams(lookup=False, range=True)
        self.shard.update(qe.UpdateOperation.create_field_index("bucket", range_index))
        self.filters = {
            name: qe.Filter(
                must=[
                    qe.FieldCondition(
                        "bucket", range=qe.RangeFloat(lt=float(where["bucket"]["$lt"]))
                    )
                ]
            )
            for name, where in FILTERS.items()
        }

    def build(self, data: ann.DataSet, batch: int) -> dict[str, Any]:
        """Upsert every point with its bucket, then run the optimizers; timings."""
        started = time.perf_counter()
        for start in range(0, data.n, batch):
            stop = min(start + batch, data.n)
            rows = data.base[start:stop].tolist()
            points = [
                qe.Point(i, row, {"bucket": i % ann.BUCKETS})
                for i, row in zip(range(start, stop), rows, strict=True)
            ]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        loaded = time.perf_counter()
        self.shard.optimize()
        return _build_times(started, loaded, time.perf_counter())

    def lean(self, ef: Ef, selectivity: str | None) -> Search:
        """``search`` without payload: ids, best first."""
        request = self._request(ef, selectivity, with_payload=False)

        def search(q: Matrix) -> Ids:
            points = self.shard.search(request(q))
            return np.fromiter((p.id for p in points), np.int64, len(points))

        return search

    def full(self, ef: Ef, selectivity: str | None) -> Search:
        """``search`` with payload; each point's payload is read, as a caller would."""
        request = self._request(ef, selectivity, with_payload=True)

        def search(q: Matrix) -> Ids:
            points = self.shard.search(request(q))
            return np.fromiter((p.id for p in points if _bucket(p.payload) >= 0), np.int64)

        return search

    def _request(
        self, ef: Ef, selectivity: str | None, with_payload: bool
    ) -> Callable[[Matrix], qe.SearchRequest]:
        params = qe.SearchParams(hnsw_ef=_knob(ef, self.default_ef))
        flt = self.filters[selectivity] if selectivity else None
        return lambda q: qe.SearchRequest(
            query=qe.Query.Nearest(q.tolist()),  # a list converts 3x faster than an array
            limit=K,
            filter=flt,
            params=params,
            with_payload=with_payload,
        )

    def describe(self) -> dict[str, Any]:
        """The configuration and ``info()``: segments, indexed vectors, payload index."""
        info = self.shard.info()
        schema = {
            key: {"type": str(value.data_type), "points": value.points}
            for key, value in info.payload_schema.items()
        }
        return {
            "config": self.config,
            "default_ef": self.default_ef,
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "payload_schema": schema,
        }

    def close(self) -> None:
        """Close the shard and delete it."""
        self.shard.close()
        shutil.rmtree(self.path, ignore_errors=True)


Engine = RagstoreEngine | QdrantEngine


def _knob(ef: Ef, default: int) -> Ef:
    """None (the engine's own default) for its default ef, so the default path runs."""
    return None if ef == default else ef


def _bucket(payload: dict[str, Any] | None) -> int:
    """A point's ``bucket`` (reading it makes qdrant hand the payload over), -1 if none."""
    return int((payload or {}).get("bucket", -1))


def _build_times(started: float, loaded: float, built: float) -> dict[str, float]:
    return {
        "load_s": round(loaded - started, 2),
        "index_s": round(built - loaded, 2),
        "build_s": round(built - started, 2),
    }


# --------------------------------------------------------------------------- measuring


APIS = ("lean", "full")


def timed_apis(
    engines: Sequence[Engine], ef: Ef, selectivity: str | None, data: ann.DataSet, budget: float
) -> dict[tuple[str, str], tuple[list[float], Ids]]:
    """(engine, api) -> (ms, ids) per query: one interleaved pass per API, so a search
    never runs right after the same engine's other API on the same query (which would
    find that query's part of the index already in the CPU caches)."""
    out: dict[tuple[str, str], tuple[list[float], Ids]] = {}
    for api in APIS:
        calls = {e.name: getattr(e, api)(ef, selectivity) for e in engines}
        timed = ann.time_interleaved(calls, data.queries, budget)
        out |= {(engine, api): result for engine, result in timed.items()}
    return out


def unfiltered(
    engines: Sequence[Engine], data: ann.DataSet, efs: Sequence[int], budget: float
) -> list[dict[str, Any]]:
    """One row per engine, API and ef (``--ef`` and both defaults), no filter."""
    defaults = {e.name: e.default_ef for e in engines}
    rows = []
    for ef in sorted({*efs, *defaults.values()}):
        for (engine, api), (ms, found) in timed_apis(engines, ef, None, data, budget).items():
            row: dict[str, Any] = {"engine": engine, "api": api, "ef": ef}
            row |= {"default": ef == defaults[engine], "queries": len(ms)}
            row["recall"] = round(ann.recall_at_k(found, data.gt_ids[: len(found)]), 4)
            row |= {"p50_ms": ann.percentile(ms, 50), "p99_ms": ann.percentile(ms, 99)}
            rows.append(row)
            _print_row(row)
    return rows


def filtered(engines: Sequence[Engine], data: ann.DataSet, budget: float) -> list[dict[str, Any]]:
    """One row per selectivity, engine and API, at each engine's default ef."""
    rows = []
    for name, where in FILTERS.items():
        mask = ann.allowed_mask(data.n, name)
        for (engine, api), (ms, found) in timed_apis(engines, None, name, data, budget).items():
            returned = (found >= 0).sum(axis=1)
            matching = np.where(found >= 0, mask[np.maximum(found, 0)], True).all()
            truth = data.filtered_gt[name][: len(found)]
            row: dict[str, Any] = {"selectivity": name, "where": where, "engine": engine}
            row["api"] = api
            row |= {"queries": len(found), "recall": round(ann.recall_at_k(found, truth), 4)}
            row |= {"always_k": bool((returned == K).all()), "all_hits_match": bool(matching)}
            row["queries_short_of_k"] = int((returned < K).sum())
            row |= {"p50_ms": ann.percentile(ms, 50), "p99_ms": ann.percentile(ms, 99)}
            rows.append(row)
            _print_row(row)
    return rows


def _pick(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(key) == value for key, value in match.items())]


def _lowest_ef_at(rows: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    """The row with the lowest effective ef whose recall reaches ``recall``."""
    reached = [r for r in rows if r["recall"] >= recall]
    return min(reached, key=lambda r: r["ef"]) if reached else None


def _versus(rs: dict[str, Any] | None, qd: dict[str, Any] | None) -> dict[str, Any] | None:
    if rs is None or qd is None:
        return None
    keep = ("ef", "recall", "p50_ms", "p99_ms")
    return {
        "ragstore": {key: rs[key] for key in keep if key in rs},
        "qdrant": {key: qd[key] for key in keep if key in qd},
        "ragstore_over_qdrant_p50": round(rs["p50_ms"] / qd["p50_ms"], 2),
    }


def equal_recall(sweep: list[dict[str, Any]], flt: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparisons the report leads with (see the module docstring)."""
    out: dict[str, Any] = {}
    for name in COMPARED:
        for api in APIS:
            rs = _pick(flt, selectivity=name, engine="ragstore", api=api)[0]
            qd = _pick(flt, selectivity=name, engine="qdrant", api=api)[0]
            entry: dict[str, Any] = _versus(rs, qd) or {}
            entry["both_recall_ge_0.95"] = min(rs["recall"], qd["recall"]) >= FILTERED_RECALL
            out[f"filtered_{name}_{api}"] = entry
    full = _lowest_ef_at(_pick(sweep, engine="ragstore", api="full"), FULL_API_RECALL)
    qdrant_full = _pick(sweep, engine="qdrant", api="full")
    out["unfiltered_full_vs_qdrant_default"] = _versus(full, _pick(qdrant_full, default=True)[0])
    out["unfiltered_full_vs_qdrant_0.99"] = _versus(
        full, _lowest_ef_at(qdrant_full, FULL_API_RECALL)
    )
    if full is None:
        out["note"] = "ragstore's full API reached recall 0.99 at no ef swept"
    return out


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the data, build both engines, measure; the report's body."""
    faiss.omp_set_num_threads(args.threads)
    data = load_data(args)
    print(f"data: {data.n:,} x {DIM}, {len(data.queries)} queries, {data.info}", flush=True)
    report: dict[str, Any] = {"data": _data_section(data, args), "params": _params(args)}
    STORES.mkdir(parents=True, exist_ok=True)
    index = {"kind": "hnsw", "m": args.m, "ef_construction": args.ef_construction}
    index["ef_search"] = args.ef_search
    engines: list[Engine] = [
        RagstoreEngine(STORES / "ragstore", index),
        QdrantEngine(STORES / "qdrant", args.qdrant_m, args.qdrant_segments),
    ]
    try:
        report["builds"] = {}
        for engine in engines:
            print(f"building {engine.name} ...", flush=True)
            report["builds"][engine.name] = engine.build(data, args.load_batch)
            report["builds"][engine.name] |= engine.describe()
            print(f"   {report['builds'][engine.name]}", flush=True)
        print("\nunfiltered (recall@10, single queries, ms)", flush=True)
        report["unfiltered"] = unfiltered(engines, data, args.ef, args.budget)
        print("\nfiltered, each engine's default ef", flush=True)
        report["filtered"] = filtered(engines, data, args.budget)
    finally:
        for engine in engines:
            engine.close()
    report["equal_recall"] = equal_recall(report["unfiltered"], report["filtered"])
    return report


def _data_section(data: ann.DataSet, args: argparse.Namespace) -> dict[str, Any]:
    return {
        **data.info,
        "n": data.n,
        "dim": DIM,
        "queries": len(data.queries),
        "seed": args.seed,
        "centroids": args.centroids,
        "ground_truth": "exact inner-product top-10, faiss.IndexFlatIP, per filter too",
        "metadata": '{"bucket": i % 1000} for row i',
    }


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "k": K,
        "ragstore_hnsw": {"m": args.m, "ef_construction": args.ef_construction},
        "ragstore_default_ef": args.ef_search,
        "qdrant_hnsw": {**QDRANT_DEFAULTS, "m": args.qdrant_m or QDRANT_DEFAULTS["m"]},
        "ef_sweep": args.ef,
        "budget_s_per_setting": args.budget,
        "build_threads": args.threads,
        "query_threads": 1,
        "load_batch": args.load_batch,
    }


# --------------------------------------------------------------------------- printing


def _print_row(r: dict[str, Any]) -> None:
    label = r.get("selectivity") or f"ef {r['ef']:>3}{'*' if r['default'] else ' '}"
    extra = ""
    if "always_k" in r:
        extra = f"  short of k {r['queries_short_of_k']:>4}  all match {r['all_hits_match']!s:5}"
    print(
        f"  {label:>17} {r['engine']:8} {r['api']:4}  recall {r['recall']:.4f}  "
        f"p50 {r['p50_ms']:7.3f}  p99 {r['p99_ms']:7.3f}{extra}",
        flush=True,
    )


def print_summary(report: dict[str, Any]) -> None:
    """Builds, then the equal-recall comparisons."""
    print(f"\n{'engine':9} {'load s':>8} {'index s':>8} {'build s':>8}")
    for name, b in report["builds"].items():
        print(f"{name:9} {b['load_s']:8.1f} {b['index_s']:8.1f} {b['build_s']:8.1f}")
    heads = ("ragstore p50 (recall)", "qdrant p50 (recall)", "ratio")
    print(f"\n{'comparison':36} {heads[0]:>22} {heads[1]:>22} {heads[2]:>6}")
    for name, entry in report["equal_recall"].items():
        if not isinstance(entry, dict) or "ragstore" not in entry:
            print(f"{name:36} {entry}")
            continue
        rs, qd = entry["ragstore"], entry["qdrant"]
        flag = "" if entry.get("both_recall_ge_0.95", True) else "  (recall < 0.95)"
        print(
            f"{name:36} {rs['p50_ms']:>12.3f} ({rs['recall']:.4f}) {qd['p50_ms']:>12.3f} "
            f"({qd['recall']:.4f}) {entry['ragstore_over_qdrant_p50']:>6}{flag}"
        )


# --------------------------------------------------------------------------- entry point


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="data vectors")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--random", action="store_true", help="clustered random data, no store")
    parser.add_argument("--store", type=Path, default=ROOT / ".eval-store")
    parser.add_argument("--collection", default="eval-scifact", help="source of real vectors")
    parser.add_argument("--centroids", type=int, default=200, help="mixture clusters")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    defaults = IndexConfig()
    parser.add_argument("--m", type=int, default=defaults.m, help="ragstore HNSW M")
    parser.add_argument("--ef-construction", type=int, default=defaults.ef_construction)
    parser.add_argument(
        "--ef-search", type=int, default=defaults.ef_search, help="ragstore's default ef"
    )
    parser.add_argument("--ef", type=_ints, default=[32, 64, 128, 256], help="ef sweep, both")
    parser.add_argument("--qdrant-m", type=int, default=0, help="0: qdrant's default (16)")
    parser.add_argument(
        "--qdrant-segments", type=int, default=0, help="0: qdrant's optimizer decides"
    )
    parser.add_argument("--load-batch", type=int, default=10_000)
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds of timing per setting (>= 100 queries)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print, write no JSON")
    args = parser.parse_args()
    if args.random and not args.no_write and args.output == RESULTS:
        parser.error(f"--random data is never written to {RESULTS.name}: add --no-write")
    return args


def ragstore_commit() -> str | None:
    """The checkout's HEAD, ``+dirty`` when ``src/`` differs from it; None outside git.
    ragstore's figures move with its code, so the report says which code ran."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if diff.returncode else "")


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "peers",
        "what": (
            "ragstore beside qdrant-edge (Qdrant's in-process engine), same vectors, same "
            "process; single queries on one thread each, engines interleaved per query; "
            "recall@10 against exact search; see benchmarks/peers.py's docstring"
        ),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": describe(
            faiss=faiss.__version__,
            qdrant_edge=importlib_metadata.version("qdrant-edge-py"),
            threads=args.threads,
        ),
        "ragstore_commit": ragstore_commit(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    report |= run(args)
    report["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    print_summary(report)


if __name__ == "__main__":
    main()
