"""Choose the hybrid fusion settings on SciFact's *train* split (never on test).

Runs ``ragstore.eval.evaluate`` in hybrid mode over a small grid of RRF constants and
dense-side weights (and weighted score fusion), and writes every point and the best one
to ``benchmarks/results/fusion_tuning.json``. The collection ``eval-scifact`` is reused
if ``ragstore eval`` already built it in the same store.

    python benchmarks/tune_fusion.py --store .eval-store
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ragstore
from ragstore.eval import evaluate
from ragstore.search.hybrid import Fusion

DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"
RESULTS = Path(__file__).resolve().parent / "results" / "fusion_tuning.json"
GRID: list[tuple[Fusion, int, float]] = [
    ("rrf", 60, 0.5),
    ("rrf", 20, 0.5),
    ("rrf", 100, 0.5),
    ("rrf", 60, 0.4),
    ("rrf", 60, 0.6),
    ("weighted", 60, 0.5),
    ("weighted", 60, 0.7),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".eval-store"))
    parser.add_argument("--dataset", type=Path, default=DATASET)
    args = parser.parse_args()
    points: list[dict[str, Any]] = []
    with ragstore.open(args.store) as store:
        for fusion, rrf_k, alpha in GRID:
            report = evaluate(
                store,
                args.dataset,
                modes=["hybrid"],
                split="train",
                fusion=fusion,
                rrf_k=rrf_k,
                alpha=alpha,
            )
            [result] = report.results
            point = {
                "fusion": fusion,
                "rrf_k": rrf_k,
                "alpha": alpha,
                "ndcg@10": result.ndcg_at_10,
                "recall@100": result.recall_at_100,
            }
            print(point, flush=True)
            points.append(point)
    best = max(points, key=lambda p: p["ndcg@10"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"split": "train", "dataset": "scifact", "grid": points, "best": best}, indent=2)
        + "\n"
    )
    print("best:", best)


if __name__ == "__main__":
    main()
