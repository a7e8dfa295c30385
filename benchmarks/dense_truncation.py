"""Why ragstore's dense nDCG@10 on SciFact differs from the published all-MiniLM-L6-v2 one.

The published figure (MTEB: 0.645) embeds each document once, as ``title + text``
truncated to the model's 256 tokens. ragstore chunks the whole document and scores it by
its best chunk (max-passage). This script scores the same stored vectors both ways, in
one run: every chunk (max-passage) and only the first chunk of each document (what a
256-token truncation sees), with exact search and trec_eval-exact metrics.

    python benchmarks/dense_truncation.py --store .eval-store   # after `ragstore eval`
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ragstore.embed import get_embedder
from ragstore.eval.beir import load_beir
from ragstore.eval.metrics import evaluate_run

DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"
RESULTS = Path(__file__).resolve().parent / "results" / "dense_truncation.json"


def stored_vectors(db: Path, collection: str, first_only: bool) -> tuple[list[str], np.ndarray]:
    """Document id and vector of every chunk (or of each document's first chunk)."""
    where = "AND c.ordinal = 0" if first_only else ""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.doc_id, c.vector FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"JOIN collections k ON k.id = c.collection_id WHERE k.name = ? {where}",
            (collection,),
        ).fetchall()
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
    return [r[0] for r in rows], vectors.reshape(len(rows), -1)


def run_for(
    queries: np.ndarray, qids: list[str], doc_ids: list[str], matrix: np.ndarray
) -> dict[str, dict[str, float]]:
    """Max-passage document scores: each document's best chunk, top 100 per query."""
    run: dict[str, dict[str, float]] = {}
    scores = queries @ matrix.T
    for qid, row in zip(qids, scores, strict=True):
        best: dict[str, float] = {}
        for index in np.argsort(-row)[:1000]:
            doc = doc_ids[index]
            best.setdefault(doc, float(row[index]))
            if len(best) == 100:
                break
        run[qid] = best
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".eval-store"))
    parser.add_argument("--collection", default="eval-scifact")
    args = parser.parse_args()
    dataset = load_beir(DATASET, "test")
    embedder = get_embedder("sentence-transformers/all-MiniLM-L6-v2")
    qids = list(dataset.queries)
    queries = np.stack([embedder.embed_query(dataset.queries[q]) for q in qids])
    db = args.store / "ragstore.db"
    result = {"published_mteb_ndcg@10": 0.645}
    for label, first_only in (("max_passage_all_chunks", False), ("first_chunk_only", True)):
        doc_ids, matrix = stored_vectors(db, args.collection, first_only)
        scores = evaluate_run(run_for(queries, qids, doc_ids, matrix), dataset.qrels)
        result[label] = {k: round(v, 4) for k, v in scores.items()} | {"vectors": len(doc_ids)}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
