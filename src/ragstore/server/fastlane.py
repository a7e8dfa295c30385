"""The fast lane: searches served without FastAPI's routing and dependency solving.

Search is the hot route, and a search whose answer the query cache holds in memory
(see ``Collection.cached_answer``) costs less than the routing, dependency solving and
request objects around it. This ASGI layer sits inside the request middleware, so
request ids, the body limit, metrics and the access log apply as to every request. It
takes a search through the route's own steps (key, scope, body model, limits, then the
answer from memory or the search on the pool, and the same answer or error). A request
it cannot check that way for any reason (another route, no or a bad key, a body that
does not validate, a limit, a body over 64 KiB or not declared JSON) goes on to FastAPI
with its body intact, which answers it as always: its error responses and the OpenAPI
schema stay the route's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import RagstoreError
from ragstore.server.auth import TENANT_PATTERN
from ragstore.server.errors import ApiError, answer_error
from ragstore.server.routes import COLLECTION, check_search, find_hits, search_answer
from ragstore.server.runtime import Runtime
from ragstore.server.schemas import SearchRequest
from ragstore.server.tenancy import NAME_PATTERN

SEARCH_ROUTE = f"/v1{COLLECTION}/search"
_SEARCH_PATH = re.compile(
    f"/v1/tenants/(?P<tenant>{TENANT_PATTERN.strip('^$')})"
    f"/collections/(?P<collection>{NAME_PATTERN.strip('^$')})/search"
)
MAX_BODY_BYTES = 64 * 1024
"""Larger search bodies (very long vectors) take the usual way."""


@dataclass(frozen=True)
class _Route:
    """What the request middleware reads of a matched route: its template."""

    path: str


_ROUTE = _Route(SEARCH_ROUTE)


class FastLane:
    """Serves valid searches without routing; passes every other request on unchanged."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        found = _search_path(scope, headers)
        checked = None
        if found is not None:
            messages = await _read_body(receive)
            checked = self._checked(headers, found, _body(messages))
            receive = _replay(messages, receive)
        if found is None or checked is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE
        response = await self._answer(scope, found["tenant"], found["collection"], *checked)
        await response(scope, receive, send)

    def _checked(
        self, headers: dict[bytes, bytes], path: re.Match[str], body: bytes | None
    ) -> tuple[str | None, SearchRequest] | None:
        """The caller's key id and the search, when the route would accept them.

        The body is not walked as a whole (``ragstore.inputs.parse_json``): the model
        checks every field (valid Unicode, finite floats, strict integers) and
        ``check_search`` walks the filter, so a second walk would only cost time, more
        than the rest of these checks together.
        """
        if body is None or not _is_json(headers.get(b"content-type", b"")):
            return None
        rt = self.runtime
        try:
            who = rt.keys.authenticate(_bearer(headers.get(b"authorization")))
            who.require("read", path["tenant"], path["collection"])
            request = SearchRequest.model_validate(json.loads(body))
            check_search(request, rt)
        except (ApiError, RagstoreError, ValidationError, ValueError, RecursionError):
            return None  # FastAPI answers these (a body nested too deep to parse: 400)
        return who.key_id, request

    async def _answer(
        self, scope: Scope, tenant: str, collection: str, key_id: str | None, request: SearchRequest
    ) -> JSONResponse:
        """The search's answer (from memory when the cache holds it there), or the JSON
        error the route would give."""
        rt = self.runtime
        state = scope.setdefault("state", {})
        state["key_id"] = key_id
        try:
            hits, seconds, from_memory = await find_hits(rt, tenant, collection, request)
        except (ApiError, RagstoreError) as error:
            return answer_error(error)
        if from_memory:
            state["from_memory"] = True
        return search_answer(rt, request, hits, seconds)


def _search_path(scope: Scope, headers: dict[bytes, bytes]) -> re.Match[str] | None:
    """The tenant and collection of a search with a small declared body."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
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
