"""Answering one question over a collection: the stages, the answer cache, the fallback.

A question runs through these stages, each timed in ``Answer.timings_ms`` when it ran:

- ``cache``: the answer cache's exact level (before anything is embedded), then its
  semantic level once the question's vector is known, and storing the answer;
- ``embed``: the question, once; the vector serves the cache and the search;
- ``retrieve``: the collection's search;
- ``generate``: the hits packed into the model's context budget, the prompt, the
  completion and its citations, or, with no model configured, the extractive answer.

A model that fails or sheds the call (:class:`~ragstore.errors.LLMError`) never fails
the question: the extractive answer comes back with ``degraded=True`` and the error's
``reason``. Degraded answers are not cached.

The answer cache is the query cache under a scope of its own (``kind: "answer"``, the
model, the prompt version and the token budgets join the search's key): the same exact
and semantic levels, TTLs from the freshness of the documents, bounds and backends, and
an answer is dropped as soon as a document it was built from changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ragstore.answer.context import PROMPT_VERSION, Passage, cite, pack, prompt
from ragstore.answer.extractive import extract
from ragstore.answer.llm import ChatModel, Completion, CompletionStream, LLMSettings
from ragstore.answer.types import Answer, AnswerCached
from ragstore.cache.base import Vector
from ragstore.cache.query import CacheKey, QueryCache, Recall
from ragstore.embed.base import Embedder
from ragstore.errors import LLMError
from ragstore.types import Hit

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
DEFAULT_K = 5
"""Passages retrieved for an answer unless told."""
EXTRACTIVE = "extractive"
"""The model name extractive answers are cached under."""


@dataclass(frozen=True, slots=True)
class Question:
    """One question and what the engine hands over to answer it: the embedder (for the
    extractive answer), how to embed the question (``None`` for a keyword search), how
    to search with that vector, and the search's cache key (``cache`` ``None``: the
    answer cache is not used)."""

    text: str
    embedder: Embedder
    embed: Callable[[], Vector | None]
    search: Callable[[Vector | None], list[Hit]]
    key: CacheKey
    cache: QueryCache | None = None


def answer(question: Question, llm: ChatModel | None) -> Answer:
    """The answer to ``question``: from the cache, written by ``llm`` from the
    retrieved passages, or extractive (with no ``llm``, or degraded when it fails)."""
    run = _Run(question, llm)
    found = run.from_cache()
    if found is not None:
        return run.done(found)
    hits = run.retrieve()
    if llm is None or not hits:
        return run.done(run.extractive(hits))
    try:
        written = run.timed("generate", lambda: run.generate(llm, hits))
    except LLMError as error:
        return run.done(run.extractive(hits, error))
    return run.done(written)


def stream(question: Question, llm: ChatModel | None) -> AnswerStream:
    """:func:`answer` as it is written: the cache is looked up and the search runs now;
    iterating the stream generates the text."""
    run = _Run(question, llm)
    found = run.from_cache()
    if found is not None:
        return AnswerStream(run, found.hits, ready=found)
    hits = run.retrieve()
    if llm is None or not hits:
        return AnswerStream(run, hits, ready=run.extractive(hits))
    return AnswerStream(run, hits)


class AnswerStream:
    """An answer being written. ``hits`` (the passages it is built from) and ``cached``
    are known at once; iterating yields the text as it arrives, and ``answer`` holds the
    whole :class:`Answer` once the iteration has ended.

    A cached or extractive answer comes as one piece. When generation fails before any
    text arrived, the degraded extractive answer comes as one piece instead; when it
    fails midway, the iteration ends and ``answer`` is that degraded answer, whose text
    replaces what was streamed.
    """

    def __init__(self, run: _Run, hits: list[Hit], *, ready: Answer | None = None) -> None:
        self.hits = hits
        self.cached: AnswerCached = None if ready is None else ready.cached
        self.answer: Answer | None = None
        self._run = run
        self._ready = ready
        self._stream: CompletionStream | None = None

    def __iter__(self) -> Iterator[str]:
        if self._ready is not None:
            self.answer = self._run.done(self._ready)
            yield from [self.answer.text] if self.answer.text else []
            return
        yield from self._generate()

    def close(self) -> None:
        """Stop generating (the reader went away); nothing is cached."""
        if self._stream is not None:
            self._stream.close()

    def _generate(self) -> Iterator[str]:
        run, llm = self._run, self._run.llm
        assert llm is not None
        started = time.perf_counter()
        streamed = False
        try:
            passages = run.passages(llm, self.hits)
            self._stream = llm.stream(prompt(run.question.text, passages))
            for delta in self._stream:
                streamed = True
                yield delta
            written = run.written(self.hits, passages, _completion(self._stream))
        except LLMError as error:
            run.add("generate", started)
            self.answer = run.done(run.extractive(self.hits, error))
            if not streamed and self.answer.text:
                yield self.answer.text
            return
        run.add("generate", started)
        self.answer = run.done(written)


class _Run:
    """One question on its way through the stages, with their timings."""

    def __init__(self, question: Question, llm: ChatModel | None) -> None:
        self.question = question
        self.llm = llm
        self.timings: dict[str, float] = {}
        self.vector: Vector | None = None
        self.recall: Recall | None = None
        cache = question.cache
        if cache is not None:
            key = replace(question.key, extra=answer_scope(llm))
            self.recall = self.timed("cache", lambda: cache.recall(key))

    def timed(self, stage: str, step: Callable[[], _T]) -> _T:
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.add(stage, started)

    def add(self, stage: str, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self.timings[stage] = self.timings.get(stage, 0.0) + elapsed

    def from_cache(self) -> Answer | None:
        """The cached answer, if any (the question is embedded on the way)."""
        recall = self.recall
        if recall is not None:
            payload = self.timed("cache", recall.exact)
            if payload is not None:
                return revived(payload, "exact")
        self.vector = self.timed("embed", self.question.embed)
        if recall is None:
            return None
        payload = self.timed("cache", lambda: recall.semantic(self.vector))
        return None if payload is None else revived(payload, "semantic")

    def retrieve(self) -> list[Hit]:
        return self.timed("retrieve", lambda: self.question.search(self.vector))

    def passages(self, llm: ChatModel, hits: list[Hit]) -> list[Passage]:
        budget = llm.settings.context_tokens
        return pack(hits, budget_tokens=budget, count_tokens=llm.count_tokens)

    def generate(self, llm: ChatModel, hits: list[Hit]) -> Answer:
        passages = self.passages(llm, hits)
        completion = llm.complete(prompt(self.question.text, passages))
        return self.written(hits, passages, completion)

    def written(self, hits: list[Hit], passages: list[Passage], completion: Completion) -> Answer:
        text, citations, dropped = cite(completion.text, passages)
        return Answer(
            question=self.question.text,
            text=text,
            citations=citations,
            hits=hits,
            mode="generated",
            model=completion.model,
            usage=completion.usage,
            cost_usd=completion.cost_usd,
            dropped_citations=dropped,
        )

    def extractive(self, hits: list[Hit], error: LLMError | None = None) -> Answer:
        if error is not None:  # its message names what to fix, never the key
            logger.warning("generation failed, answering extractively: %s", error)
        embedder, vector = self.question.embedder, self.vector
        text, citations = self.timed(
            "generate",
            lambda: extract(self.question.text, hits, embedder=embedder, query_vector=vector),
        )
        return Answer(
            question=self.question.text,
            text=text,
            citations=citations,
            hits=hits,
            mode="extractive",
            degraded=error is not None,
            reason=None if error is None else error.reason,
        )

    def done(self, result: Answer) -> Answer:
        """Cache a fresh, whole answer; time it; log it."""
        recall = self.recall
        if recall is not None and result.cached is None and not result.degraded:
            payload = json.dumps(stored(result), ensure_ascii=False)
            built_from = [hit.doc_id for hit in result.hits]
            self.timed("cache", lambda: recall.keep(self.vector, payload, built_from))
        result.timings_ms = {stage: round(ms, 3) for stage, ms in self.timings.items()}
        _log(self.question.key.collection_name, result)
        return result


def answer_scope(llm: ChatModel | None) -> dict[str, Any]:
    """What an answer's cache key adds to its search's: the kind, the model, the prompt
    version and the token budgets."""
    if llm is None:
        return {"kind": "answer", "model": EXTRACTIVE, "prompt": PROMPT_VERSION}
    settings = llm.settings
    return {
        "kind": "answer",
        "model": llm.model,
        "prompt": PROMPT_VERSION,
        "context_tokens": settings.context_tokens,
        "answer_tokens": settings.max_answer_tokens,
    }


def stored(result: Answer) -> dict[str, Any]:
    """An answer as the cache keeps it: without its timings and cache level."""
    data = result.to_dict()
    for name in ("timings_ms", "cached"):
        data.pop(name)
    data["usage"].pop("total_tokens")
    for hit in data["hits"]:
        hit.pop("cached")
    return data


def revived(payload: str, level: AnswerCached) -> Answer:
    """A cached answer: it cost no tokens this time, and its hits say where it came from."""
    data = json.loads(payload)
    data["hits"] = [{**hit, "cached": level} for hit in data["hits"]]
    data["usage"] = {}
    data["cost_usd"] = None if data["cost_usd"] is None else 0.0
    return Answer.from_dict(data | {"cached": level})


def _completion(written: CompletionStream) -> Completion:
    if written.completion is None:
        raise LLMError("the model's stream ended without a completion", reason="bad_response")
    return written.completion


def _log(collection: str, result: Answer) -> None:
    """One line per answer, with its stage timings (never the question or the key)."""
    fields = {
        "collection": collection,
        "answer_mode": result.mode,
        "model": result.model,
        "cached": result.cached,
        "degraded": result.degraded,
        "reason": result.reason,
        "hits": len(result.hits),
        "citations": len(result.citations),
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "cost_usd": result.cost_usd,
        "timings_ms": result.timings_ms,
    }
    logger.info("answer", extra=fields)


_DEFAULT_LOCK = threading.Lock()
_DEFAULTS: dict[tuple[tuple[str, str], ...], ChatModel | None] = {}


def default_llm(environ: Mapping[str, str] = os.environ) -> ChatModel | None:
    """The model ``RAGSTORE_LLM_*`` configures, one per configuration in a process (so
    that its circuit breaker and rate limiter see every call); ``None`` when
    ``RAGSTORE_LLM_URL`` is unset."""
    config = tuple(sorted((k, v) for k, v in environ.items() if k.startswith("RAGSTORE_LLM_")))
    with _DEFAULT_LOCK:
        if config not in _DEFAULTS:
            settings = LLMSettings.from_env(environ)
            _DEFAULTS[config] = None if settings is None else ChatModel(settings)
        return _DEFAULTS[config]
