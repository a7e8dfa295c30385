"""Answers over HTTP: one JSON answer, or the answer as Server-Sent Events.

A streamed answer is written on the answer pool while the event loop sends what it has
(``text/event-stream``), in this order::

    event: hits      data: {"hits": [...], "cached": null | "exact" | "semantic"}
    event: delta     data: {"text": "..."}      (any number: the text as it is written)
    event: answer    data: {the whole answer, as the JSON answer has it}

or, if the server fails midway, ``event: error`` with the usual error body. The
``answer`` event is the answer: when the model fails after some text was sent, its
text (the extractive answer, ``degraded: true``) replaces the deltas. Errors found
before anything is sent (a bad filter, an unknown collection, a full pool) are answered
as ordinary JSON errors, with their status.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from ragstore.answer.service import AnswerStream
from ragstore.answer.types import Answer
from ragstore.server.errors import ApiError
from ragstore.server.responses import hit_dict, json_bytes
from ragstore.server.runtime import Runtime, check_json_field, check_text
from ragstore.server.schemas import AnswerRequest

log = logging.getLogger(__name__)

Event = tuple[str, Any]
"""An event name and what it carries, on its way from the pool to the event loop."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def check_answer(body: AnswerRequest, rt: Runtime) -> None:
    """413 or 422 naming the field when a question exceeds the server's limits."""
    check_text(body.question, rt.limits.max_query_chars, "question")
    if body.k > rt.limits.max_k:
        raise ApiError(422, f"k must be at most {rt.limits.max_k}", field="k")
    check_json_field(body.filter, rt.limits.max_filter_depth, "filter")


def answer_dict(answer: Answer) -> dict[str, Any]:
    """The JSON form of an answer (its hits as ``POST .../search`` gives them)."""
    return answer.to_dict() | {"hits": [hit_dict(hit) for hit in answer.hits]}


async def answer_once(rt: Runtime, tenant: str, collection: str, body: AnswerRequest) -> Answer:
    """The whole answer, made on the answer pool and counted in the metrics."""
    found = await rt.answer_pool.run(lambda: _ask(rt, tenant, collection, body, False))
    assert isinstance(found, Answer)
    rt.metrics.record_answer(found)
    return found


async def answer_stream(
    rt: Runtime, tenant: str, collection: str, body: AnswerRequest
) -> StreamingResponse:
    """The answer as Server-Sent Events; an error before the first event raises here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    stop = threading.Event()

    def put(event: str, data: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (event, data))

    work = asyncio.ensure_future(
        rt.answer_pool.run(lambda: _produce(rt, tenant, collection, body, put, stop))
    )
    first = asyncio.ensure_future(queue.get())
    await asyncio.wait({work, first}, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        first.cancel()
        work.result()  # raises what kept the answer from starting
    events = _events(first.result(), queue, stop)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _ask(
    rt: Runtime, tenant: str, collection: str, body: AnswerRequest, stream: bool
) -> Answer | AnswerStream:
    col = rt.collections.get(tenant, collection)
    return col.answer(
        body.question,
        k=body.k,
        where=body.filter,
        mode=body.mode,
        min_score=body.min_score,
        cache=body.cache,
        tenant=tenant,
        extractive=body.extractive,
        llm=rt.llm,
        stream=stream,
    )


def _produce(
    rt: Runtime,
    tenant: str,
    collection: str,
    body: AnswerRequest,
    put: Callable[[str, Any], None],
    stop: threading.Event,
) -> None:
    """Runs on the pool: the answer's events, until it is whole or the reader left."""
    written = _ask(rt, tenant, collection, body, True)
    assert isinstance(written, AnswerStream)
    put("hits", {"hits": [hit_dict(hit) for hit in written.hits], "cached": written.cached})
    try:
        for delta in written:
            if stop.is_set():
                written.close()
                return
            put("delta", {"text": delta})
    except Exception as error:  # the response has started: say so in the stream
        log.error("answer stream failed", exc_info=error)
        message = "internal error while answering"
        put("error", {"error": {"type": "internal", "message": message, "field": None}})
        return
    assert written.answer is not None
    rt.metrics.record_answer(written.answer)
    put("answer", answer_dict(written.answer))


async def _events(
    first: Event, queue: asyncio.Queue[Event], stop: threading.Event
) -> AsyncIterator[bytes]:
    try:
        event = first
        while True:
            name, data = event
            yield b"event: %s\ndata: %s\n\n" % (name.encode(), json_bytes(data))
            if name in ("answer", "error"):
                return
            event = await queue.get()
    finally:
        stop.set()  # the reader may have gone: generation stops at the next delta
