"""Ingest jobs: large batches written in the background, with progress and
per-document errors.

Jobs live in this process's memory (they are gone after a restart; the documents they
wrote are not). One thread runs them in order, writing ``JOB_BATCH`` documents per
transaction; an invalid document is reported by index and id and the rest are written.
On shutdown the running job stops after its current batch and is marked ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ragstore.errors import RagstoreError
from ragstore.records import text_records, vector_records
from ragstore.server.errors import ApiError
from ragstore.store.local import Collection
from ragstore.types import IngestReport

log = logging.getLogger(__name__)

JOB_BATCH = 64
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
Record = Mapping[str, Any]


@dataclass
class Job:
    """One ingest job's state, as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    tenant: str
    collection: str
    total: int
    status: Status = "queued"
    done: int = 0
    report: IngestReport = field(default_factory=IngestReport)
    errors: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        report = self.report.to_dict()
        report.pop("errors", None)
        return {
            "id": self.id,
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
        }


class JobRunner:
    """Accepts jobs up to a bound, runs them one at a time, remembers the latest."""

    def __init__(
        self,
        max_pending: int,
        kept: int,
        retry_after_s: int,
        on_reject: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ragstore-jobs")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._max_pending = max_pending
        self._kept = kept
        self._retry_after = str(retry_after_s)
        self._on_reject = on_reject

    def submit(self, tenant: str, collection: Collection, records: Sequence[Record]) -> Job:
        """Queue a job; 429 when ``max_pending`` jobs are already queued or running."""
        name = collection.name.split(".", 1)[-1]
        job = Job(uuid.uuid4().hex, tenant, name, len(records))
        with self._lock:
            if self._pending() >= self._max_pending:
                self._on_reject("jobs")
                raise ApiError(
                    429, "too many ingest jobs pending, retry later",
                    headers={"Retry-After": self._retry_after},
                )  # fmt: skip
            self._jobs[job.id] = job
            self._forget_old()
        self._executor.submit(self._run, job, collection, list(records))
        return job

    def get(self, job_id: str) -> Job | None:
        """A job by id, if this process still remembers it."""
        with self._lock:
            return self._jobs.get(job_id)

    def counts(self) -> list[tuple[str, float]]:
        """How many remembered jobs are in each status."""
        with self._lock:
            statuses = [j.status for j in self._jobs.values()]
        return [(s, float(statuses.count(s))) for s in STATUSES]

    def shutdown(self) -> None:
        """Stop the running job after its current batch; cancel the queued ones."""
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _pending(self) -> int:
        return sum(j.status in ("queued", "running") for j in self._jobs.values())

    def _forget_old(self) -> None:
        finished = [i for i, j in self._jobs.items() if j.status not in ("queued", "running")]
        for job_id in finished[: max(len(self._jobs) - self._kept, 0)]:
            del self._jobs[job_id]

    def _run(self, job: Job, collection: Collection, records: list[Record]) -> None:
        if self._stopping.is_set():
            self._finish(job, "cancelled")
            return
        job.status = "running"
        try:
            valid = self._validate(job, collection, records)
            for start in range(0, len(valid), JOB_BATCH):
                if self._stopping.is_set():
                    self._finish(job, "cancelled")
                    return
                self._write(job, collection, valid[start : start + JOB_BATCH])
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
