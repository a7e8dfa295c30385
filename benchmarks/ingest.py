"""Ingest throughput: ragstore beside a plain sentence-transformers ``encode()``.

Both sides run in the same process, on the same chunks, interleaved, several times;
the report gives medians and the ratio. ragstore's time covers everything: reading the
JSONL, chunking, hashing, embedding and writing SQLite. The baseline only embeds the
exact texts ragstore embedded, with ``SentenceTransformer.encode(batch_size=32)``.

    python benchmarks/ingest.py --corpus ../shared/datasets/scifact/corpus.jsonl --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ragstore
from ragstore.embed import get_embedder
from ragstore.embed.local import MiniLMEmbedder
from ragstore.engine.pipeline import embed_text

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/corpus.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"


def subset(corpus: Path, docs: int, folder: Path) -> Path:
    """The first ``docs`` lines of the corpus, as a file ragstore can ingest."""
    target = folder / "corpus.jsonl"
    with corpus.open() as source, target.open("w") as out:
        for _, line in zip(range(docs), source, strict=False):
            out.write(line)
    return target


def ragstore_run(corpus: Path, folder: Path, run: int) -> tuple[dict[str, Any], list[str]]:
    """Ingest into a fresh store; return timings and the texts that were embedded."""
    with ragstore.open(folder / f"store-{run}") as store:
        col = store.collection("bench")
        started = time.perf_counter()
        report = col.ingest([corpus])
        seconds = time.perf_counter() - started
        again = time.perf_counter()
        second = col.ingest([corpus])
        reingest_seconds = time.perf_counter() - again
        texts = embedded_texts(store.path / "ragstore.db")
    assert second.chunks_embedded == 0
    return {
        "seconds": seconds,
        "documents": report.documents_added,
        "chunks": report.chunks_embedded,
        "reingest_unchanged_seconds": reingest_seconds,
    }, texts


def embedded_texts(db: Path) -> list[str]:
    """What the model saw for each chunk (title line + chunk text), in store order."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
            "ORDER BY c.id"
        ).fetchall()
    return [embed_text(title, text) for title, text in rows]


def baseline_run(model: Any, texts: list[str]) -> float:
    """Seconds for a plain ``encode()`` of the same texts."""
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--docs", type=int, default=1000, help="documents per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    embedder = get_embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(embedder, MiniLMEmbedder)
    model = embedder._model  # the very same weights ragstore uses
    ragstore_seconds, baseline_seconds, reingest = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = subset(args.corpus, args.docs, Path(tmp))
        for run in range(args.repeats):
            timing, texts = ragstore_run(corpus, Path(tmp), run)
            ragstore_seconds.append(timing["seconds"])
            reingest.append(timing["reingest_unchanged_seconds"])
            baseline_seconds.append(baseline_run(model, texts))
            print(
                f"run {run}: ragstore {timing['seconds']:.1f}s, "
                f"encode() {baseline_seconds[-1]:.1f}s, {timing['chunks']} chunks",
                flush=True,
            )
    documents, chunks = timing["documents"], timing["chunks"]
    rs, bs = statistics.median(ragstore_seconds), statistics.median(baseline_seconds)
    result = {
        "benchmark": "ingest",
        "corpus": f"{args.corpus.parent.name}/{args.corpus.name}",
        "documents": documents,
        "chunks": chunks,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "ragstore": {
            "median_seconds": round(rs, 2),
            "documents_per_s": round(documents / rs, 1),
            "chunks_per_s": round(chunks / rs, 1),
            "reingest_unchanged_median_seconds": round(statistics.median(reingest), 3),
        },
        "sentence_transformers_encode": {
            "median_seconds": round(bs, 2),
            "chunks_per_s": round(chunks / bs, 1),
        },
        "ragstore_over_encode_time_ratio": round(rs / bs, 3),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
