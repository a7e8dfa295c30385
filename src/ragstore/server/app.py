"""The FastAPI application: lifespan, the request middleware, health and metrics.

The middleware gives each request an id (``X-Request-ID``), refuses bodies over the
size limit with 413 before they are read, counts and times every request by route
template, and writes one JSON log line per request (never the API key).
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.server import errors
from ragstore.server.auth import KeyRing
from ragstore.server.errors import error_response
from ragstore.server.fastlane import FastLane
from ragstore.server.logs import set_request_id
from ragstore.server.responses import JSON
from ragstore.server.routes import Who, router, runtime
from ragstore.server.runtime import Runtime
from ragstore.server.settings import ServerSettings

log = logging.getLogger("ragstore.server")


def create_app(settings: ServerSettings, keys: KeyRing, run_dir: Path | None = None) -> FastAPI:
    """The ASGI app serving the store at ``settings.store_path``; ``run_dir`` is the
    folder shared with the server's other worker processes, if it has several."""
    state = Runtime(settings, keys, run_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            log.info("shutting down: finishing jobs and closing the store")
            state.stop()

    app = FastAPI(
        title="ragstore",
        version=importlib.metadata.version("ragstore"),
        description="Retrieval over HTTP: collections, documents, search, jobs, cache.",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.runtime = state
    errors.install(app)
    app.add_middleware(FastLane, runtime=state)  # inside the request middleware
    app.add_middleware(RequestMiddleware, runtime=state)
    app.include_router(router)
    _add_health(app)
    return app


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", summary="Liveness")
    async def healthz() -> JSON:
        """The process is up and serving HTTP."""
        return JSON({"status": "ok"})

    @app.get("/readyz", summary="Readiness")
    async def readyz(request: Request) -> JSON:
        """200 once the store is open and the model loaded, 503 before."""
        rt = runtime(request)
        if not rt.ready:
            return JSON({"status": "starting"}, status_code=503, headers={"Retry-After": "1"})
        return JSON({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request, who: Who) -> Response:
        """Prometheus text exposition (a key with the store-wide scope)."""
        who.require("read", None)
        rt = runtime(request)
        body = await rt.search_pool.run(rt.metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


class RequestMiddleware:
    """Request id, body size limit, metrics and the access log, for every request."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = set_request_id(headers.get(b"x-request-id", b"").decode("latin-1") or None)
        started = time.perf_counter()
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            too_big = self._declared_too_big(headers.get(b"content-length"))
            if too_big is not None:
                await too_big(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, status[0], time.perf_counter() - started)

    def _declared_too_big(self, length: bytes | None) -> Response | None:
        limit = self.runtime.limits.max_body_bytes
        if length is None:
            return None
        if not length.isdigit():
            return error_response(400, "bad_request", "invalid Content-Length", "body")
        if int(length) > limit:
            return _body_too_large(limit)
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit = self.runtime.limits.max_body_bytes
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise HTTPException(413, f"request body is larger than {limit} bytes")
            return message

        return limited

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        state = scope.get("state", {})
        method = scope["method"]
        metrics = self.runtime.metrics
        metrics.requests.labels(method, route, str(status)).inc()
        metrics.latency.labels(method, route).observe(seconds)
        fields: dict[str, Any] = {
            "method": method,
            "path": scope["path"],
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 2),
            "key_id": state.get("key_id"),
        }
        if state.get("from_memory"):
            fields["from_memory"] = True  # answered by the fast lane
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "request", extra=fields)


def _body_too_large(limit: int) -> Response:
    message = f"request body is larger than {limit} bytes"
    return error_response(413, "too_large", message, "body")
