"""Jobs: large ingest batches written in the background, with progress and
per-document errors, and long store tasks (a re-index) with progress and a result.

Each worker process runs the jobs it accepted on one thread, in order, writing
``JOB_BATCH`` documents per transaction; an invalid document is reported by index and
id and the rest are written. Every job's state is published to a :class:`JobBoard`
that all of a server's worker processes share, so ``GET /v1/jobs/{id}`` answers the
same from any of them. The board lasts as long as the server (the documents a job
wrote are kept; its record is not). On shutdown the running job stops after its
current batch and is marked ``cancelled``; a job whose worker process died is marked
``failed``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragstore.engine.store import Collection
from ragstore.errors import RagstoreError
from ragstore.records import text_records, vector_records
from ragstore.server.errors import ApiError
from ragstore.types import IngestReport

log = logging.getLogger(__name__)

JOB_BATCH = 64
JOBS_FILENAME = "jobs.sqlite"
ORPHANED = "the worker process running this job exited"
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
_PENDING = "status IN ('queued', 'running')"
Record = Mapping[str, Any]
Task = Callable[[Callable[[int, int], None]], dict[str, Any]]
"""A long store task: called with a ``progress(done, total)`` callback, returns its
report."""
TASK_PROGRESS_S = 0.5
"""A running task's progress is published at most this often."""


@dataclass
class Job:
    """One job's state, as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    tenant: str
    collection: str
    total: int
    kind: str = "ingest"
    status: Status = "queued"
    done: int = 0
    report: IngestReport = field(default_factory=IngestReport)
    errors: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    pid: int = field(default_factory=os.getpid)
    result: dict[str, Any] | None = None
    """A task's outcome (its report, or its error)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        report = self.report.to_dict()
        report.pop("errors", None)
        return {
            "id": self.id,
            "kind": self.kind,
            "tenant": self.tenant,
            "collection": self.collection,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "progress": round(self.done / self.total, 4) if self.total else 1.0,
            "report": report,
            "errors": list(self.errors),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "result": self.result,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    state TEXT NOT NULL
)
"""


class JobBoard:
    """The latest state of every job, as ``GET /v1/jobs/{id}`` shows it.

    A SQLite file at ``path`` that a server's worker processes share, or a private
    in-memory table for a server of one process.
    """

    def __init__(self, path: Path | None = None) -> None:
        target = str(path) if path is not None else ":memory:"
        self._conn = sqlite3.connect(
            target, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            if path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)

    def add(self, job: Job, max_pending: int, kept: int) -> bool:
        """Record a new job unless ``max_pending`` are already queued or running;
        forget the oldest finished ones beyond ``kept``."""
        with self._lock, self._transaction() as conn:
            self._fail_orphans(conn)
            pending = conn.execute(f"SELECT count(*) FROM jobs WHERE {_PENDING}").fetchone()[0]
            if pending >= max_pending:
                return False
            conn.execute(
                "INSERT INTO jobs (id, pid, status, state) VALUES (?, ?, ?, ?)",
                (job.id, job.pid, job.status, json.dumps(job.to_dict())),
            )
            conn.execute(
                f"DELETE FROM jobs WHERE NOT {_PENDING} AND seq NOT IN "
                f"(SELECT seq FROM jobs WHERE NOT {_PENDING} ORDER BY seq DESC LIMIT ?)",
                (kept,),
            )
            return True

    def save(self, job: Job) -> None:
        """Publish a job's current state."""
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET status = ?, state = ? WHERE id = ?",
                (job.status, json.dumps(job.to_dict()), job.id),
            )

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's state by id, if the board still holds it."""
        with self._lock, self._transaction() as conn:
            self._fail_orphans(conn)
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def counts(self) -> list[tuple[str, float]]:
        """How many jobs the board holds in each status."""
        with self._lock, self._transaction() as conn:
            self._fail_orphans(conn)
            found = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
        return [(s, float(found.get(s, 0))) for s in STATUSES]

    def close(self) -> None:
        """Close the board's connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @staticmethod
    def _fail_orphans(conn: sqlite3.Connection) -> None:
        """Mark ``failed`` the pending jobs of worker processes that no longer run."""
        rows = conn.execute(f"SELECT id, pid, state FROM jobs WHERE {_PENDING}").fetchall()
        for job_id, pid, state in rows:
            if _alive(int(pid)):
                continue
            orphan = json.loads(state)
            orphan.update(status="failed", finished_at=time.time())
            orphan["errors"].append({"index": None, "id": None, "field": None, "message": ORPHANED})
            conn.execute(
                "UPDATE jobs SET status = 'failed', state = ? WHERE id = ?",
                (json.dumps(orphan), job_id),
            )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class JobRunner:
    """Accepts jobs up to a bound, runs them one at a time, publishes their state."""

    def __init__(
        self,
        board: JobBoard,
        max_pending: int,
        kept: int,
        retry_after_s: int,
        on_reject: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ragstore-jobs")
        # Tasks run apart, so that a long re-index never holds up ingest jobs.
        self._tasks = ThreadPoolExecutor(1, thread_name_prefix="ragstore-tasks")
        self._board = board
        self._stopping = threading.Event()
        self._max_pending = max_pending
        self._kept = kept
        self._retry_after = str(retry_after_s)
        self._on_reject = on_reject

    def submit(self, tenant: str, collection: Collection, records: Sequence[Record]) -> Job:
        """Queue a job; 429 when ``max_pending`` jobs are already queued or running
        (in all of the server's worker processes)."""
        name = collection.name.split(".", 1)[-1]
        job = self._accepted(Job(uuid.uuid4().hex, tenant, name, len(records)))
        self._executor.submit(self._run, job, collection, list(records))
        return job

    def submit_task(self, tenant: str, collection: str, kind: str, work: Task) -> Job:
        """Queue a long store task; ``work(progress)`` returns its report."""
        job = self._accepted(Job(uuid.uuid4().hex, tenant, collection, 0, kind))
        self._tasks.submit(self._run_task, job, work)
        return job

    def _accepted(self, job: Job) -> Job:
        if not self._board.add(job, self._max_pending, self._kept):
            self._on_reject("jobs")
            raise ApiError(
                429, "too many jobs pending, retry later",
                headers={"Retry-After": self._retry_after},
            )  # fmt: skip
        return job

    def _run_task(self, job: Job, work: Task) -> None:
        if self._stopping.is_set():
            self._finish(job, "cancelled")
            return
        job.status = "running"
        self._board.save(job)
        saved = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal saved
            job.done, job.total = done, total
            if time.monotonic() - saved > TASK_PROGRESS_S:
                saved = time.monotonic()
                self._board.save(job)

        try:
            job.result = work(progress)
        except RagstoreError as error:
            job.result = {"error": str(error), "field": getattr(error, "field", None)}
            self._finish(job, "failed")
            return
        except Exception:
            log.exception("task failed", extra={"job": job.id})
            job.result = {"error": "internal error; see the server log"}
            self._finish(job, "failed")
            return
        job.done = job.total
        self._finish(job, "succeeded")

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's state by id (from any worker process), if the board still holds it."""
        return self._board.get(job_id)

    def counts(self) -> list[tuple[str, float]]:
        """How many remembered jobs are in each status."""
        return self._board.counts()

    def shutdown(self) -> None:
        """Stop the running job after its current batch; cancel the queued ones."""
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=False)
        self._tasks.shutdown(wait=True, cancel_futures=False)
        self._board.close()

    def _run(self, job: Job, collection: Collection, records: list[Record]) -> None:
        if self._stopping.is_set():
            self._finish(job, "cancelled")
            return
        job.status = "running"
        self._board.save(job)
        try:
            valid = self._validate(job, collection, records)
            for start in range(0, len(valid), JOB_BATCH):
                if self._stopping.is_set():
                    self._finish(job, "cancelled")
                    return
                self._write(job, collection, valid[start : start + JOB_BATCH])
                self._board.save(job)
        except Exception:
            log.exception("ingest job failed", extra={"job": job.id})
            self._finish(job, "failed")
            return
        self._finish(job, "succeeded")

    def _validate(
        self, job: Job, collection: Collection, records: list[Record]
    ) -> list[tuple[int, Record]]:
        valid = []
        for i, record in enumerate(records):
            try:
                _check_record(collection, record)
            except RagstoreError as error:
                self._fail_document(job, i, record, error)
                job.done += 1
                continue
            valid.append((i, record))
        return valid

    def _write(self, job: Job, collection: Collection, batch: list[tuple[int, Record]]) -> None:
        try:
            _merge(job.report, collection.upsert([r for _, r in batch]))
        except RagstoreError:  # find the documents at fault, write the others
            for i, record in batch:
                try:
                    _merge(job.report, collection.upsert([record]))
                except RagstoreError as error:
                    self._fail_document(job, i, record, error)
        job.done += len(batch)

    def _fail_document(self, job: Job, index: int, record: Record, error: RagstoreError) -> None:
        field = getattr(error, "field", None)
        if isinstance(field, str):
            field = field.replace("records[0]", f"documents[{index}]", 1)
        doc_id = record.get("id") if isinstance(record, Mapping) else None
        message = str(error).replace("records[0]", f"documents[{index}]")
        job.errors.append({"index": index, "id": doc_id, "field": field, "message": message})
        job.report.documents_skipped += 1

    def _finish(self, job: Job, status: Status) -> None:
        job.status = status
        job.finished_at = time.time()
        self._board.save(job)


def _check_record(collection: Collection, record: Record) -> None:
    if collection.config.embedder is None:
        vector_records([record], collection.config.dim)
    else:
        text_records([record])


def _merge(total: IngestReport, part: IngestReport) -> None:
    for name in (
        "documents_added",
        "documents_updated",
        "documents_unchanged",
        "documents_skipped",
        "chunks_embedded",
        "chunks_reused",
    ):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.seconds = round(total.seconds + part.seconds, 3)
