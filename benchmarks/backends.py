"""The two storage backends side by side: query latency over one large collection, and
the write path, in one run.

Query latency: the ``bench-query`` collection of ``query.py`` (SciFact copied until it
holds ``--target-chunks`` chunks, every vector reused from the store's ``eval-scifact``
collection, so ``ragstore eval`` must have run on each store first) is searched with
``Collection.search(text, k=10)``, query embedding included, on

- ``sqlite``: the embedded store (in-memory segments and BM25 postings);
- ``postgres``: PostgreSQL as the source of truth, the same in-memory indexes derived
  from it (the fast path);
- ``postgres-db``: the same data in a collection of index kind ``pgvector``, searched
  inside PostgreSQL (HNSW with iterative scans, full-text search), no index in memory.

Every case runs on every query once per repeat, in an order rotated per query, so the
machine's noise falls on all backends alike; p50/p99 are medians over repeats.

Write path: ``--ingest-docs`` one-chunk documents with given 384-dim vectors and
metadata, upserted into a fresh collection of each store in batches of 4,096 (one
transaction each), without text and with a 40-word text (whose keyword terms are
computed on the way in). The figure is chunks per second, median of ``--ingest-repeats``.

    python benchmarks/query.py ...   # not needed: this script builds what it uses
    ragstore --store .eval-store eval ../shared/datasets/scifact
    ragstore --store postgresql://... eval ../shared/datasets/scifact
    python benchmarks/backends.py --postgres postgresql://...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment import describe
from query import (
    DATASETS,
    Case,
    build_collection,
    measure,
    read_queries,
)

import ragstore

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "backends.json"
K = 10
CASES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "hybrid/none": ("hybrid", None),
    "dense/none": ("dense", None),
    "keyword/none": ("keyword", None),
    "hybrid/year_gte_2005": ("hybrid", {"year": {"$gte": 2005}}),
    "dense/copy_in_0_1_2": ("dense", {"copy": {"$in": [0, 1, 2]}}),
}
TARGET_RATIO = 1.3
"""Derived-index hybrid p50 on PostgreSQL may be at most this times the embedded one."""
TARGET_WRITE_RATE = 5_000
"""Chunks per second written into PostgreSQL with vectors given."""
WORDS = [
    "refund",
    "shipping",
    "warranty",
    "battery",
    "screen",
    "delivery",
    "order",
    "invoice",
    "customer",
    "support",
    "return",
    "exchange",
    "damaged",
    "parcel",
    "courier",
    "tracking",
    "payment",
    "account",
    "password",
    "security",
]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sqlite", default=str(ROOT / ".eval-store"), help="store directory")
    parser.add_argument("--postgres", required=True, help="postgresql:// URL of a store")
    parser.add_argument("--corpus", default="scifact")
    parser.add_argument("--target-chunks", type=int, default=110_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest-docs", type=int, default=5_000)
    parser.add_argument("--ingest-repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print, write no JSON")
    return parser.parse_args()


def database_collection(
    store: ragstore.Store, corpus_dir: Path, target: int
) -> tuple[ragstore.Collection, dict[str, Any]]:
    """``bench-query-db``: the same data, switched to index kind ``pgvector`` once built
    (one bulk HNSW build rather than one insert at a time)."""
    col, build = build_collection(store, corpus_dir, "bench-query-db", target)
    started = time.perf_counter()
    if col.config.index.kind != "pgvector":
        col.rebuild_index({"kind": "pgvector"})
    return col, {**build.to_dict(), "index_build_s": round(time.perf_counter() - started, 1)}


def search_cases(
    collections: dict[str, ragstore.Collection], queries: list[str]
) -> dict[str, Case]:
    """``backend:mode/filter`` -> one search for query ``i``."""
    cases: dict[str, Case] = {}
    for backend, col in collections.items():
        for name, (mode, where) in CASES.items():
            cases[f"{backend}:{name}"] = _case(col, queries, mode, where)
    return cases


def _case(col: ragstore.Collection, queries: list[str], mode: str, where: Any) -> Case:
    return lambda i: col.search(queries[i], k=K, mode=mode, where=where)  # type: ignore[arg-type]


def write_rates(store: ragstore.Store, docs: int, repeats: int) -> dict[str, Any]:
    """Chunks per second into a fresh vector collection, without and with text."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(docs, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS, size=40).tolist()) for _ in range(docs)]
    rates: dict[str, list[float]] = {"vectors_only": [], "with_text": []}
    for _ in range(repeats):
        for kind in rates:
            col = _fresh(store, "bench-ingest", dim=384)
            started = time.perf_counter()
            if kind == "vectors_only":
                metadata = [{"n": i, "group": i % 10} for i in range(docs)]
                col.upsert_vectors([f"d{i}" for i in range(docs)], vectors, metadata)
            else:
                col.upsert(
                    {"id": f"d{i}", "vector": vectors[i], "text": texts[i], "metadata": {"n": i}}
                    for i in range(docs)
                )
            rates[kind].append(docs / (time.perf_counter() - started))
    store.delete_collection("bench-ingest")
    return {
        kind: {"chunks_per_s": round(statistics.median(r)), "runs": [round(x) for x in r]}
        for kind, r in rates.items()
    }


def _fresh(store: ragstore.Store, name: str, dim: int) -> ragstore.Collection:
    if name in {c.name for c in store.list_collections()}:
        store.delete_collection(name)
    return store.create_collection(name, embedder=None, dim=dim)


def summary(timings: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """p50/p99 per case, and each backend's ratio to the embedded store."""
    table = {name: timings.summary(name) for name in names}
    for name, row in table.items():
        backend, case = name.split(":", 1)
        if backend != "sqlite":
            base = table[f"sqlite:{case}"]["p50_ms"]
            row["p50_ratio_to_sqlite"] = round(row["p50_ms"] / base, 2)
    return table


def main() -> None:
    """Build (or reuse) the collections, measure, print and write the results."""
    args = parse_args()
    corpus_dir = DATASETS / args.corpus
    queries = read_queries(corpus_dir, args.queries)
    with ragstore.open(args.sqlite) as embedded, ragstore.open(args.postgres) as server:
        print("building collections", flush=True)
        collections: dict[str, ragstore.Collection] = {}
        builds: dict[str, Any] = {}
        for backend, store in (("sqlite", embedded), ("postgres", server)):
            col, build = build_collection(store, corpus_dir, "bench-query", args.target_chunks)
            collections[backend], builds[backend] = col, build.to_dict()
        collections["postgres-db"], builds["postgres-db"] = database_collection(
            server, corpus_dir, args.target_chunks
        )
        print("measuring queries", flush=True)
        cases = search_cases(collections, queries)
        timings = measure(cases, len(queries), args.repeats)
        table = summary(timings, list(cases))
        print("measuring the write path", flush=True)
        writes = {
            "sqlite": write_rates(embedded, args.ingest_docs, args.ingest_repeats),
            "postgres": write_rates(server, args.ingest_docs, args.ingest_repeats),
        }
    hybrid_ratio = table["postgres:hybrid/none"]["p50_ratio_to_sqlite"]
    write_rate = writes["postgres"]["vectors_only"]["chunks_per_s"]
    result = {
        "machine": describe(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "postgres")},
        "builds": builds,
        "queries": table,
        "writes": writes,
        "targets": {
            "derived_hybrid_p50_ratio_max": TARGET_RATIO,
            "derived_hybrid_p50_ratio": hybrid_ratio,
            "derived_hybrid_met": hybrid_ratio <= TARGET_RATIO,
            "postgres_write_chunks_per_s_min": TARGET_WRITE_RATE,
            "postgres_write_chunks_per_s": write_rate,
            "postgres_write_met": write_rate >= TARGET_WRITE_RATE,
        },
    }
    print(json.dumps({"queries": table, "writes": writes, "targets": result["targets"]}, indent=2))
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
