"""Capacity planner validation: calibrate small, predict large, then build large and measure.

In one run (``python benchmarks/plan.py``):

1. **Calibrate** exactly as ``ragstore plan --calibrate`` does, at 25k/50k/100k vectors
   shaped like SciFact's chunk embeddings (the ``eval-scifact`` collection that
   ``ragstore --store .eval-store eval ../shared/datasets/scifact`` builds), plus the
   query embedding and hit reading costs measured on that collection.
2. **Predict** with ``ragstore.engine.plan`` at 300k and 1M vectors for ``hnsw``,
   ``ivfpq`` and ``binary``: process memory of the index, single-core queries/s at recall
   0.95 (0.90 for the compressed kinds) and build time.
3. **Measure** the same figures on segments built at those sizes from the same generator,
   with the calibration's own code (one fresh process per segment, one core).

The target: every prediction within 20 % of the measurement. Results go to
``benchmarks/results/plan.json``; ``--ship`` also writes the calibration ragstore ships
(``src/ragstore/engine/calibration.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from environment import describe

import ragstore
from ragstore.config import IndexConfig
from ragstore.engine import calibrate as cal
from ragstore.engine import plan
from ragstore.engine.shape import VectorShape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "plan.json"
SHIPPED = ROOT / "src" / "ragstore" / "engine" / "calibration.json"
TARGETS = {"hnsw": 0.95, "ivfpq": 0.90, "binary": 0.90}
TOLERANCE = 0.20


def measured_at_recall(point: dict[str, Any], recall: float) -> dict[str, Any]:
    """The breadth reaching ``recall`` in a measured sweep and the latency there
    (interpolated in log breadth between the two breadths around it)."""
    sweep = sorted(point["sweep"], key=lambda r: r["setting"] or 0)
    if sweep[0]["setting"] is None:
        return {"setting": None, "recall": sweep[0]["recall"], "ms": sweep[0]["ms"]}
    breadth = plan.breadth_for(sweep, recall)
    if breadth is None:
        return {"setting": None, "recall": None, "ms": None}
    settings = [r["setting"] for r in sweep]
    hi = next(i for i, s in enumerate(settings) if s >= breadth)
    if hi == 0 or settings[hi] == breadth:
        return {"setting": round(breadth, 1), "recall": recall, "ms": sweep[hi]["ms"]}
    lo = hi - 1
    t = np.log(breadth / settings[lo]) / np.log(settings[hi] / settings[lo])
    ms = sweep[lo]["ms"] + t * (sweep[hi]["ms"] - sweep[lo]["ms"])
    return {"setting": round(breadth, 1), "recall": recall, "ms": round(float(ms), 4)}


def compare(predicted: float | None, measured: float | None) -> dict[str, Any]:
    """Both figures and the prediction's error relative to the measurement."""
    if predicted is None or measured is None or measured == 0:
        return {"predicted": predicted, "measured": measured, "error": None, "within": False}
    error = (predicted - measured) / measured
    return {"predicted": round(predicted, 4), "measured": round(measured, 4),
            "error": round(error, 4), "within": abs(error) <= TOLERANCE}  # fmt: skip


def validate(
    kind: str, n: int, calibration: dict[str, Any], measured: dict[str, Any]
) -> dict[str, Any]:
    """Prediction against measurement for one kind at one size."""
    model = plan.models(calibration)[kind]
    recall = TARGETS[kind]
    target = plan.Target(vectors=n, recall=recall, qps=1)
    predicted = plan.plan_kind(model, target, calibration)
    fixed, per_vector = model.memory(n)
    at = measured_at_recall(measured, recall)
    predicted_qps = 1000 / predicted.index_ms if predicted.index_ms else None
    return {
        "kind": kind,
        "n": n,
        "target_recall": recall,
        "predicted_setting": predicted.setting,
        "predicted_recall": predicted.recall,
        "measured_setting": at["setting"],
        "measured_recall": at["recall"],
        "viable": predicted.viable,
        "memory_bytes": compare(fixed + per_vector * n, measured["anon_bytes_after_search"]),
        "qps_single_core": compare(predicted_qps, 1000 / at["ms"] if at["ms"] else None),
        "build_s": compare(predicted.build_s, measured["build_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=ROOT / ".eval-store")
    parser.add_argument("--collection", default="eval-scifact")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(cal.SIZES))
    parser.add_argument("--validate", type=int, nargs="+", default=[300_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=list(cal.KINDS))
    parser.add_argument("--check-kinds", nargs="+", default=list(TARGETS))
    parser.add_argument("--calibration", type=Path, help="skip calibrating: use this file")
    parser.add_argument("--ship", action="store_true", help="write the shipped calibration")
    args = parser.parse_args()

    started = time.perf_counter()
    with ragstore.open(args.store, create=False) as store:
        real = cal.collection_vectors(store.get_collection(args.collection))
        if args.calibration:
            calibration = json.loads(args.calibration.read_text())
        else:
            calibration = cal.calibrate_store(
                store, args.collection, sizes=args.sizes, kinds=args.kinds,
                progress=lambda line: print("calibrate:", line, flush=True),
            )  # fmt: skip
    calibrated_s = time.perf_counter() - started
    if args.ship:
        SHIPPED.write_text(json.dumps(calibration, indent=1) + "\n")

    shape = VectorShape.fit(real, cal.SHAPE_CENTROIDS, 0)
    data_rng, query_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(1).spawn(2))
    largest = shape.sample(data_rng, max(args.validate))
    queries = shape.sample(query_rng, cal.QUERIES)
    config = IndexConfig.model_validate(calibration["index"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragstore-plan-") as tmp:
        for n in sorted(args.validate):
            base = np.ascontiguousarray(largest[:n])
            truth = cal.exact_truth(base, queries)
            for kind in args.check_kinds:
                print(f"measure: {kind} at {n:,} vectors", flush=True)
                measured = cal.measure_kind(kind, base, queries, truth, config, Path(tmp))
                row = validate(kind, n, calibration, measured)
                row["measured_sweep"] = measured["sweep"]
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("kind", "n", "memory_bytes",
                                  "qps_single_core", "build_s")}), flush=True)  # fmt: skip
    figures = [row[f] for row in rows for f in ("memory_bytes", "qps_single_core", "build_s")]
    report = {
        "benchmark": "plan",
        "what": "capacity planner: calibrated at small sizes, checked against builds",
        "command": "python " + " ".join(sys.argv),
        "machine": describe(),
        "calibration": {k: v for k, v in calibration.items() if k != "kinds"},
        "calibration_s": round(calibrated_s, 1),
        "tolerance": TOLERANCE,
        "validation": rows,
        "all_within": all(f["within"] for f in figures),
        "worst_error": max(abs(f["error"]) for f in figures if f["error"] is not None),
        "total_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("all_within", "worst_error", "total_s")}))


if __name__ == "__main__":
    main()
