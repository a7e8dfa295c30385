"""Query embedding latency: sentence-transformers on torch against the ONNX Runtime
encoders, fp32 and int8.

What it measures, in one run, on the same queries (the SciFact test queries by default),
each call on one thread: ``SentenceTransformer.encode([query])`` with torch at one thread
(the baseline), and ``MiniLMEmbedder.embed_query`` on ONNX Runtime (tokenize, ONNX graph
with pooling and L2 norm, one intra-op thread) with ``query_precision="fp32"`` and with
``"int8"`` (the default). Every query runs every case once per repeat, in an order rotated
per query; p50/p99 are taken per repeat and the report gives their median over repeats.
Then each case runs alone over all queries, back to back (``latency_case_alone``):
interleaved, each call starts where another encoder left the CPU caches, so the two
tables bracket what a search sees. It also reports how close each encoder's vectors are
to torch's (cosine, max abs difference) and the one-off cost of the first query:
exporting (and quantizing) the model, or loading the cached files.

The files go to a fresh temporary cache folder unless ``--cache`` names one.

    python benchmarks/embed_query.py
    python benchmarks/embed_query.py --queries 50 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import onnxruntime
import torch
from environment import describe

from ragstore.embed.local import MODEL_CACHE_ENV, MiniLMEmbedder
from ragstore.embed.onnx_query import QueryPrecision
from ragstore.embed.sentence_transformers import torch_threads as _torch_threads
from ragstore.eval.beir import load_beir

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "embed_query.json"
WARMUP_QUERIES = 10

Case = Callable[[str], object]


def read_queries(dataset: Path, count: int) -> list[str]:
    """The first ``count`` test-split query texts of a BEIR dataset."""
    return list(load_beir(dataset, "test").queries.values())[:count]


def cases(fp32: MiniLMEmbedder, int8: MiniLMEmbedder) -> dict[str, Case]:
    """The torch baseline and the two ONNX encoders."""
    model = fp32._model

    def st_encode(text: str) -> object:
        return model.encode(
            [text], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    return {
        "st_encode_1thread": st_encode,
        "onnx_fp32": fp32.embed_query,
        "onnx_int8": int8.embed_query,
    }


def measure(
    cases: Mapping[str, Case], queries: list[str], repeats: int, *, interleaved: bool
) -> dict[str, Any]:
    """Every case on every query, ``repeats`` times: case order rotated per query when
    ``interleaved``, else each case over all queries before the next case."""
    names = list(cases)
    for name in names:
        for query in queries[:WARMUP_QUERIES]:
            cases[name](query)
    samples: dict[str, list[list[float]]] = {name: [[] for _ in range(repeats)] for name in names}
    for repeat in range(repeats):
        if interleaved:
            order = [
                (name, query)
                for i, query in enumerate(queries)
                for name in names[(i + repeat) % len(names) :] + names[: (i + repeat) % len(names)]
            ]
        else:
            order = [(name, query) for name in names for query in queries]
        for name, query in order:
            samples[name][repeat].append(time_call(name, cases[name], query))
    return {name: summary(per_repeat) for name, per_repeat in samples.items()}


def time_call(name: str, case: Case, query: str) -> float:
    """Milliseconds of one call; the baseline's switch to one torch thread is not timed."""
    with _torch_threads(1) if name == "st_encode_1thread" else nullcontext():
        t0 = time.perf_counter_ns()
        case(query)
        return (time.perf_counter_ns() - t0) / 1e6


def summary(per_repeat: list[list[float]]) -> dict[str, Any]:
    """p50/p99/mean per repeat and their medians over repeats."""
    stats = [
        {"p50_ms": np.percentile(ms, 50), "p99_ms": np.percentile(ms, 99), "mean_ms": np.mean(ms)}
        for ms in per_repeat
    ]
    out: dict[str, Any] = {
        key: round(float(statistics.median(s[key] for s in stats)), 3)
        for key in ("p50_ms", "p99_ms", "mean_ms")
    }
    out["calls"] = sum(len(ms) for ms in per_repeat)
    out["p50_ms_per_repeat"] = [round(float(s["p50_ms"]), 3) for s in stats]
    return out


def agreement(embedder: MiniLMEmbedder, queries: list[str]) -> dict[str, float]:
    """How close the embedder's query vectors are to the torch ones (``embed_documents``)."""
    onnx = np.stack([embedder.embed_query(q) for q in queries])
    reference = embedder.embed_documents(queries)
    cosines = np.sum(onnx * reference, axis=1)
    return {
        "cosine_mean": round(float(cosines.mean()), 6),
        "cosine_min": round(float(cosines.min()), 6),
        "max_abs_diff": float(np.abs(onnx - reference).max()),
    }


def first_query_seconds(precision: QueryPrecision) -> float:
    """A new embedder's first ``embed_query`` (making or loading its files)."""
    embedder = MiniLMEmbedder(query_precision=precision)
    started = time.perf_counter()
    embedder.embed_query("warm up")
    return round(time.perf_counter() - started, 3)


def machine() -> dict[str, Any]:
    """Where this ran."""
    return describe(
        torch=torch.__version__,
        torch_threads_default=torch.get_num_threads(),
        onnxruntime=onnxruntime.__version__,
    )


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASETS / "scifact")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="ONNX export cache (default: a fresh one)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print, write no JSON")
    return parser.parse_args()


def run(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Time the three encoders on the same queries; the JSON report."""
    os.environ[MODEL_CACHE_ENV] = str(cache)
    queries = read_queries(args.dataset, args.queries)
    first_use = {
        "export_fp32_s": first_query_seconds("fp32"),
        "quantize_int8_s": first_query_seconds("int8"),
        "cached_fp32_s": first_query_seconds("fp32"),
        "cached_int8_s": first_query_seconds("int8"),
    }
    print(f"  first use: {first_use}", flush=True)
    fp32 = MiniLMEmbedder(query_precision="fp32")
    int8 = MiniLMEmbedder(query_precision="int8")
    tokens = [len(fp32.token_offsets(q)) + 2 for q in queries]
    load = os.getloadavg()
    started = time.perf_counter()
    latency = measure(cases(fp32, int8), queries, args.repeats, interleaved=True)
    alone = measure(cases(fp32, int8), queries, args.repeats, interleaved=False)
    seconds = time.perf_counter() - started
    return {
        "benchmark": "embed_query",
        "what": (
            "one-query embedding latency on one thread: sentence-transformers encode "
            "(baseline) and ragstore's embed_query on ONNX Runtime, fp32 and int8"
        ),
        "machine": machine(),
        "dataset": args.dataset.name,
        "queries": len(queries),
        "tokens_per_query": {"median": statistics.median(tokens), "max": max(tokens)},
        "repeats": args.repeats,
        "statistic": "p50/p99 per repeat over all queries; reported: median over repeats",
        "query_runtime": {"fp32": fp32.query_runtime, "int8": int8.query_runtime},
        "first_use": first_use,
        "loadavg_1m_before_after": [round(load[0], 2), round(os.getloadavg()[0], 2)],
        "measure_seconds": round(seconds, 1),
        "latency": latency,
        "latency_case_alone": alone,
        "speedup_p50_over_st_encode": {
            table: {
                case: round(t["st_encode_1thread"]["p50_ms"] / t[case]["p50_ms"], 2)
                for case in ("onnx_fp32", "onnx_int8")
            }
            for table, t in (("interleaved", latency), ("case_alone", alone))
        },
        "vs_torch": {"fp32": agreement(fp32, queries), "int8": agreement(int8, queries)},
    }


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragstore-models-") as fresh:
        report = run(args, args.cache or Path(fresh))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    for table in ("latency", "latency_case_alone"):
        for name, row in report[table].items():
            print(
                f"  {table:18} {name:18} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms"
            )
    print(json.dumps({k: report[k] for k in ("first_use", "vs_torch")}, indent=2))
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
