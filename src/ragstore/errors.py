"""The one exception hierarchy of ragstore.

Every error ragstore raises on purpose derives from :class:`RagstoreError`::

    RagstoreError
    ├── InvalidInput            bad input from a caller (CLI exit 2, HTTP 422)
    │   ├── InvalidFilter       a filter that does not parse or validate
    │   ├── InvalidConfig       a collection config or setting that is not valid
    │   └── DimensionMismatch   a vector whose length is not the collection's dim
    ├── NotFound                an unknown collection or document (HTTP 404)
    ├── Conflict                the request contradicts stored state (HTTP 409)
    │   ├── ModelMismatch       a collection opened with a different embedder
    │   └── AliasMoved          an alias was switched while a write through it ran
    ├── StoreError              the store cannot be used as asked
    │   └── SchemaTooNew        the store was written by a newer ragstore
    └── RemoteError             a ragstore server could not be reached or refused to serve
        └── AccessDenied        the API key is missing, unknown or lacks the role (HTTP 401/403)

The CLI maps these to exit codes in one place (``cli.exit_code_for``).
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with anything that cannot be written as UTF-8 (a lone surrogate, or the
    undecodable bytes of a file name) shown as a backslash escape, so that a message
    naming bad input can itself be printed, logged and sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RagstoreError(Exception):
    """Root of every error ragstore raises on purpose."""


class InvalidInput(RagstoreError, ValueError):
    """The caller passed something ragstore cannot accept.

    ``field`` names the offending field or path when one is known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(printable(message))
        self.field = None if field is None else printable(field)


class InvalidFilter(InvalidInput):
    """A metadata filter that does not parse or validate."""


class InvalidConfig(InvalidInput):
    """A collection configuration or setting that is not valid."""


class DimensionMismatch(InvalidInput):
    """A vector whose length differs from the collection's dimension."""

    def __init__(self, expected: int, got: int, *, field: str | None = "vector") -> None:
        super().__init__(f"vector has dimension {got}, collection expects {expected}", field=field)
        self.expected = expected
        self.got = got


class NotFound(RagstoreError, KeyError):
    """An unknown collection or document."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Conflict(RagstoreError):
    """The request contradicts what the store already holds."""


class QualityGate(Conflict):
    """A re-indexed collection scored below the bar set for switching to it."""


class ModelMismatch(Conflict):
    """A collection was opened with an embedder other than the one it was built with."""


class AliasMoved(Conflict):
    """An alias was switched to another collection while a write through it was under
    way; the write was rolled back (the aliased collection retries it on the new one)."""


class StoreError(RagstoreError):
    """The store cannot be used as asked."""


class SchemaTooNew(StoreError):
    """The store was written by a newer version of ragstore."""


class SnapshotInvalid(StoreError):
    """A snapshot that is unfinished, damaged or not a snapshot; ``file`` names the first
    bad file (relative to the snapshot) when there is one."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class RemoteError(RagstoreError):
    """A ragstore server could not be reached, or refused or failed a request for a
    reason of its own (overloaded, unavailable); ``status`` is the HTTP status (``None``
    when no answer came) and ``retry_after`` the seconds it asked the caller to wait."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AccessDenied(RemoteError):
    """The server refused the API key: missing or unknown (401), or without the role or
    scope the request needs (403)."""


class LLMError(RemoteError):
    """A language model endpoint gave no usable answer: ``reason`` is one of
    ``"timeout"``, ``"connection"``, ``"rate_limited"`` (429 past the retries),
    ``"server_error"`` (5xx past the retries), ``"deadline"`` (the overall deadline
    passed), ``"breaker_open"`` (the endpoint failed recently and is not being called),
    ``"shed"`` (the client-side limiter had no room in time), ``"refused"`` (401, 403 or
    404: the key, the model or the URL is wrong; the message names the variable to set)
    or ``"bad_response"``."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.reason = reason
