"""The one place where errors become HTTP responses.

Every error body has the same shape::

    {"error": {"type": "invalid_input", "message": "...", "field": "k"}}

A ragstore error also names its class (``"class": "InvalidFilter"``), and a
dimension mismatch its ``expected`` and ``got`` dimensions, so that a remote client
raises the very error the embedded store would.
ragstore's own errors map by class (see ``status_for``); request validation failures
become 422 naming the field; limits raise :class:`ApiError` with 413, 422 or 429; an
unexpected exception is logged and answered 500 with the request id, never its details.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragstore.errors import (
    Conflict,
    DimensionMismatch,
    InvalidInput,
    NotFound,
    RagstoreError,
    StoreError,
    printable,
)
from ragstore.server.logs import request_id

log = logging.getLogger(__name__)

# Most specific first: DimensionMismatch is an InvalidInput, but over HTTP it says the
# request contradicts the collection, like a model mismatch.
_STATUS: tuple[tuple[type[RagstoreError], int, str], ...] = (
    (DimensionMismatch, 409, "dimension_mismatch"),
    (InvalidInput, 422, "invalid_input"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (StoreError, 503, "store_unavailable"),
    (RagstoreError, 500, "internal"),
)

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_input",
    429: "saturated",
    503: "unavailable",
}

_LOCATIONS = ("body", "query", "path", "header", "cookie")
"""The first part of a request validation error's ``loc``: where the field is."""


class ApiError(Exception):
    """An error answered as is: status, type, message, field and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind or _HTTP_TYPES.get(status, "error")
        self.headers = dict(headers or {})
        self.details = dict(details or {})


def status_for(error: RagstoreError) -> tuple[int, str]:
    """HTTP status and error type of a ragstore error."""
    for cls, status, kind in _STATUS:
        if isinstance(error, cls):
            return status, kind
    return 500, "internal"  # pragma: no cover - RagstoreError is last above


def error_response(
    status: int,
    kind: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The JSON error body every failure uses.

    Text that cannot be encoded (a lone surrogate echoed from a request) is written
    with backslash escapes, so that an error answer can never fail in turn.
    """
    field = None if field is None else printable(field)
    body = {
        "error": {"type": kind, "message": printable(message), "field": field, **(details or {})}
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def from_ragstore(error: RagstoreError) -> ApiError:
    """The HTTP form of a ragstore error."""
    status, kind = status_for(error)
    details: dict[str, Any] = {"class": type(error).__name__}
    if isinstance(error, DimensionMismatch):
        details |= {"expected": error.expected, "got": error.got}
    field = getattr(error, "field", None)
    return ApiError(status, str(error), field=field, kind=kind, details=details)


def validation_field(loc: Sequence[Any]) -> str | None:
    """``("body", "documents", 3, "text")`` -> ``"documents[3].text"``; only the first
    part says where (body, query, path...), so a body field named ``query`` stays."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RagstoreError, _ragstore_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def answer_error(error: ApiError | RagstoreError) -> JSONResponse:
    """The response to an error raised while serving a request."""
    api = from_ragstore(error) if isinstance(error, RagstoreError) else error
    return error_response(api.status, api.kind, api.message, api.field, api.headers, api.details)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return answer_error(exc)


async def _ragstore_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagstoreError)
    return answer_error(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # located at a character, not a field
        return error_response(422, "invalid_input", _not_json(first), "body")
    field = validation_field(first.get("loc", ()))
    where = f"{field}: " if field else ""
    return error_response(422, "invalid_input", f"{where}{first.get('msg')}", field)


def _not_json(error: Mapping[str, Any]) -> str:
    reason = (error.get("ctx") or {}).get("error") or error.get("msg")
    position = error.get("loc", ())[-1:]
    at = f" at character {position[0]}" if position and isinstance(position[0], int) else ""
    return f"body is not valid JSON: {reason}{at}"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "error")
    headers = dict(exc.headers or {})
    field = "body" if exc.status_code == 400 else None
    return error_response(exc.status_code, kind, str(exc.detail), field, headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    message = f"internal error (request id {request_id()})"
    return error_response(500, "internal", message)
