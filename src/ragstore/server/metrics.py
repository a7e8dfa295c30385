"""Prometheus metrics of one server, in a registry of its own.

Counters, histograms and queue depths are updated as requests are served; collection
sizes and job counts are read when ``/metrics`` is scraped. A server of several worker
processes runs ``prometheus_client`` in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set before they start): each process writes its values to files there and a scrape,
whichever process answers it, adds them all up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ragstore.answer.llm import Completion
from ragstore.answer.types import Answer
from ragstore.engine.doctor import EXIT_CODES, Diagnosis

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip

LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
"""``ragstore_llm_breaker_state``'s values."""

Sizes = Callable[[], Iterable[tuple[str, str, int, int]]]
"""-> (tenant, collection, documents, chunks) for every collection."""
Gauges = Callable[[], Iterable[tuple[str, float]]]
"""-> (label value, value)."""


class Metrics:
    """Everything the server counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ragstore_http_requests", "HTTP requests served", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "ragstore_http_request_duration_seconds", "HTTP request latency",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.search = Histogram(
            "ragstore_search_duration_seconds", "Search latency, by mode and cache use",
            ["mode", "cached"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache = Counter(
            "ragstore_cache_lookups", "Query cache lookups by result", ["result"], registry=r
        )
        self.embedding = Histogram(
            "ragstore_embedding_duration_seconds", "Embedding latency, queries and passages",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.documents_written = Counter(
            "ragstore_documents_written", "Documents added or updated", registry=r
        )
        self.rejected = Counter(
            "ragstore_rejected", "Requests refused with 429, by pool", ["pool"], registry=r
        )
        self.jobs_started = Counter("ragstore_ingest_jobs", "Ingest jobs accepted", registry=r)
        self.queue_depth = Gauge(
            "ragstore_queue_depth", "Work running or waiting", ["pool"],
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.doctor_status = Gauge(
            "ragstore_doctor_status", "Last doctor run, per check: 0 ok, 1 warn, 2 fail",
            ["collection", "check"], multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self.doctor_figure = Gauge(
            "ragstore_doctor_figure", "Last doctor run: each numeric figure of each check",
            ["collection", "check", "figure"], multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip
        self._scraped: _Scraped | None = None
        self._add_answer_metrics(r)

    def _add_answer_metrics(self, r: CollectorRegistry) -> None:
        self.answers = Counter(
            "ragstore_answers", "Answers, by how they were made and cache level",
            ["mode", "cached", "degraded"], registry=r,
        )  # fmt: skip
        self.answer_stage = Histogram(
            "ragstore_answer_stage_duration_seconds", "Time an answer spent in each stage",
            ["stage"], buckets=(*LATENCY_BUCKETS, 60.0, 120.0), registry=r,
        )  # fmt: skip
        self.llm_tokens = Counter(
            "ragstore_llm_tokens", "Tokens the language model used, by kind (prompt, "
            "completion)", ["model", "kind"], registry=r,
        )  # fmt: skip
        self.llm_cost = Counter(
            "ragstore_llm_cost_usd", "What the language model's calls cost, in US dollars",
            ["model"], registry=r,
        )  # fmt: skip
        self.llm_latency = Histogram(
            "ragstore_llm_attempt_duration_seconds", "Each attempt at a language model call, "
            "by outcome", ["model", "outcome"], buckets=LLM_BUCKETS, registry=r,
        )  # fmt: skip
        self.llm_retries = Counter(
            "ragstore_llm_retries", "Language model attempts retried, by the failed attempt's "
            "outcome", ["model", "reason"], registry=r,
        )  # fmt: skip
        self.llm_breaker = Gauge(
            "ragstore_llm_breaker_state", "The language model's circuit breaker: 0 closed, "
            "1 half-open, 2 open", ["model"], multiprocess_mode="mostrecent", registry=r,
        )  # fmt: skip

    def record_answer(self, answer: Answer) -> None:
        """Count an answer served, and time its stages."""
        degraded = "true" if answer.degraded else "false"
        self.answers.labels(answer.mode, answer.cached or "no", degraded).inc()
        for stage, ms in answer.timings_ms.items():
            self.answer_stage.labels(stage).observe(ms / 1000)

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        """Set the doctor gauges to a run's findings."""
        for finding in diagnosis.findings:
            where = finding.collection or ""
            self.doctor_status.labels(where, finding.check).set(EXIT_CODES[finding.status])
            for name, value in _numbers(finding.figures):
                self.doctor_figure.labels(where, finding.check, name).set(value)

    def watch(self, sizes: Sizes, jobs: Gauges) -> None:
        """Read collection sizes and job counts at scrape time."""
        self._scraped = _Scraped(sizes, jobs)
        self.registry.register(self._scraped)

    def render(self) -> bytes:
        """The Prometheus text exposition, of every worker process when there are several."""
        if not multiprocess():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if self._scraped is not None:
            registry.register(self._scraped)
        return generate_latest(registry)

    def close(self) -> None:
        """Drop this process's live gauges from the shared totals (it is exiting)."""
        if multiprocess():
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class LLMMetrics:
    """The language model's calls as metrics: an ``LLMObserver`` for the server's model."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def on_attempt(self, model: str, outcome: str, seconds: float) -> None:
        """Time one attempt, by outcome."""
        self._m.llm_latency.labels(model, outcome).observe(seconds)

    def on_retry(self, model: str, reason: str) -> None:
        """Count a retry."""
        self._m.llm_retries.labels(model, reason).inc()

    def on_completion(self, completion: Completion) -> None:
        """Count the tokens and the cost of a call that succeeded."""
        usage = completion.usage
        self._m.llm_tokens.labels(completion.model, "prompt").inc(usage.prompt_tokens)
        self._m.llm_tokens.labels(completion.model, "completion").inc(usage.completion_tokens)
        if completion.cost_usd is not None:
            self._m.llm_cost.labels(completion.model).inc(completion.cost_usd)

    def on_breaker(self, model: str, state: str) -> None:
        """Show the breaker's state."""
        self._m.llm_breaker.labels(model).set(BREAKER_STATES.get(state, 0.0))


def multiprocess() -> bool:
    """Whether metrics are shared between worker processes."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Scraped(Collector):
    def __init__(self, sizes: Sizes, jobs: Gauges) -> None:
        self._sizes, self._jobs = sizes, jobs

    def collect(self) -> Iterator[Metric]:
        labels = ["tenant", "collection"]
        docs = GaugeMetricFamily(
            "ragstore_collection_documents", "Documents per collection", labels=labels
        )
        chunks = GaugeMetricFamily("ragstore_collection_chunks", "Chunks", labels=labels)
        for tenant, name, n_docs, n_chunks in self._sizes():
            docs.add_metric([tenant, name], n_docs)
            chunks.add_metric([tenant, name], n_chunks)
        yield docs
        yield chunks
        yield _gauge("ragstore_ingest_jobs_current", "Ingest jobs", "status", self._jobs())

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _gauge(
    name: str, doc: str, label: str, values: Iterable[tuple[str, float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value_label, value in values:
        family.add_metric([value_label], value)
    return family


def _numbers(figures: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numeric figures (nested ones named ``outer_inner``); not flags or lists."""
    for name, value in figures.items():
        if isinstance(value, Mapping):
            yield from _numbers(value, f"{prefix}{name}_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{name}", float(value)
