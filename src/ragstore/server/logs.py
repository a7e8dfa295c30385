"""Structured logs: one JSON object per line, each carrying the request id.

The request id comes from a valid ``X-Request-ID`` header or is made up, is echoed in
the response, and is set in a context variable that the formatter reads, so a log
line written anywhere while a request is served names it. API keys never reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

_REQUEST_ID: ContextVar[str | None] = ContextVar("ragstore_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def request_id() -> str | None:
    """The id of the request being served, if any."""
    return _REQUEST_ID.get()


def set_request_id(header: str | None) -> str:
    """Adopt the caller's id when it is well formed, else make one; returns it."""
    rid = header if header and _VALID_ID.match(header) else uuid.uuid4().hex
    _REQUEST_ID.set(rid)
    return rid


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, process id
    (which worker process wrote it), request id and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id()
        if rid is not None:
            entry["request_id"] = rid
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: int = logging.INFO) -> None:
    """Send ragstore's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("ragstore", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # the server logs each request
