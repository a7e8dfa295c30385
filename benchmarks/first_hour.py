"""The first hour, timed: README command 1 from a fresh store and an empty model cache,
on a terminal, then keyword queries from the CLI.

Each command runs on a pseudo-terminal, as a user would see it; the script records when
the screen changed and reports the longest time it did not (from the start to the
first output, between outputs, and from the last output to the exit). Keyword queries
run with pipes, ``--repeats`` times, beside the floor any command pays: starting Python
and importing ragstore (``python -c "import ragstore"``).

    python benchmarks/first_hour.py --repeats 7
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from environment import describe

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "first_hour.json"
RAGSTORE = str(Path(sys.executable).parent / "ragstore")
QUESTION = "how long do I have to return headphones?"


def on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``args`` on a pseudo-terminal: wall time, exit code, longest silence."""
    leader, follower = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(
        args, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd
    )
    os.close(follower)
    changes, screen = [started], b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                break
            changes.append(time.perf_counter())
            screen += chunk
        elif process.poll() is not None:
            break
    code = process.wait()
    ended = time.perf_counter()
    os.close(leader)
    points = [*changes, ended]
    gaps = [b - a for a, b in itertools.pairwise(points)]
    return {
        "command": " ".join(Path(a).name if a == RAGSTORE else a for a in args),
        "exit_code": code,
        "wall_s": round(ended - started, 3),
        "screen_updates": len(changes) - 1,
        "longest_silence_s": round(max(gaps), 3),
        "last_lines": screen.decode(errors="replace").replace("\r", "\n").splitlines()[-4:],
    }


def wall_times(args: list[str], env: dict[str, str], cwd: Path, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``args`` with pipes (each must succeed)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-hour-"))
    try:
        (work / "examples").symlink_to(REPO / "examples")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
        env |= {"HF_HUB_OFFLINE": "1", "RAGSTORE_MODEL_CACHE": str(work / "model-cache"),
                "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}  # fmt: skip
        ingest = on_terminal([RAGSTORE, "ingest", "examples/sample-docs"], env, work)
        first = on_terminal([RAGSTORE, "query", QUESTION, "-k", "3"], env, work)
        keyword = [RAGSTORE, "query", "refund policy", "--mode", "keyword", "-k", "3"]
        keyword_s = wall_times(keyword, env, work, options.repeats)
        floor_s = wall_times([sys.executable, "-c", "import ragstore"], env, work, options.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": describe(load_average=os.getloadavg()),
        "readme_command_1": [ingest, first],
        "keyword_query": {
            "median_s": round(statistics.median(keyword_s), 3),
            "runs_s": [round(t, 3) for t in keyword_s],
        },
        "import_ragstore": {
            "median_s": round(statistics.median(floor_s), 3),
            "runs_s": [round(t, 3) for t in floor_s],
        },
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
