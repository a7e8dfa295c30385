"""The fast lane: a repeated search answered from memory before FastAPI routes it.

A search whose answer the query cache holds in this process's memory (see
``Collection.cached_answer``) costs far less than the routing, dependency solving and
request objects around it. This ASGI layer, inside the request middleware (so request
ids, limits, metrics and the access log apply as to every request), takes such a
search through the same steps as the route: the same key check, scope check, body
model, limits and answer. It only ever answers 200 with the cached answer: a request
it cannot answer that way, for any reason (another route, no or a bad key, a body that
does not validate, a limit, an answer not in memory), goes on to FastAPI with its body
intact, which answers it as always, errors included.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import RagstoreError
from ragstore.server.auth import TENANT_PATTERN
from ragstore.server.errors import ApiError
from ragstore.server.responses import JSON
from ragstore.server.routes import COLLECTION, answer_from_memory, check_search, search_answer
from ragstore.server.runtime import Runtime
from ragstore.server.schemas import SearchRequest
from ragstore.server.tenancy import NAME_PATTERN

SEARCH_ROUTE = f"/v1{COLLECTION}/search"
_SEARCH_PATH = re.compile(
    f"/v1/tenants/(?P<tenant>{TENANT_PATTERN.strip('^$')})"
    f"/collections/(?P<collection>{NAME_PATTERN.strip('^$')})/search"
)
MAX_BODY_BYTES = 64 * 1024
"""Larger searches (long vectors) take the usual way; cached ones are text queries."""


@dataclass(frozen=True)
class _Route:
    """What the request middleware reads of a matched route: its template."""

    path: str


_ROUTE = _Route(SEARCH_ROUTE)


class FastLane:
    """Answers searches held in memory; passes every other request on unchanged."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _search_path(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        messages = await _read_body(receive)
        answer = self._answer(scope, found, _body(messages))
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = _ROUTE
        await answer(scope, receive, send)

    def _answer(self, scope: Scope, path: re.Match[str], body: bytes | None) -> JSON | None:
        """The route's answer when the cache holds it in memory, else ``None``."""
        if body is None:
            return None
        tenant, collection = path["tenant"], path["collection"]
        headers = dict(scope["headers"])
        if not _is_json(headers.get(b"content-type", b"")):
            return None
        rt = self.runtime
        try:
            who = rt.keys.authenticate(_bearer(headers.get(b"authorization")))
            who.require("read", tenant, collection)
            request = SearchRequest.model_validate(json.loads(body))
            check_search(request, rt)
            started = time.perf_counter()
            hits = answer_from_memory(rt, tenant, collection, request)
        except (ApiError, RagstoreError, ValidationError, ValueError):  # FastAPI answers these
            return None
        if hits is None:
            return None
        state = scope.setdefault("state", {})
        state["key_id"], state["from_memory"] = who.key_id, True
        return search_answer(rt, request, hits, time.perf_counter() - started)


def _search_path(scope: Scope) -> re.Match[str] | None:
    """The tenant and collection of a search with a small declared body."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    headers = dict(scope["headers"])
    if len(headers) != len(scope["headers"]):
        return None  # a repeated header: read the way the framework reads it
    length = headers.get(b"content-length", b"")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return None  # the request middleware has checked a declared length already
    return _SEARCH_PATH.fullmatch(scope["path"])


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


def _bearer(authorization: bytes | None) -> str | None:
    """The credentials of an ``Authorization: Bearer ...`` header, as FastAPI's
    ``HTTPBearer`` reads them."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


async def _read_body(receive: Receive) -> list[Message]:
    """The request's body messages, up to the last one (or a disconnect)."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _body(messages: list[Message]) -> bytes | None:
    """The whole body, or ``None`` when the client left before sending it."""
    if messages[-1]["type"] != "http.request":
        return None
    return b"".join(message.get("body", b"") for message in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` again, then goes on as ``receive``."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
