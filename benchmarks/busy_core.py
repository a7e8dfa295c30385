"""Single-query FAISS scans while another process keeps a core busy: ragstore's searches
(one OpenMP thread in the searching thread) beside FAISS called as it comes (its default,
one OpenMP thread per core), in one run.

FAISS scans a single query in an OpenMP parallel region for the flat, sq8 and binary
kinds and for the Hamming scan of filtered searches. On a server the other cores are
busy with other requests, and the region's barrier waits for a thread the operating
system has descheduled. This benchmark starts a process that spins on one core (a
stand-in for the rest of the server's work), then times, interleaved per query, each
scan through ``ragstore.index.ann`` and the same FAISS call with FAISS's default threads.

    python benchmarks/busy_core.py            # results/busy_core.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from environment import describe

from ragstore.config import IndexConfig
from ragstore.index import ann

RESULTS = Path(__file__).resolve().parent / "results" / "busy_core.json"
DIM = 384
K = 10
SCAN_CANDIDATES = 300


def spin(stop: Any) -> None:
    """Keep one core busy until ``stop`` is set."""
    while not stop.is_set():
        sum(range(10_000))


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def compare(ragstore_call: Callable[[], object], faiss_call: Callable[[], object],
            queries: int) -> dict[str, Any]:  # fmt: skip
    """Medians and p99s of both calls, interleaved per query."""
    ours, theirs = [], []
    for _ in range(queries):
        ours.append(timed(ragstore_call))
        theirs.append(timed(faiss_call))
    return {
        "ragstore_p50_ms": round(statistics.median(ours) * 1e3, 4),
        "faiss_default_threads_p50_ms": round(statistics.median(theirs) * 1e3, 4),
        "ragstore_p99_ms": round(float(np.percentile(ours, 99)) * 1e3, 4),
        "faiss_default_threads_p99_ms": round(float(np.percentile(theirs, 99)) * 1e3, 4),
        "p50_ratio_faiss_over_ragstore": round(
            statistics.median(theirs) / statistics.median(ours), 2
        ),
    }


def scans(n: int, queries: int, rng: np.random.Generator) -> dict[str, Any]:
    """Every single-query scan at ``n`` vectors."""
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[0] + 0.01
    code = ann.binary_codes(query.reshape(1, -1))
    out: dict[str, Any] = {}
    for kind in ("flat", "sq8", "binary"):
        out[kind] = compare(*kind_calls(kind, vectors, query), queries)
    codes = ann.binary_codes(vectors[: n // 10])  # a 10 % filter's sign bits
    out["hamming_scan_10pct"] = compare(
        lambda: ann.hamming_nearest(codes, code[0], SCAN_CANDIDATES),
        lambda: faiss.knn_hamming(code, codes, SCAN_CANDIDATES),
        queries,
    )
    return out


def kind_calls(
    kind: str, vectors: np.ndarray, query: np.ndarray
) -> tuple[Callable[[], object], Callable[[], object]]:
    """ragstore's search of an index of ``kind`` and the plain FAISS call."""
    index = ann.build(kind, vectors, IndexConfig())  # type: ignore[arg-type]
    plain = ann.binary_codes(query.reshape(1, -1)) if kind == "binary" else query.reshape(1, -1)
    return (
        lambda: ann.search(index, kind, query, K, ann.Knobs()),  # type: ignore[arg-type]
        lambda: index.search(plain, K),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        results = {f"{n}": scans(n, args.queries, rng) for n in args.n}
    finally:
        stop.set()
        spinner.join()
    report = {
        "benchmark": "busy_core",
        "what": __doc__.split("\n\n")[0],
        "command": "python " + " ".join(sys.argv),
        "machine": describe(faiss=faiss.__version__, faiss_threads=faiss.omp_get_max_threads()),
        "loadavg_1m": os.getloadavg()[0],
        "queries": args.queries,
        "results": results,
        "total_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
