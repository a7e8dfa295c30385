"""What both remote clients share about the connection: the URL, the key, the tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ragstore.client.calls import Answer
from ragstore.errors import InvalidInput, RemoteError

DEFAULT_TENANT = "default"
"""The tenant whose collections are the server's store's own (admin keys only)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """A checked server URL, API key and tenant."""

    url: str
    api_key: str | None
    tenant: str
    timeout: float

    @classmethod
    def of(cls, url: str, api_key: str | None, tenant: str, timeout: float) -> Settings:
        """Checked settings; :class:`~ragstore.InvalidInput` naming the bad one."""
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"url must be an http:// or https:// URL, not {url!r}", field="url")
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise InvalidInput("api_key must be a non-empty string", field="api_key")
        if not isinstance(tenant, str) or not tenant:
            raise InvalidInput("tenant must be a non-empty string", field="tenant")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInput("timeout must be a positive number of seconds", field="timeout")
        return cls(url.rstrip("/"), api_key, tenant, float(timeout))

    def headers(self) -> dict[str, str]:
        """The headers every request carries."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def transport_error(url: str, error: httpx.HTTPError) -> RemoteError:
    """The error for a request that got no answer (the key is never part of it)."""
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    return RemoteError(f"request to {url} {kind}: {type(error).__name__}: {error}")


def answer_of(response: httpx.Response) -> Answer:
    """A response as the operations of :mod:`ragstore.client.calls` read it."""
    return Answer(response.status_code, _json(response), response.headers)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
