"""A stand-in for an OpenAI-compatible chat-completions endpoint, for tests.

A real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, a free port) that speaks
``POST /v1/chat/completions`` as OpenAI documents it
(https://platform.openai.com/docs/api-reference/chat): a JSON answer with
``choices[0].message.content``, ``finish_reason`` and ``usage``; with ``"stream": true``
a ``text/event-stream`` of ``chat.completion.chunk`` events carrying
``choices[0].delta.content``, a final chunk with empty ``choices`` and the ``usage`` when
``stream_options.include_usage`` is true, then ``data: [DONE]``. Streams are sent with
chunked transfer encoding, so a stream cut short is an incomplete body to the client.

Use it through the ``openai_server`` fixture (a fresh server per test), made available to
a test module by importing ``openai_server_fixture`` (tests import shared helpers by
module name, as ``server_helpers``)::

    from openai_standin import Answer, Drop, Fail, OpenAIStandIn
    from openai_standin import openai_server_fixture  # noqa: F401

    def test_something(openai_server: OpenAIStandIn) -> None:
        openai_server.respond_with("Refunds take 30 days [1].")   # or a function of the body
        openai_server.script(Fail(429, headers={"Retry-After": "1"}), Fail(500), Drop())
        ...  # point the client at openai_server.url ("http://127.0.0.1:<port>/v1")
        assert len(openai_server.requests) == 4

Interface of :class:`OpenAIStandIn`:

- ``url``: the base URL, ending in ``/v1``.
- ``respond_with(text)``: the default answer, a string or a function of the request body
  (a ``dict``) returning one; :func:`echo_citing` is such a function. Until set, every
  answer is :data:`DEFAULT_ANSWER`.
- ``script(*behaviours)``: behaviours to take, one per request in order of arrival, before
  answering normally again. Behaviours: :class:`Answer` (normal, or slow, without usage,
  or a stream cut after some chunks), :class:`Fail` (an error status with headers, e.g.
  429 with ``Retry-After``, 500) and :class:`Drop` (the socket closed before the answer,
  or in the middle of its body).
- ``key``: when set, a request without ``Authorization: Bearer <key>`` gets OpenAI's 401
  (whose message quotes the key it was given, as OpenAI's does).
- ``models``: when set, a request for another model gets OpenAI's 404.
- ``requests``: every request received, as :class:`Received` (``body``, ``headers`` with
  lower-case names, ``path``, ``at`` = ``time.monotonic()`` on arrival, and ``answered``:
  the text and usage sent back, if any).
- ``reset()``: forget the script, the requests, the default answer, ``key`` and
  ``models``.

Tokens are counted as whitespace-separated words (:func:`words`): a prompt's tokens are
the words of all its messages' contents.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_ANSWER = "The answer is in the first source [1]."
"""What the stand-in says until told otherwise."""

Reply = str | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Answer:
    """Answer normally: ``text`` (a string or a function of the body; ``None``: the
    default answer), after ``delay_s``; streams wait ``chunk_delay_s`` before each chunk
    and, with ``drop_after_chunks``, close the socket after that many content chunks.
    ``usage=False`` leaves ``usage`` out (of the JSON answer and of the stream)."""

    text: Reply | None = None
    usage: bool = True
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    drop_after_chunks: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` with OpenAI's error body and ``headers`` (e.g. ``Retry-After``
    or ``retry-after-ms``), after ``delay_s``."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Drop:
    """Close the socket after ``delay_s``: before any answer, or with ``mid_body`` after
    the headers and part of a JSON body whose ``Content-Length`` promises more."""

    mid_body: bool = False
    delay_s: float = 0.0


Behaviour = Answer | Fail | Drop


@dataclass
class Received:
    """One request the stand-in received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    answered: dict[str, Any] | None = None

    @property
    def stream(self) -> bool:
        """Whether the request asked for a stream."""
        return bool(self.body.get("stream"))


def words(text: str) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split())


def prompt_words(body: Mapping[str, Any]) -> int:
    """The stand-in's count of a request's prompt tokens."""
    return sum(words(str(m.get("content", ""))) for m in body.get("messages", []))


def echo_citing(body: Mapping[str, Any]) -> str:
    """An answer that repeats the last user message and cites passage ``[1]``."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    question = str(users[-1].get("content", "")) if users else ""
    return f"You asked: {' '.join(question.split())} The first source answers it [1]."


def _pieces(text: str) -> list[str]:
    """``text`` cut into stream deltas: each word with the spaces before it."""
    return re.findall(r"\s*\S+", text) or [text]


class OpenAIStandIn:
    """The stand-in server; see the module docstring for its interface."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.models: set[str] | None = None
        self.requests: list[Received] = []
        self._default: Reply = DEFAULT_ANSWER
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), partial(_Handler, self))
        self._server.daemon_threads = False  # server_close() joins the handler threads
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, ending in ``/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def respond_with(self, text: Reply) -> None:
        """Make ``text`` (or a function of the body) the default answer."""
        self._default = text

    def script(self, *behaviours: Behaviour) -> None:
        """Queue ``behaviours``, one per request in order of arrival."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script, the requests received and the default answer."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._default = DEFAULT_ANSWER
            self.key = None
            self.models = None

    def stop(self) -> None:
        """Stop serving; sleeping answers are cut short."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> OpenAIStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def receive(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Received:
        """Record a request; the behaviour to answer it with comes from :meth:`next`."""
        seen = Received(path, headers, body, time.monotonic())
        with self._lock:
            self.requests.append(seen)
        return seen

    def next(self) -> Behaviour:
        """The next scripted behaviour, else a normal answer."""
        with self._lock:
            return self._script.popleft() if self._script else Answer()

    def refusal(self, seen: Received) -> Fail | None:
        """OpenAI's 401, 404 or 400 for a request it would refuse, else ``None``."""
        given = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if self.key is not None and given != self.key:
            message = f"Incorrect API key provided: {given}." if given else "No API key."
            return Fail(401, message=message)
        model = seen.body.get("model")
        if self.models is not None and model not in self.models:
            return Fail(404, message=f"The model `{model}` does not exist.")
        if seen.path != "/v1/chat/completions" or not seen.body.get("messages"):
            return Fail(400, message="'messages' is a required property.")
        return None

    def text_for(self, answer: Answer, body: dict[str, Any]) -> str:
        """The text ``answer`` gives to ``body``."""
        reply = self._default if answer.text is None else answer.text
        return reply if isinstance(reply, str) else reply(body)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout, a closed stream) is no error here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def __init__(self, standin: OpenAIStandIn, *args: Any) -> None:
        self.standin = standin
        super().__init__(*args)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = self.standin.receive(self.path, headers, body if isinstance(body, dict) else {})
        behaviour = self.standin.refusal(seen) or self.standin.next()
        self.standin.sleep(behaviour.delay_s)
        if isinstance(behaviour, Fail):
            self._fail(behaviour)
        elif isinstance(behaviour, Drop):
            self._drop(behaviour)
        elif seen.stream:
            self._stream(seen, behaviour)
        else:
            self._answer(seen, behaviour)

    def _fail(self, fail: Fail) -> None:
        kind = "rate_limit_exceeded" if fail.status == 429 else "error"
        message = fail.message or f"stand-in failure {fail.status}"
        self._json(fail.status, {"error": {"message": message, "type": kind}}, fail.headers)

    def _drop(self, drop: Drop) -> None:
        if drop.mid_body:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl-standin", "choices": [')
        self._cut()

    def _answer(self, seen: Received, answer: Answer) -> None:
        text = self.standin.text_for(answer, seen.body)
        payload: dict[str, Any] = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": seen.body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": answer.finish_reason,
                }
            ],
        }
        usage = _usage(seen.body, text)
        if answer.usage:
            payload["usage"] = usage
        seen.answered = {"text": text, "usage": payload.get("usage")}
        self._json(200, payload)

    def _stream(self, seen: Received, answer: Answer) -> None:
        text = self.standin.text_for(answer, seen.body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        model = seen.body.get("model")
        self._event(_chunk(model, {"role": "assistant", "content": ""}, None))
        for sent, piece in enumerate(_pieces(text)):
            if answer.drop_after_chunks is not None and sent >= answer.drop_after_chunks:
                self._cut()
                return
            self.standin.sleep(answer.chunk_delay_s)
            self._event(_chunk(model, {"content": piece}, None))
        self._event(_chunk(model, {}, answer.finish_reason))
        usage = None
        if answer.usage and (seen.body.get("stream_options") or {}).get("include_usage"):
            usage = _usage(seen.body, text)
            self._event({**_chunk(model, {}, None), "choices": [], "usage": usage})
        # recorded before [DONE]: a client that has read [DONE] finds it there
        seen.answered = {"text": text, "usage": usage}
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _event(self, data: dict[str, Any]) -> None:
        self._write_chunk(f"data: {json.dumps(data)}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # no idle sockets left in the test process
        self.end_headers()
        self.wfile.write(data)

    def _cut(self) -> None:
        """Close the connection now, whatever was promised."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _usage(body: Mapping[str, Any], text: str) -> dict[str, int]:
    prompt, completion = prompt_words(body), words(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chunk(model: Any, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[OpenAIStandIn]:
    """A fresh stand-in chat-completions server for one test."""
    with OpenAIStandIn() as server:
        yield server


openai_server = openai_server_fixture
"""The same fixture under its own name, for ``from openai_standin import openai_server``
(a test taking an ``openai_server`` argument then redefines the name for ruff: F811)."""
