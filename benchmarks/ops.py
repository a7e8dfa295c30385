"""Operations on a large embedded store: online snapshots and blue-green re-indexing
while searches go on, each beside its baseline, on one machine, in one run.

Store. ``--n`` (default 1,000,000) seeded random unit vectors of dimension 384 (ids
``v0``, ``v1``, …; no metadata), drawn around ``--clusters`` (1,000) random unit centres:
centre + ``--spread`` (0.5) x a standard normal vector / sqrt(384), L2-normalised (so a
vector's cosine to its centre is ~0.9, to another of its cluster ~0.8, to any other ~0).
``--clusters 0`` draws them uniformly on the sphere instead: HNSW's worst case, with no
neighbourhoods to exploit, which builds about five times slower (50,000 vectors: 40 s
against 8 s in FAISS directly) and is unlike embeddings. They are written with
``upsert_vectors`` in batches of 10,000 into the ``flat`` vector collection ``vectors``,
sealed by ``optimize()``, then ``rebuild_index({"kind": "hnsw"})``: one HNSW segment
(M 32, ef_construction 100, FAISS on every core). With ``--reindex-n`` below ``--n``, a
second collection ``vectors-small`` of the first ``--reindex-n`` of those vectors is built
the same way, for step 5 only. The store is kept under ``.bench-cache/ops/n<N>-c<C>-s<S>/``
and reused by later runs (``--rebuild`` builds it again); build times come from the run
that built it (``build`` in the JSON says which).

Searches. One query at a time on this process's main thread, FAISS on one OpenMP thread,
through ``Collection.search_vectors(q, k=10)`` (the engine: ids and scores, no hits read
from SQLite) at the index's default ef_search; queries are ``--queries`` (2,000) vectors
drawn like the data from their own random stream, taken in turn. Latency is wall time per call.

1. Build (above) and the first search after opening the store (it loads the segment).
2. Idle latency: ``--queries`` searches, p50/p99.
3. Snapshot against copy, alternated, ``--repeats`` (3) each in an order rotated per
   repeat, medians: ``cp -r STORE DEST`` (the baseline: the same files, the kernel's
   ``copy_file_range``, nothing synced), ``cp -r`` followed by an ``fsync`` of every file
   it wrote (what a snapshot also does before it counts as taken), and ``ragstore
   --store STORE snapshot create FOLDER --json`` as its own process (its wall time, from
   start-up to exit, and the ``seconds`` it reports). The target compares the snapshot's
   own time (the ``seconds`` it reports: what ``store.snapshot()`` takes, as the Python
   API and ``POST /v1/snapshots`` see it) with ``cp -r``; the process's wall time, which
   adds the interpreter's start-up and imports (about 0.5 s), is reported beside it.
   Each copy is deleted and the page cache's dirty data flushed (``os.sync``) before the
   next run, untimed; the store's files stay in the page cache throughout (all runs read
   them warm). Sizes by ``du -sb``. Then ``ragstore snapshot verify`` and ``ragstore
   snapshot restore --to`` of one snapshot, once each, as processes.
4. Search during a snapshot, ``--repeats`` times: ``--queries`` idle searches, then
   searches in a loop while a ``ragstore snapshot create`` process runs, and (the
   baseline, before or after it, alternately) while a ``cp -r`` of the store runs.
   The snapshot's searches are reported over the process's whole life and over its
   copying window (from when its ``.unfinished-`` directory is first seen to when the
   finished one is); the figure is the median over repeats of the window's p99, divided
   by the median idle p99 (target ≤ 2), beside the same ratio during ``cp -r``.
5. Search during a re-index: the alias ``live`` names the source (``vectors``, or
   ``vectors-small``); ``--queries`` idle searches through the alias, then searches
   through it in a loop (one ``store.get_collection("live")`` object, which follows the
   alias at every call, as a server holding it would) while ``ragstore --store STORE
   reindex live --to vectors-reindexed --index '{"kind": "hnsw"}' --switch live --json``
   runs as its own process with ``OMP_NUM_THREADS=1`` (FAISS builds on one core and
   leaves the other to the searches). Its baseline, run just before it: searches through
   the alias while a plain process inserts random vectors into a FAISS HNSW index (same
   M and ef_construction) on one thread for ``--busy-seconds`` (30): what any index
   build on the other core costs a search on this machine. Each search is classified by
   the collection it ran on (the alias object's last resolution, read after the call, so
   classifying adds no look-up). Reported: p50/p99 of the searches on the source while
   the process ran, also split into the copy phase and the index-build phase (the
   target's document count is read every 2 s; the build phase begins when it equals the
   source's, and runs to the switch), their ratio to the idle p99 (target ≤ 2), the
   first searches on the new collection (the first one loads its segment), failed
   searches (exceptions, or fewer than k hits: must be 0), the five slowest searches
   with when they ran, and the re-index's own report and wall time. Afterwards the alias
   and the new collection are deleted and the database compacted (``VACUUM``) so the
   cached store can be reused.

The load average is recorded before every step: other work on the machine shows up in
every latency, so compare ratios within one run.

    python benchmarks/ops.py --n 50000 --no-write     # quick
    python benchmarks/ops.py                          # 1M vectors, ~40 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss
import numpy as np
import numpy.typing as npt
from environment import describe

import ragstore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "ops.json"
CACHE = ROOT / ".bench-cache" / "ops"
DIM = 384
K = 10
BATCH = 10_000
SOURCE = "vectors"
SMALL = "vectors-small"
TARGET = "vectors-reindexed"
ALIAS = "live"
HNSW = {"kind": "hnsw"}
TARGET_SNAPSHOT_RATIO = 1.5
"""Snapshot time (what it reports) at most this times ``cp -r``'s."""
TARGET_P99_RATIO = 2.0
"""Search p99 during a snapshot or a re-index at most this times the idle p99."""
PHASE_POLL_S = 2.0
AFTER_SWITCH_QUERIES = 200
"""Searches through the alias after the re-index process exits."""

Matrix = npt.NDArray[np.float32]
Search = Callable[[Matrix], tuple[list[str], Any]]


# --------------------------------------------------------------------------- helpers


def percentiles(ms: Sequence[float]) -> dict[str, Any]:
    """p50/p99/max of latencies in milliseconds, and how many."""
    if not ms:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(ms)
    return {
        "count": len(ms),
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "max_ms": round(float(arr.max()), 3),
    }


def slowest(samples: Sequence[tuple[float, float]], origin: float) -> list[list[float]]:
    """The five slowest searches as [seconds after ``origin``, ms], for diagnosis."""
    worst = sorted(samples, key=lambda s: s[1], reverse=True)[:5]
    return [[round(t - origin, 2), round(ms, 1)] for t, ms in worst]


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are known, rounded for the report."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def dig(tree: Any, path: Sequence[str]) -> Any:
    """``tree[path[0]][path[1]]…``."""
    for key in path:
        tree = tree[key]
    return tree


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, or ``None`` when either is missing."""
    return None if a is None or not b else round(a / b, 2)


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def du_bytes(path: Path) -> int:
    """Apparent size of a directory tree (``du -sb``)."""
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def free_bytes(path: Path) -> int:
    """Free space on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def cli_path() -> str:
    """The ``ragstore`` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("ragstore")
    found = str(beside) if beside.exists() else shutil.which("ragstore")
    if found is None:
        raise SystemExit("no `ragstore` command: pip install -e . first")
    return found


def remove(path: Path) -> None:
    """Delete a copy and flush what is left dirty in the page cache (untimed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


@dataclass
class Mixture:
    """Unit vectors around random unit centres (none: uniform on the sphere)."""

    centres: Matrix | None
    spread: float

    @classmethod
    def make(cls, clusters: int, spread: float, seed: int) -> Mixture:
        """The centres, from their own random stream."""
        if clusters <= 0:
            return cls(None, spread)
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        return cls(unit(rng.standard_normal((clusters, DIM), dtype=np.float32)), spread)

    def sample(self, rng: np.random.Generator, n: int) -> Matrix:
        """``n`` vectors."""
        noise = rng.standard_normal((n, DIM), dtype=np.float32)
        if self.centres is None:
            return unit(noise)
        picked = self.centres[rng.integers(0, len(self.centres), n)]
        return unit(picked + np.float32(self.spread / np.sqrt(DIM)) * noise)


def unit(x: Matrix) -> Matrix:
    """Rows scaled to unit length."""
    out: Matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent random streams for the data and the queries."""
    data, queries, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    return data, queries


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP threads for this thread set to ``n`` for a while."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# --------------------------------------------------------------------------- processes


@dataclass
class Run:
    """A finished ``ragstore`` process: wall time, exit status, parsed JSON output."""

    seconds: float
    returncode: int
    output: Any
    stderr: str

    def to_dict(self) -> dict[str, Any]:
        """For the report (the last lines of stderr only when it failed)."""
        out: dict[str, Any] = {"wall_s": round(self.seconds, 3), "returncode": self.returncode}
        if self.returncode != 0:
            out["stderr_tail"] = self.stderr[-2000:]
        return out


class Process:
    """A command running beside this process; a thread drains its output."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self._proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._output: tuple[str, str] = ("", "")
        self._ended = self.started
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        self._output = self._proc.communicate()
        self._ended = time.perf_counter()

    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self._proc.poll() is None

    def finish(self) -> Run:
        """Wait for it; its wall time (from start to exit as seen here) and output."""
        self._reader.join()
        text, err = self._output
        try:
            output = json.loads(text) if text.strip().startswith(("{", "[")) else text
        except json.JSONDecodeError:
            output = text
        return Run(self._ended - self.started, self._proc.returncode, output, err)


def ragstore_command(*args: str) -> list[str]:
    """A ``ragstore`` command line."""
    return [cli_path(), *args]


def run_cli(*args: str) -> Run:
    """Run a ``ragstore`` command to its end."""
    return Process(ragstore_command(*args)).finish()


BUSY = """
import sys, time
import faiss, numpy as np
faiss.omp_set_num_threads(1)
index = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
index.hnsw.efConstruction = 100
rng = np.random.default_rng(0)
end = time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    x = rng.standard_normal((1000, 384), dtype=np.float32)
    index.add(x / np.linalg.norm(x, axis=1, keepdims=True))
print(index.ntotal)
"""
"""The re-index's baseline disturbance: FAISS HNSW inserts (M 32, ef_construction 100)
on one thread, in a process of its own, for ``argv[1]`` seconds."""


# --------------------------------------------------------------------------- step 1: build


def prepare_store(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The cached store (built now where missing) and how its collections were built."""
    folder = CACHE / f"n{args.n}-c{args.clusters}-s{args.seed}"
    store_path, info_path = folder / "store", folder / "build.json"
    if args.rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    built: dict[str, Any] = json.loads(info_path.read_text()) if info_path.exists() else {}
    wanted = {SOURCE: args.n}
    if args.reindex_n < args.n:
        wanted[SMALL] = args.reindex_n
    for name, n in wanted.items():
        if built.get(name, {}).get("n") != n:
            print(f"building {name}: {n:,} vectors", flush=True)
            built[name] = build_collection(store_path, name, n, args)
            info_path.write_text(json.dumps(built, indent=2) + "\n")
        print(f"{name}: {built[name]}", flush=True)
    return store_path, {name: built[name] for name in wanted}


def build_collection(
    store_path: Path, name: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Upsert ``n`` vectors into a new flat collection, seal it, rebuild it as HNSW."""
    data_rng, _ = streams(args.seed)
    mixture = Mixture.make(args.clusters, args.spread, args.seed)
    with ragstore.open(store_path) as store:
        if name in {c.name for c in store.list_collections()}:
            store.delete_collection(name)  # an interrupted build
        col = store.create_collection(name, embedder=None, dim=DIM, index={"kind": "flat"})
        started = time.perf_counter()
        for first in range(0, n, BATCH):
            batch = mixture.sample(data_rng, min(BATCH, n - first))
            col.upsert_vectors([f"v{i}" for i in range(first, first + len(batch))], batch)
        upserted = time.perf_counter()
        col.optimize()
        optimized = time.perf_counter()
        col.rebuild_index(HNSW)
        rebuilt = time.perf_counter()
        stats = json.loads(json.dumps(col.index_stats(), default=str))
    return {
        "n": n,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_1m_before": load(),
        "upsert_vectors_s": round(upserted - started, 1),
        "optimize_flat_s": round(optimized - upserted, 1),
        "rebuild_index_hnsw_s": round(rebuilt - optimized, 1),
        "total_s": round(rebuilt - started, 1),
        "index_stats": stats,
    }


def cleanup(store_path: Path) -> dict[str, Any]:
    """Remove what a re-index left (the alias, the new collection), then compact the
    database when that freed pages, so the cached store is as built."""
    started = time.perf_counter()
    with ragstore.open(store_path) as store:
        if ALIAS in {a.name for a in store.list_aliases()}:
            store.delete_alias(ALIAS)
        if TARGET in {c.name for c in store.list_collections()}:
            store.delete_collection(TARGET)
    db = store_path / "ragstore.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free:
            conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"freed_pages_vacuumed": free, "seconds": round(time.perf_counter() - started, 1)}


# --------------------------------------------------------------------------- searching


@dataclass
class Searcher:
    """Single queries, taken in turn from a fixed set, timed one by one."""

    queries: Matrix
    failures: list[str] = field(default_factory=list)
    short: int = 0
    _next: int = 0

    def once(self, search: Search) -> float:
        """One timed search; an exception or fewer than k hits is counted, not raised."""
        query = self.queries[self._next % len(self.queries)]
        self._next += 1
        started = time.perf_counter()
        try:
            ids, _ = search(query)
        except Exception as exc:  # counted: a search must not fail while ops run
            ms = (time.perf_counter() - started) * 1000
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return ms
        ms = (time.perf_counter() - started) * 1000
        if len(ids) < K:
            self.short += 1
        return ms

    def idle(self, search: Search, count: int) -> dict[str, Any]:
        """``count`` searches with nothing else running (from this benchmark)."""
        before = load()
        ms = [self.once(search) for _ in range(count)]
        return {**percentiles(ms), "loadavg_1m_before": before}

    def reset_counts(self) -> dict[str, Any]:
        """Failures and short results since the last reset."""
        counts: dict[str, Any] = {"failed": len(self.failures), "short_of_k": self.short}
        if self.failures:
            counts["first_failures"] = self.failures[:5]
        self.failures, self.short = [], 0
        return counts


def searches_while(
    proc: Process, searcher: Searcher, search: Search, look: Callable[[], None] | None = None
) -> list[tuple[float, float]]:
    """Search in a loop while ``proc`` runs: (start time, ms) per search; ``look`` is
    called, untimed, after each."""
    samples: list[tuple[float, float]] = []
    while proc.running():
        started = time.perf_counter()
        samples.append((started, searcher.once(search)))
        if look is not None:
            look()
    return samples


def vector_search(col: ragstore.Collection) -> Search:
    """The engine path: ids and scores of the k nearest."""
    return lambda q: col.search_vectors(q, k=K)


# --------------------------------------------------------------------------- step 3: copies


def timed_cp(store_path: Path, dest: Path, sync: bool) -> dict[str, Any]:
    """``cp -r STORE DEST``, then (``sync``) an ``fsync`` of every file it wrote."""
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(store_path), str(dest)], check=True)
    if sync:
        fsync_tree(dest)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "bytes": du_bytes(dest)}


def fsync_tree(root: Path) -> None:
    """``fsync`` every file and directory under ``root``."""
    for path in [*sorted(root.rglob("*"), reverse=True), root]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def timed_snapshot(store_path: Path, folder: Path) -> tuple[dict[str, Any], Path]:
    """``ragstore snapshot create`` as a process: its wall time and its own report."""
    done = run_cli("--store", str(store_path), "snapshot", "create", str(folder), "--json")
    if done.returncode != 0 or not isinstance(done.output, dict):
        raise SystemExit(f"snapshot create failed: {done.stderr[-2000:]}")
    path = Path(done.output["path"])
    return {
        "seconds": round(done.seconds, 3),
        "reported_seconds": done.output["seconds"],
        "bytes": du_bytes(path),
        "manifest_bytes": done.output["bytes"],
        "files": done.output["files"],
    }, path


CopyCase = Callable[[Path], tuple[dict[str, Any], Path]]


def snapshot_vs_copy(store_path: Path, work: Path, repeats: int) -> dict[str, Any]:
    """The three ways of copying the store, alternated; medians and ratios."""
    cases: dict[str, CopyCase] = {
        "cp": lambda dest: (timed_cp(store_path, dest / "copy", sync=False), dest / "copy"),
        "cp_fsync": lambda dest: (timed_cp(store_path, dest / "copy", sync=True), dest / "copy"),
        "snapshot": lambda dest: timed_snapshot(store_path, dest / "snapshots"),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    names = list(cases)
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            remove(work)
            work.mkdir(parents=True)
            before = load()
            result, _ = cases[name](work)
            runs[name].append({**result, "loadavg_1m_before": before})
            print(f"   {name}: {result}", flush=True)
    remove(work)
    return summarise_copies(runs)


def summarise_copies(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per case the median time and size; the snapshot's ratios to both baselines."""
    table: dict[str, Any] = {}
    for name, rows in runs.items():
        table[name] = {
            "median_s": median([r["seconds"] for r in rows]),
            "bytes": rows[-1]["bytes"],
            "runs": rows,
        }
    snap = table["snapshot"]
    snap["median_reported_s"] = median([r["reported_seconds"] for r in runs["snapshot"]])
    table["ratios"] = {
        "snapshot_over_cp": ratio(snap["median_s"], table["cp"]["median_s"]),
        "snapshot_reported_over_cp": ratio(snap["median_reported_s"], table["cp"]["median_s"]),
        "snapshot_over_cp_fsync": ratio(snap["median_s"], table["cp_fsync"]["median_s"]),
        "snapshot_bytes_over_cp_bytes": ratio(snap["bytes"], table["cp"]["bytes"]),
    }
    return table


def verify_and_restore(store_path: Path, work: Path) -> dict[str, Any]:
    """One snapshot, then ``snapshot verify`` and ``snapshot restore --to`` timed."""
    remove(work)
    _, path = timed_snapshot(store_path, work / "snapshots")
    os.sync()
    verified = run_cli("snapshot", "verify", str(path))
    restored = run_cli("snapshot", "restore", str(path), "--to", str(work / "restored"))
    out = {
        "verify": {**verified.to_dict(), "output": str(verified.output).strip()},
        "restore": restored.to_dict(),
    }
    if restored.returncode == 0:
        out["restore"]["bytes"] = du_bytes(work / "restored")
    remove(work)
    return out


# --------------------------------------------------------------------------- step 4


@dataclass
class Window:
    """When a snapshot process's staging directory and its finished one were first seen."""

    folder: Path
    staging: float | None = None
    finished: float | None = None

    def look(self) -> None:
        """Note the first time each directory shows up."""
        if self.finished is not None:
            return
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        now = time.perf_counter()
        if self.staging is None and any(n.startswith(".unfinished-") for n in names):
            self.staging = now
        if any(n.startswith("snapshot-") for n in names):
            self.finished = now


def search_during_snapshot(
    store_path: Path, work: Path, searcher: Searcher, search: Search, count: int, cp_first: bool
) -> dict[str, Any]:
    """Idle searches, then searches while ``cp -r`` of the store runs and while one
    snapshot process runs (in the order given)."""
    remove(work)
    result: dict[str, Any] = {"idle": {**searcher.idle(search, count), **searcher.reset_counts()}}
    for case in ("cp", "snapshot") if cp_first else ("snapshot", "cp"):
        result[f"during_{case}"] = (
            search_during_cp(store_path, work, searcher, search)
            if case == "cp"
            else search_during_one_snapshot(store_path, work, searcher, search)
        )
    return result


def search_during_cp(
    store_path: Path, work: Path, searcher: Searcher, search: Search
) -> dict[str, Any]:
    """Searches while ``cp -r STORE DEST`` runs (the snapshot's baseline)."""
    work.mkdir(parents=True, exist_ok=True)
    before = load()
    proc = Process(["cp", "-r", str(store_path), str(work / "copy")])
    samples = searches_while(proc, searcher, search)
    done = proc.finish()
    result = {
        **percentiles([ms for _, ms in samples]),
        **done.to_dict(),
        "loadavg_1m_before": before,
        **searcher.reset_counts(),
    }
    remove(work)
    return result


def search_during_one_snapshot(
    store_path: Path, work: Path, searcher: Searcher, search: Search
) -> dict[str, Any]:
    """Searches while one ``ragstore snapshot create`` process runs."""
    folder = work / "snapshots"
    window = Window(folder)
    before = load()
    command = ragstore_command("--store", str(store_path), "snapshot", "create", str(folder))
    proc = Process([*command, "--json"])
    samples = searches_while(proc, searcher, search, window.look)
    done = proc.finish()
    copying = [
        ms
        for t, ms in samples
        if window.staging is not None and window.staging <= t and t < (window.finished or t + 1)
    ]
    result = {
        "loadavg_1m_before": before,
        "process": {**percentiles([ms for _, ms in samples]), **done.to_dict()},
        "slowest": slowest(samples, proc.started),
        "copying": {
            **percentiles(copying),
            "window_s": None
            if window.staging is None or window.finished is None
            else round(window.finished - window.staging, 3),
        },
        "snapshot_reported_s": reported_seconds(done),
        **searcher.reset_counts(),
    }
    remove(work)
    return result


def reported_seconds(done: Run) -> float | None:
    """The ``seconds`` a ``snapshot create --json`` process reported."""
    return done.output.get("seconds") if isinstance(done.output, dict) else None


def snapshot_searches(
    store_path: Path, work: Path, searcher: Searcher, search: Search, args: argparse.Namespace
) -> dict[str, Any]:
    """Step 4 ``--repeats`` times; medians of the per-repeat percentiles and the ratio."""
    runs = []
    for repeat in range(args.repeats):
        run = search_during_snapshot(
            store_path, work, searcher, search, args.queries, cp_first=repeat % 2 == 1
        )
        print(f"   repeat {repeat}: {json.dumps(run)}", flush=True)
        runs.append(run)

    def med(*path: str) -> float | None:
        return median([dig(r, path) for r in runs])

    idle_p99 = med("idle", "p99_ms")
    during_p99 = med("during_snapshot", "copying", "p99_ms")
    cp_p99 = med("during_cp", "p99_ms")
    snaps = [r["during_snapshot"] for r in runs]
    return {
        "idle_p50_ms": med("idle", "p50_ms"),
        "idle_p99_ms": idle_p99,
        "copying_p50_ms": med("during_snapshot", "copying", "p50_ms"),
        "copying_p99_ms": during_p99,
        "process_p50_ms": med("during_snapshot", "process", "p50_ms"),
        "process_p99_ms": med("during_snapshot", "process", "p99_ms"),
        "during_cp_p50_ms": med("during_cp", "p50_ms"),
        "during_cp_p99_ms": cp_p99,
        "p99_ratio": ratio(during_p99, idle_p99),
        "cp_p99_ratio": ratio(cp_p99, idle_p99),
        "p99_over_cp_p99": ratio(during_p99, cp_p99),
        "failed": sum(r["failed"] for r in snaps) + sum(r["during_cp"]["failed"] for r in runs),
        "short_of_k": sum(r["short_of_k"] for r in snaps)
        + sum(r["during_cp"]["short_of_k"] for r in runs),
        "runs": runs,
    }


# --------------------------------------------------------------------------- step 5


@dataclass
class Phases:
    """The target's document count, read every few seconds: when its copy was done."""

    store: ragstore.Store
    source_documents: int
    copied_at: float | None = None
    counts: list[tuple[float, int]] = field(default_factory=list)
    _last: float = 0.0

    def look(self, started: float) -> None:
        """Read the count when the last read is over ``PHASE_POLL_S`` old."""
        now = time.perf_counter()
        if self.copied_at is not None or now - self._last < PHASE_POLL_S:
            return
        self._last = now
        found = {c.name: c.documents for c in self.store.list_collections()}
        documents = found.get(TARGET, 0)
        self.counts.append((round(now - started, 1), documents))
        if documents >= self.source_documents:
            self.copied_at = now


@dataclass
class AliasSample:
    """One search through the alias: when it began, its latency, the collection it used."""

    started: float
    ms: float
    collection_id: int


def search_during_reindex(
    store: ragstore.Store, source: str, searcher: Searcher, args: argparse.Namespace
) -> dict[str, Any]:
    """Idle searches through the alias, then searches through it while the re-index
    process runs, then a few more after it exits."""
    store.set_alias(ALIAS, source)
    live = store.get_collection(ALIAS)
    search = vector_search(live)
    source_id = live.id
    searcher.once(search)  # the alias resolved once
    idle = searcher.idle(search, args.queries)
    idle_counts = searcher.reset_counts()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    busy = search_during_busy(searcher, search, args.busy_seconds, env)
    print(f"   beside FAISS on one thread: {busy}", flush=True)
    phases = Phases(store, next(c.documents for c in store.list_collections() if c.name == source))
    command = [
        *("--store", str(store.path), "reindex", ALIAS, "--to", TARGET),
        *("--index", json.dumps(HNSW), "--switch", ALIAS, "--json"),
    ]
    before = load()
    proc = Process(ragstore_command(*command), env=env)
    samples: list[AliasSample] = []
    while proc.running():
        samples.append(alias_search(searcher, search, live))
        phases.look(proc.started)
    done = proc.finish()
    during_counts = searcher.reset_counts()
    after = [alias_search(searcher, search, live) for _ in range(AFTER_SWITCH_QUERIES)]
    summary = reindex_summary(
        source_id, idle, idle_counts, samples, after, phases, proc.started, done, before
    )
    summary["beside_faiss_build"] = {
        **busy,
        "p99_ratio": ratio(busy["p99_ms"], idle["p99_ms"]),
    }
    summary["during_index_build"]["p99_over_faiss_build_p99"] = ratio(
        summary["during_index_build"]["p99_ms"], busy["p99_ms"]
    )
    command_line = shlex.join(["OMP_NUM_THREADS=1", "ragstore", *command])
    return summary | {"command": command_line, "during_counts": during_counts}


def search_during_busy(
    searcher: Searcher, search: Search, seconds: float, env: dict[str, str]
) -> dict[str, Any]:
    """Searches while a process inserts into a FAISS HNSW index on one thread (:data:`BUSY`):
    what sharing the machine with an index build costs any search."""
    before = load()
    proc = Process([sys.executable, "-c", BUSY, str(seconds)], env=env)
    samples = searches_while(proc, searcher, search)
    done = proc.finish()
    return {
        **percentiles([ms for _, ms in samples]),
        **done.to_dict(),
        "vectors_inserted": str(done.output).strip(),
        "loadavg_1m_before": before,
        **searcher.reset_counts(),
    }


def alias_search(searcher: Searcher, search: Search, live: ragstore.Collection) -> AliasSample:
    """One timed search through the alias, and the collection it ran on. That is read
    from the alias object's last resolution (private, read only) rather than by
    resolving the alias again, which would spare the next search its own look-up."""
    started = time.perf_counter()
    ms = searcher.once(search)
    used = live._last[1].id  # type: ignore[attr-defined, unused-ignore]
    return AliasSample(started, ms, used)


def reindex_summary(
    source_id: int,
    idle: dict[str, Any],
    idle_counts: dict[str, Any],
    samples: list[AliasSample],
    after: list[AliasSample],
    phases: Phases,
    started: float,
    done: Run,
    load_before: float,
) -> dict[str, Any]:
    """Percentiles per phase, the first searches on the new collection, the report."""
    on_source = [s for s in samples if s.collection_id == source_id]
    on_target = [s for s in [*samples, *after] if s.collection_id != source_id]
    copied_at = phases.copied_at
    copy = [s.ms for s in on_source if copied_at is None or s.started < copied_at]
    build = [s.ms for s in on_source if copied_at is not None and s.started >= copied_at]
    during = percentiles([s.ms for s in on_source])
    switched_at = on_target[0].started - started if on_target else None
    return {
        "idle": {**idle, **idle_counts},
        "loadavg_1m_before": load_before,
        "during": {**during, "p99_ratio": ratio(during["p99_ms"], idle["p99_ms"])},
        "during_copy": percentiles(copy),
        "during_index_build": percentiles(build),
        "copy_done_after_s": None if copied_at is None else round(copied_at - started, 1),
        "first_search_on_new_at_s": None if switched_at is None else round(switched_at, 1),
        "first_searches_on_new_ms": [round(s.ms, 3) for s in on_target[:5]],
        "after_switch": percentiles([s.ms for s in on_target[1:]]),
        "slowest_on_source": slowest([(s.started, s.ms) for s in on_source], started),
        "target_counts": phases.counts,
        "reindex": {**done.to_dict(), "report": done.output},
    }


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Every step, in order, into ``report``."""
    faiss.omp_set_num_threads(args.threads)
    store_path, report["build"] = prepare_store(args)
    report["cleanup_before"] = cleanup(store_path)
    folder = store_path.parent
    work = folder / "work"
    report["store_bytes"] = du_bytes(store_path)
    needed = 3 * report["store_bytes"]
    if free_bytes(folder) < needed:
        raise SystemExit(f"need {needed / 1e9:.1f} GB free beside {store_path}")
    mixture = Mixture.make(args.clusters, args.spread, args.seed)
    queries = mixture.sample(streams(args.seed)[1], args.queries)
    searcher = Searcher(queries)
    with faiss_threads(1), ragstore.open(store_path) as store:
        col = store.get_collection(SOURCE)
        search = vector_search(col)
        started = time.perf_counter()
        searcher.once(search)
        report["first_search_after_open_ms"] = round((time.perf_counter() - started) * 1000, 1)
        print(f"\n== 2. idle searches ({args.queries})", flush=True)
        report["idle"] = {**searcher.idle(search, args.queries), **searcher.reset_counts()}
        print(f"   {report['idle']}", flush=True)
        print(f"\n== 3. snapshot vs cp -r, {args.repeats} each", flush=True)
        report["snapshot_vs_copy"] = snapshot_vs_copy(store_path, work, args.repeats)
        report["verify_restore"] = verify_and_restore(store_path, work)
        print(f"   {report['verify_restore']}", flush=True)
        print("\n== 4. searches during a snapshot", flush=True)
        report["search_during_snapshot"] = snapshot_searches(
            store_path, work, searcher, search, args
        )
        source = SOURCE if args.reindex_n >= args.n else SMALL
        print(f"\n== 5. searches during a re-index of {source}", flush=True)
        report["search_during_reindex"] = {
            "source": source,
            "source_vectors": min(args.reindex_n, args.n),
            **search_during_reindex(store, source, searcher, args),
        }
    report["cleanup_after"] = cleanup(store_path)
    report["targets"] = targets(report)


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each target with its figure and whether it was met."""
    copy = report["snapshot_vs_copy"]["ratios"]["snapshot_reported_over_cp"]
    snap = report["search_during_snapshot"]
    reindex = report["search_during_reindex"]
    reindex_ratio = reindex["during"]["p99_ratio"]
    failed = snap["failed"] + reindex["during_counts"]["failed"]
    short = snap["short_of_k"] + reindex["during_counts"]["short_of_k"]
    return {
        "snapshot_over_cp_max": TARGET_SNAPSHOT_RATIO,
        "snapshot_over_cp": copy,
        "snapshot_over_cp_met": copy is not None and copy <= TARGET_SNAPSHOT_RATIO,
        "p99_ratio_max": TARGET_P99_RATIO,
        "p99_ratio_during_snapshot": snap["p99_ratio"],
        "during_snapshot_met": snap["p99_ratio"] is not None
        and snap["p99_ratio"] <= TARGET_P99_RATIO,
        "p99_ratio_during_reindex": reindex_ratio,
        "during_reindex_met": reindex_ratio is not None and reindex_ratio <= TARGET_P99_RATIO,
        "failed_searches": failed,
        "short_of_k": short,
        "no_failed_searches_met": failed == 0 and short == 0,
        "reindex_switched": isinstance(reindex["reindex"]["report"], dict)
        and reindex["reindex"]["report"].get("switched") == ALIAS,
        "context": {
            "snapshot_process_over_cp": report["snapshot_vs_copy"]["ratios"]["snapshot_over_cp"],
            "snapshot_process_over_cp_fsync": report["snapshot_vs_copy"]["ratios"][
                "snapshot_over_cp_fsync"
            ],
            "p99_ratio_during_cp": snap["cp_p99_ratio"],
            "p99_ratio_beside_faiss_build": reindex["beside_faiss_build"]["p99_ratio"],
            "p99_during_snapshot_over_during_cp": snap["p99_over_cp_p99"],
            "p99_during_index_build_over_beside_faiss_build": reindex["during_index_build"][
                "p99_over_faiss_build_p99"
            ],
        },
    }


def print_summary(report: dict[str, Any]) -> None:
    """The figures that go into the README."""
    copies = report["snapshot_vs_copy"]
    snap = report["search_during_snapshot"]
    rx = report["search_during_reindex"]
    print("\n== summary")
    print(f"store: {report['store_bytes']:,} bytes; idle p50/p99 {report['idle']}")
    for name in ("cp", "cp_fsync", "snapshot"):
        print(f"  {name:10} median {copies[name]['median_s']} s, {copies[name]['bytes']:,} B")
    print(f"  ratios {copies['ratios']}")
    print(
        f"  during snapshot: p50/p99 {snap['copying_p50_ms']}/{snap['copying_p99_ms']}, "
        f"during cp {snap['during_cp_p50_ms']}/{snap['during_cp_p99_ms']}, "
        f"idle {snap['idle_p50_ms']}/{snap['idle_p99_ms']}"
    )
    print(f"  reindex: idle {rx['idle']}\n     beside FAISS build {rx['beside_faiss_build']}")
    print(f"     during {rx['during']}\n     copy {rx['during_copy']}")
    print(f"     build {rx['during_index_build']} first on new {rx['first_searches_on_new_ms']}")
    print(f"     reindex {rx['reindex']}")
    print(json.dumps(report["targets"], indent=1))


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the store")
    parser.add_argument(
        "--reindex-n", type=int, default=0, help="vectors re-indexed in step 5 (0: all of --n)"
    )
    parser.add_argument("--clusters", type=int, default=1000, help="0: uniform on the sphere")
    parser.add_argument("--spread", type=float, default=0.5, help="noise around a centre")
    parser.add_argument("--queries", type=int, default=2000, help="idle searches per block")
    parser.add_argument("--repeats", type=int, default=3, help="copies and snapshots of each")
    parser.add_argument(
        "--busy-seconds", type=float, default=30.0, help="FAISS build beside searches (step 5)"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rebuild", action="store_true", help="build the cached store again")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print, write no JSON")
    args = parser.parse_args()
    if args.reindex_n <= 0 or args.reindex_n > args.n:
        args.reindex_n = args.n
    return args


def main() -> None:
    """Run every step; print the summary and write the JSON."""
    args = parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "ops",
        "what": (
            "snapshot vs cp -r of the same store; search p50/p99 idle, during a snapshot "
            "process and during a re-index process (alias switch); see benchmarks/ops.py"
        ),
        "command": shlex.join(["python", *sys.argv]),
        "machine": describe(faiss=faiss.__version__, threads=args.threads),
        "loadavg_1m_before": load(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    run(args, report)
    report["loadavg_1m_after"] = load()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    print_summary(report)


if __name__ == "__main__":
    main()
