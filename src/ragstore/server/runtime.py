"""What a running server holds: the store, the model, the pools, the jobs, the metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragstore.answer.llm import ChatModel, LLMSettings
from ragstore.engine.store import Store
from ragstore.errors import InvalidInput
from ragstore.inputs import check_json
from ragstore.server.auth import KeyRing
from ragstore.server.errors import ApiError
from ragstore.server.jobs import JOBS_FILENAME, JobBoard, JobRunner
from ragstore.server.metrics import LLMMetrics, Metrics
from ragstore.server.settings import ServerSettings
from ragstore.server.tenancy import Collections, ServerEmbedder, split_name
from ragstore.server.work import WorkPool

log = logging.getLogger(__name__)


class Runtime:
    """The server's state, built at start-up and released at shutdown."""

    def __init__(
        self, settings: ServerSettings, keys: KeyRing, run_dir: Path | None = None
    ) -> None:
        """``run_dir`` is the folder a server's worker processes share (``None`` for a
        server of one process)."""
        limits = settings.limits
        self.settings = settings
        self.limits = limits
        self.keys = keys
        self.metrics = Metrics()
        self.search_pool = self._pool("search", limits.search_workers, limits.search_queue)
        self.write_pool = self._pool("write", limits.write_workers, limits.write_queue)
        self.answer_pool = self._pool("answer", limits.answer_workers, limits.answer_queue)
        self.llm = _language_model(self.metrics)
        board = JobBoard(run_dir / JOBS_FILENAME if run_dir is not None else None)
        rejected = self.metrics.rejected
        self.jobs = JobRunner(
            board, limits.max_pending_jobs, limits.jobs_kept, limits.retry_after_s,
            lambda pool: rejected.labels(pool).inc(),
        )  # fmt: skip
        self.store: Store | None = None
        self._collections: Collections | None = None
        self._ready = threading.Event()
        self.metrics.watch(self._sizes, self.jobs.counts)

    def _pool(self, name: str, workers: int, queue: int) -> WorkPool:
        rejected = self.metrics.rejected.labels(name)
        depth = self.metrics.queue_depth.labels(name)
        return WorkPool(
            name, workers, queue, self.limits.retry_after_s,
            on_reject=lambda _: rejected.inc(), on_depth=depth.set,
        )  # fmt: skip

    def start(self) -> None:
        """Open the store now and load the model in the background (``/readyz`` says
        when it is done)."""
        self.store = Store(self.settings.store_path)
        threading.Thread(target=self._load_model, name="ragstore-model", daemon=True).start()

    @property
    def ready(self) -> bool:
        """The store is open and the model loaded."""
        return self._ready.is_set()

    @property
    def collections(self) -> Collections:
        """The open collections; 503 until the server is ready."""
        if self._collections is None:
            raise ApiError(503, "server is starting: model not loaded yet", kind="not_ready",
                           headers={"Retry-After": "1"})  # fmt: skip
        return self._collections

    def cache_stats(self) -> dict[str, Any]:
        """The store's query cache statistics."""
        return self._store().cache.stats().to_dict()

    def cache_clear(self) -> int:
        """Empty the store's query cache; how many entries there were."""
        return self._store().cache.clear()

    def snapshot(
        self, folder: Path, collections: list[str] | None, keep: int | None
    ) -> dict[str, Any]:
        """Take a snapshot of the store into ``folder``; its summary."""
        taken = self._store().snapshot(folder, collections=collections, keep=keep)
        return taken.to_dict()

    def doctor(self, collections: list[str] | None, repair: bool) -> dict[str, Any]:
        """Examine (and with ``repair``, first fix) the store; its findings, which the
        doctor gauges on ``/metrics`` then show."""
        diagnosis = self._store().doctor(collections=collections, repair=repair)
        self.metrics.record_diagnosis(diagnosis)
        return diagnosis.to_dict()

    def _store(self) -> Store:
        if self.store is None:
            raise ApiError(503, "store is not open", kind="not_ready")
        return self.store

    def stop(self) -> None:
        """Let the running job finish its batch, drain the pools, close the store."""
        self.jobs.shutdown()
        self.write_pool.shutdown()
        self.answer_pool.shutdown()
        self.search_pool.shutdown()
        if self.llm is not None:
            self.llm.close()
        if self.store is not None:
            self.store.close()
        self.metrics.close()
        log.info("store closed")

    def _load_model(self) -> None:
        try:
            self._open_collections()
        except Exception:
            log.exception("could not load the model; the server stays not ready")

    def _open_collections(self) -> None:
        import torch

        from ragstore.embed import load_default

        # Parallelism comes from the worker pools; one torch thread per call keeps a
        # query from fighting an ingest for the same cores.
        torch.set_num_threads(1)
        observe = self.metrics.embedding.labels
        embedder = ServerEmbedder(
            load_default, lambda kind, seconds: observe(kind).observe(seconds)
        )
        embedder.warm_up()
        assert self.store is not None
        self._collections = Collections(self.store, embedder)
        self._ready.set()
        log.info("ready: model loaded", extra={"model": embedder.name})

    def _sizes(self) -> Iterator[tuple[str, str, int, int]]:
        if self.store is None:
            return
        for info in self.store.list_collections():
            names = split_name(info.name)
            if names is not None:
                yield names[0], names[1], info.documents, info.chunks


def _language_model(metrics: Metrics) -> ChatModel | None:
    """The model ``RAGSTORE_LLM_*`` configures, reporting to the metrics (``None``: the
    answers are extractive). One per process, so its breaker and limiter see every call."""
    settings = LLMSettings.from_env()
    if settings is None:
        return None
    metrics.llm_breaker.labels(settings.model).set(0)
    log.info("answers are written by a language model", extra={"model": settings.model})
    return ChatModel(settings, observer=LLMMetrics(metrics))


def check_text(value: str | None, limit: int, field: str) -> None:
    """413 naming ``field`` when a text is longer than ``limit`` characters."""
    if value is not None and len(value) > limit:
        raise ApiError(413, f"{field} is {len(value)} characters; at most {limit}", field=field)


def check_json_field(value: object, limit: int, field: str) -> None:
    """422 naming ``field`` (or the path inside it) unless a JSON value (a filter,
    metadata, an index config) nests at most ``limit`` deep, has string keys, valid
    Unicode in every key and string, and finite numbers only.

    Walked without recursion (see :func:`ragstore.inputs.check_json`), at any depth.
    """
    if value is None:
        return
    try:
        check_json(value, field, max_depth=limit)
    except InvalidInput as error:
        # A bad key is reported as "<path> key": name the object that holds it.
        if error.field is not None:
            error.field = error.field.removesuffix(" key")
        raise
