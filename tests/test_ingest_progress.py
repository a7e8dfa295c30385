"""Ingest progress: the library's callback counts chunks embedded, up to the real number,
for a folder and for one large JSONL file; the command line draws it as a bar with a
count, a rate and a time left, names every stage that has no count, and never leaves
the screen still for more than 2 s (replaying "the bar sits at 100 % while the embedding
runs; a large JSONL shows no count and no ETA for 50 s"). Without a terminal, and with
--quiet, stderr holds no bar. Real model, real stores on disk, real processes."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import pty
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SAMPLE_DOCS

import ragstore
from ragstore.embed import Embedder
from ragstore.engine import pipeline
from ragstore.engine.pipeline import StagedProgress

MAX_STILL_SECONDS = 2.0
"""The longest the screen may stay unchanged while a command runs."""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WORDS = [
    *("refund", "policy", "shipping", "headphones", "warranty", "battery", "return", "days"),
    *("support", "order", "payment", "card", "store", "delivery", "courier", "parcel"),
    *("invoice", "account", "password", "charger", "cable", "screen"),
]


@dataclass
class Recorder:
    """A progress callback that keeps every count and every stage it is told."""

    counts: list[tuple[int, int]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)

    def __call__(self, done: int, total: int) -> None:
        self.counts.append((done, total))

    def stage(self, label: str) -> None:
        self.stages.append(label)


def assert_counts_up_to(counts: list[tuple[int, int]], embedded: int) -> None:
    """Chunks done only grow, never pass the total, and end at ``embedded`` of it."""
    done = [d for d, _ in counts]
    assert done == sorted(done)
    assert all(d <= total for d, total in counts)
    assert counts[-1] == (embedded, embedded)


def prose(seed: int, paragraphs: int) -> str:
    """Some paragraphs of varied words, about 120 tokens each."""
    rng = random.Random(seed)
    return "\n\n".join(
        " ".join(rng.choice(WORDS) for _ in range(100)) + "." for _ in range(paragraphs)
    )


def write_jsonl(path: Path, records: int) -> Path:
    """``records`` short records, one chunk each."""
    rng = random.Random(records)
    with path.open("w") as out:
        for i in range(records):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
            out.write(json.dumps({"id": f"r{i}", "title": f"record {i}", "text": text}) + "\n")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i, paragraphs in enumerate((2, 5, 1, 3, 4, 2)):
        (root / f"note-{i}.md").write_text(f"# Note {i}\n\n{prose(i, paragraphs)}\n")
    return root


# --- the library ----------------------------------------------------------------------


def test_folder_progress_counts_chunks_embedded_and_estimates_the_rest(
    sqlite_store: ragstore.Store,
    embedder: Embedder,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(pipeline, "BATCH_DOCUMENTS", 2)  # several batches from 6 files
    col = sqlite_store.create_collection("docs", embedder=embedder)
    first = Recorder()

    report = col.ingest([folder], progress=first)

    assert report.chunks_embedded > 10
    assert_counts_up_to(first.counts, report.chunks_embedded)
    assert len({done for done, _ in first.counts}) > 3  # it moved during the run
    estimates = [total for _, total in first.counts if total]
    assert all(0.5 < total / report.chunks_embedded < 2 for total in estimates)
    assert isinstance(first, StagedProgress)
    assert first.stages[0] == "listing files"
    assert "reading note-5.md (6/6 files)" in first.stages
    assert {"chunking", "embedding", "writing"} <= set(first.stages)
    assert capfd.readouterr() == ("", "")  # the library draws nothing itself


def test_reingest_counts_only_the_chunks_it_embeds_again(
    sqlite_store: ragstore.Store, embedder: Embedder, folder: Path
) -> None:
    col = sqlite_store.create_collection("docs", embedder=embedder)
    col.ingest([folder])
    (folder / "note-2.md").write_text(f"# Note 2\n\n{prose(99, 2)}\n")
    changed, unchanged = Recorder(), Recorder()

    after_edit = col.ingest([folder], progress=changed)
    again = col.ingest([folder], progress=unchanged)

    assert after_edit.documents_updated == 1 and 0 < after_edit.chunks_embedded < 5
    assert_counts_up_to(changed.counts, after_edit.chunks_embedded)
    # nothing to embed: the count says so at once and at the end
    assert again.chunks_embedded == 0 and set(unchanged.counts) == {(0, 0)}
    assert "embedding" not in unchanged.stages


def test_a_large_jsonl_file_reports_chunks_as_its_batches_embed(
    sqlite_store: ragstore.Store, embedder: Embedder, tmp_path: Path
) -> None:
    records = write_jsonl(tmp_path / "records.jsonl", 300)
    col = sqlite_store.create_collection("docs", embedder=embedder)
    calls: list[tuple[int, int]] = []

    report = col.ingest([records], progress=lambda done, total: calls.append((done, total)))

    assert report.chunks_embedded == 300
    assert_counts_up_to(calls, 300)
    # the first batch's total is already estimated from the share of the file it holds
    first_total = next(total for _, total in calls if total)
    assert 250 <= first_total <= 350
    done = sorted({d for d, _ in calls})
    assert max(b - a for a, b in itertools.pairwise(done)) <= pipeline.EMBED_TEXTS


# --- the command line -----------------------------------------------------------------


@dataclass
class Screen:
    """What a process wrote to its terminal, with when (seconds after it started)."""

    writes: list[tuple[float, str]]
    ended: float
    returncode: int

    @property
    def text(self) -> str:
        """Everything written, with escape sequences."""
        return "".join(data for _, data in self.writes)

    def lines(self) -> list[tuple[float, str]]:
        """Each visible line drawn that differs from the one before, with its time."""
        drawn: list[tuple[float, str]] = []
        for at, data in self.writes:
            for line in re.split(r"[\r\n]+", ANSI.sub("", data)):
                if line.strip() and (not drawn or drawn[-1][1] != line.strip()):
                    drawn.append((at, line.strip()))
        return drawn

    def longest_still(self) -> tuple[float, float]:
        """The longest time the screen stayed unchanged, from the start to the end of
        the process, and when that stillness began."""
        times = [0.0] + [at for at, _ in self.lines()] + [self.ended]
        return max((b - a, a) for a, b in itertools.pairwise(times))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a first session: no store or log level chosen by it."""
    unset = ("RAGSTORE_PATH", "RAGSTORE_LOG_LEVEL", "NO_COLOR", "TERM")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return base | {"TERM": "xterm-256color", "HF_HUB_OFFLINE": "1"} | extra


def on_terminal(*args: str, env: dict[str, str] | None = None) -> Screen:
    """``python -m ragstore ARGS`` on a 120-column pseudo-terminal, recording each write."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "ragstore", *args],
        stdin=follower, stdout=follower, stderr=follower, env=env or cli_env(),
    )  # fmt: skip
    os.close(follower)
    writes: list[tuple[float, str]] = []
    try:
        while time.monotonic() - started < 300:
            if select.select([leader], [], [], 0.05)[0]:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the process closed its side
                    break
                if not data:
                    break
                writes.append((time.monotonic() - started, data.decode(errors="replace")))
            elif process.poll() is not None:
                break
        returncode = process.wait(timeout=60)
    finally:
        os.close(leader)
    return Screen(writes, time.monotonic() - started, returncode)


def test_the_bar_counts_chunks_with_rate_and_eta_and_never_stands_still(
    tmp_path: Path,
) -> None:
    records = write_jsonl(tmp_path / "records.jsonl", 200)

    screen = on_terminal("--store", str(tmp_path / "store"), "ingest", str(records))

    assert screen.returncode == 0, screen.text
    lines = [line for _, line in screen.lines()]
    assert any("loading the model" in line for line in lines)
    counts = {m[0] for line in lines for m in re.findall(r"(\d+)/(\d+) chunks", line)}
    assert "200" in counts and len(counts) > 3  # the count moved during the run
    assert any(re.search(r"[\d.]+ chunks/s ETA \d+:\d\d:\d\d", line) for line in lines)
    assert "chunks embedded: 200" in lines[-1]
    still, since = screen.longest_still()
    last = screen.lines()[-1][0]
    print(
        f"still <= {still:.2f} s (from {since:.2f}); last line {last:.2f}, exit {screen.ended:.2f}"
    )
    assert still <= MAX_STILL_SECONDS, f"still for {still:.2f} s from {since:.2f} s"


@pytest.mark.slow
def test_readme_command_1_shows_progress_until_the_first_answer(tmp_path: Path) -> None:
    """A first session: no model cache yet, the sample folder, then the README's query."""
    env = cli_env(RAGSTORE_MODEL_CACHE=str(tmp_path / "models"))
    store = str(tmp_path / "store")

    ingest = on_terminal("--store", store, "ingest", str(SAMPLE_DOCS), env=env)
    query = on_terminal("--store", store, "query", "how long do I have to return headphones?",
                        "-k", "3", env=env)  # fmt: skip

    assert ingest.returncode == 0 and query.returncode == 0, ingest.text + query.text
    assert "preparing the query model (once" in ingest.text
    assert "preparing the query model" in " ".join(line for _, line in ingest.lines())
    assert "policies/refunds.md" in query.text
    for screen in (ingest, query):
        still, since = screen.longest_still()
        assert still <= MAX_STILL_SECONDS, f"still for {still:.2f} s from {since:.2f} s"


def test_without_a_terminal_or_with_quiet_stderr_holds_no_bar(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nRefunds take thirty days.\n")

    piped = subprocess.run(
        [sys.executable, "-m", "ragstore", "--store", store, "ingest", str(tmp_path / "docs")],
        capture_output=True, text=True, env=cli_env(), timeout=300, check=False,
    )  # fmt: skip
    (tmp_path / "docs" / "a.md").write_text("# A\n\nRefunds take sixty days.\n")
    quiet = on_terminal("--store", store, "ingest", "--quiet", str(tmp_path / "docs"))

    assert piped.returncode == 0 and "documents added: 1" in piped.stdout
    assert "\x1b" not in piped.stderr and "chunks" not in piped.stderr
    assert quiet.returncode == 0 and "documents updated: 1" in quiet.text
    assert "\x1b" not in quiet.text and "loading the model" not in quiet.text
