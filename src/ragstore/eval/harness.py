"""Evaluate search modes on a BEIR-format dataset: ingest once, run every query, score.

Documents are ranked by their best chunk (max-passage): each search keeps one hit per
document, scored by that document's best chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from ragstore.engine.store import Collection, Store
from ragstore.errors import InvalidInput
from ragstore.eval.beir import BeirDataset, load_beir
from ragstore.eval.metrics import evaluate_run
from ragstore.search.hybrid import DEFAULT_ALPHA, DEFAULT_FUSION, RRF_K, Fusion, Mode
from ragstore.types import IngestReport

MODES: tuple[Mode, ...] = get_args(Mode)
RUN_DEPTH = 100


@dataclass(frozen=True, slots=True)
class ModeResult:
    """Quality and latency of one search mode over every query of the split."""

    mode: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    latency_p50_ms: float
    latency_p99_ms: float
    queries: int


@dataclass(slots=True)
class EvalReport:
    """What :func:`evaluate` measured, per mode, and how the collection was built."""

    dataset: str
    split: str
    collection: str
    documents: int
    chunks: int
    ingest: dict[str, Any]
    settings: dict[str, Any]
    results: list[ModeResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def evaluate(
    store: Store,
    dataset_dir: str | Path,
    *,
    modes: Sequence[str] = MODES,
    split: str = "test",
    fusion: Fusion = DEFAULT_FUSION,
    rrf_k: int = RRF_K,
    alpha: float = DEFAULT_ALPHA,
    candidates: int | None = None,
) -> EvalReport:
    """Ingest the dataset's corpus (reusing the collection if built) and score each mode."""
    checked = [_mode(mode) for mode in modes]
    dataset = load_beir(Path(dataset_dir), split)
    collection = store.collection(f"eval-{dataset.name}")
    ingest: IngestReport = collection.ingest([dataset.corpus_path])
    info = collection.info()
    settings = {"fusion": fusion, "rrf_k": rrf_k, "alpha": alpha, "candidates": candidates}
    report = EvalReport(
        dataset.name,
        split,
        collection.name,
        info.documents,
        info.chunks,
        ingest.to_dict(),
        settings,
    )
    for mode in checked:
        report.results.append(_scored(collection, dataset, mode, settings))
    return report


def score(
    collection: Collection, dataset_dir: str | Path, *, mode: str = "hybrid", split: str = "test"
) -> ModeResult:
    """Score a collection that already holds a BEIR dataset's documents (by their ids)
    on its queries, in one mode: a re-indexed copy of an evaluation collection, say."""
    dataset = load_beir(Path(dataset_dir), split)
    settings = {"fusion": DEFAULT_FUSION, "rrf_k": RRF_K, "alpha": DEFAULT_ALPHA}
    return _scored(collection, dataset, _mode(mode), settings)


def _scored(
    collection: Collection, dataset: BeirDataset, mode: Mode, settings: dict[str, Any]
) -> ModeResult:
    run: dict[str, dict[str, float]] = {}
    latencies = []
    for qid, text in dataset.queries.items():
        started = time.perf_counter()
        hits = collection.search(text, k=RUN_DEPTH, mode=mode, group_by_doc=True, **settings)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = {hit.doc_id: hit.score for hit in hits}
    return _result(mode, run, dataset.qrels, latencies)


def _result(
    mode: str,
    run: dict[str, dict[str, float]],
    qrels: dict[str, dict[str, int]],
    latencies: list[float],
) -> ModeResult:
    scores = evaluate_run(run, qrels, ndcg_k=10, recall_k=RUN_DEPTH, mrr_k=10)
    return ModeResult(
        mode=mode,
        ndcg_at_10=round(scores["ndcg@10"], 4),
        recall_at_100=round(scores[f"recall@{RUN_DEPTH}"], 4),
        mrr_at_10=round(scores["mrr@10"], 4),
        latency_p50_ms=round(float(np.percentile(latencies, 50)), 2),
        latency_p99_ms=round(float(np.percentile(latencies, 99)), 2),
        queries=len(latencies),
    )


def _mode(mode: str) -> Mode:
    for known in MODES:
        if mode == known:
            return known
    raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
