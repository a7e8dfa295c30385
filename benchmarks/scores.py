"""How well a search's top score tells a related query from an unrelated one.

The SciFact test queries are asked of the SciFact corpus (related: each has a judged
relevant document there) and the Cranfield queries (aeronautics) of the same corpus
(unrelated). For each mode the script records the top hit's score of every query and
reports the distributions (5th percentile, median, 95th percentile), the share of
(related, unrelated) pairs whose related query scores higher (ROC AUC), and the
threshold that keeps 95 % of the related queries with the share of unrelated ones it
drops. The min-max weighted fusion that hybrid search used before is computed from the
same two sides, for comparison, and both fusions' nDCG@10 and Recall@100 on the test
split are measured (``ragstore eval``'s method: best chunk per document, 100 documents).
Writes ``benchmarks/results/scores.json``. ``--tune`` also scores hybrid search on the
*train* split at several BM25 half-way points (how ``BM25_HALF`` was chosen).

    python benchmarks/scores.py --store .bench-cache/scores   # reuses `ragstore eval`'s store
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from environment import describe

import ragstore
from ragstore.eval import evaluate
from ragstore.eval.beir import BeirDataset, load_beir, read_queries
from ragstore.eval.harness import RUN_DEPTH
from ragstore.eval.metrics import evaluate_run
from ragstore.search import fusion, hybrid, scores

DATASETS = Path(__file__).resolve().parents[2] / "shared/datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "scores.json"
KEPT_SHARE = 0.95
HALVES = (10.0, 20.0, 30.0, 40.0, 50.0)
TopScore = Callable[[str], float]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".bench-cache/scores"))
    parser.add_argument("--related", type=Path, default=DATASETS / "scifact")
    parser.add_argument("--unrelated", type=Path, default=DATASETS / "cranfield-beir")
    parser.add_argument("--tune", action="store_true", help="also score BM25_HALF on train")
    args = parser.parse_args()
    dataset = load_beir(args.related, "test")
    related = list(dataset.queries.values())
    unrelated = list(read_queries(args.unrelated / "queries.jsonl").values())
    started = time.perf_counter()
    with ragstore.open(args.store) as store:
        now = evaluate(store, args.related, modes=["hybrid"]).results[0]
        col = store.collection(f"eval-{dataset.name}")
        former = former_quality(col, dataset)
        modes = {name: separation(top, related, unrelated) for name, top in scorers(col).items()}
        tuning = train_grid(store, args.related) if args.tune else None
    result = describe(
        benchmark="scores",
        related=f"{dataset.name} test queries ({len(related)}) on its corpus",
        unrelated=f"{args.unrelated.name} queries ({len(unrelated)}) on the same corpus",
        hybrid_quality={
            "now": {"ndcg@10": now.ndcg_at_10, "recall@100": now.recall_at_100},
            "min_max_former": former,
        },
        modes=modes,
        bm25_half_on_train=tuning,
        seconds=round(time.perf_counter() - started, 1),
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def train_grid(store: ragstore.Store, dataset_dir: Path) -> dict[str, dict[str, float]]:
    """Hybrid nDCG@10 and Recall@100 on the train split at each half-way point in HALVES."""
    grid = {}
    for half in HALVES:
        with bm25_half(half):
            [result] = evaluate(store, dataset_dir, modes=["hybrid"], split="train").results
        grid[str(half)] = {"ndcg@10": result.ndcg_at_10, "recall@100": result.recall_at_100}
        print(half, grid[str(half)], flush=True)
    return grid


@contextmanager
def bm25_half(half: float) -> Iterator[None]:
    """Hybrid search with another BM25 half-way point, for the duration of the block."""
    original = scores.saturated
    scores.saturated = partial(original, half=half)
    try:
        yield
    finally:
        scores.saturated = original


def scorers(col: ragstore.Collection) -> dict[str, TopScore]:
    """The top hit's score of a text query, for each mode (and the former hybrid score)."""

    def top(mode: hybrid.Mode) -> TopScore:
        return lambda text: first_score(col.search(text, k=1, mode=mode))

    return {
        "dense": top("dense"),
        "keyword": top("keyword"),
        "hybrid": top("hybrid"),
        "hybrid_min_max_former": lambda text: min_max_top(col, text),
    }


def first_score(hits: Sequence[ragstore.Hit]) -> float:
    """The best hit's score; a search with no hit scores 0."""
    return hits[0].score if hits else 0.0


def min_max_top(col: ragstore.Collection, text: str) -> float:
    """The top score of the former default fusion over the candidates of a hybrid
    search of ``k`` 10."""
    fused = former_fusion(col, text, hybrid.search_params(False).candidates)
    return fused[0][2] if fused else 0.0


def former_fusion(col: ragstore.Collection, text: str, depth: int) -> list[tuple[str, str, float]]:
    """``(chunk id, document id, score)`` of the former default hybrid fusion (min-max
    normalised weighted sum, alpha 0.5) of ``depth`` candidates a side, best first."""
    sides = [col.search(text, k=depth, mode=mode) for mode in ("dense", "keyword")]
    document = {hit.chunk_id: hit.doc_id for side in sides for hit in side}
    lists = [[(hit.chunk_id, hit.score) for hit in side] for side in sides]
    return [(chunk, document[chunk], score) for chunk, score in fusion.weighted(lists, [0.5, 0.5])]


def former_quality(col: ragstore.Collection, dataset: BeirDataset) -> dict[str, float]:
    """nDCG@10 and Recall@100 of the former fusion, as ``ragstore eval`` scores a mode:
    each document by its best chunk, the best 100 documents."""
    depth = hybrid.search_params(False, k=RUN_DEPTH, group_by_doc=True).candidates
    run: dict[str, dict[str, float]] = {}
    for qid, text in dataset.queries.items():
        best: dict[str, float] = {}
        for _chunk, document, score in former_fusion(col, text, depth):
            best.setdefault(document, score)
            if len(best) == RUN_DEPTH:
                break
        run[qid] = best
    metrics = evaluate_run(run, dataset.qrels, ndcg_k=10, recall_k=RUN_DEPTH)
    return {"ndcg@10": round(metrics["ndcg@10"], 4), "recall@100": round(metrics["recall@100"], 4)}


def separation(top: TopScore, related: list[str], unrelated: list[str]) -> dict[str, Any]:
    """Top-score distributions of both query sets, ROC AUC and a 95 %-recall threshold."""
    ours = np.array([top(text) for text in related])
    theirs = np.array([top(text) for text in unrelated])
    threshold = float(np.quantile(ours, 1.0 - KEPT_SHARE))
    return {
        "related": percentiles(ours),
        "unrelated": percentiles(theirs),
        "auc": round(auc(ours, theirs), 4),
        "threshold_keeping_95pct_related": round(threshold, 4),
        "unrelated_dropped_at_it": round(float(np.mean(theirs < threshold)), 4),
    }


def percentiles(values: np.ndarray) -> dict[str, float]:
    """5th percentile, median and 95th percentile, rounded."""
    p5, p50, p95 = np.percentile(values, [5, 50, 95]).tolist()
    return {"p5": round(p5, 4), "median": round(p50, 4), "p95": round(p95, 4)}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The share of (positive, negative) pairs ordered right, ties counting half."""
    greater = (positive[:, None] > negative[None, :]).mean()
    equal = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * equal)


if __name__ == "__main__":
    main()
