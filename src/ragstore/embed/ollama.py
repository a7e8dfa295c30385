"""Embeddings from an Ollama server.

Named ``ollama:<model>`` (``ollama:nomic-embed-text``), optionally with
``?dimensions=<n>`` for models that shorten their vectors. The server is
``$OLLAMA_HOST``, else ``http://127.0.0.1:11434``; texts go to its ``POST /api/embed``
route (``{"model", "input": [...]}`` answered by ``{"embeddings": [[...], ...]}``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ragstore.embed.remote import (
    DEFAULT_RETRIES,
    JsonClient,
    RemoteEmbedder,
    Retries,
    split_options,
)
from ragstore.errors import StoreError

SCHEME = "ollama"
HOST_ENV = "OLLAMA_HOST"
DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
BATCH_SIZE = 64
"""Inputs per request: Ollama sets no limit, but a smaller request is retried cheaper."""
MAX_TOKENS = 2048
"""Ollama's default context length; longer inputs are truncated by the server."""


class OllamaEmbedder(RemoteEmbedder):
    """``model`` served by an Ollama server at ``host`` (default: ``$OLLAMA_HOST``)."""

    def __init__(
        self,
        model: str,
        *,
        dimensions: int | None = None,
        host: str | None = None,
        batch_size: int = BATCH_SIZE,
        timeout: float = 120.0,
        retries: Retries = DEFAULT_RETRIES,
    ) -> None:
        client = JsonClient(
            base_url(host or os.environ.get(HOST_ENV) or DEFAULT_HOST),
            service="Ollama server",
            hints={404: f"pull the model first: ollama pull {model}"},
            timeout=timeout,
            retries=retries,
        )
        super().__init__(
            SCHEME,
            model,
            client,
            batch_size=batch_size,
            max_tokens=MAX_TOKENS,
            dimensions=dimensions,
        )

    def _request(self, texts: list[str]) -> tuple[list[list[float]], str]:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        if self._dimensions:
            body["dimensions"] = self._dimensions
        answer = self._client.post("api/embed", body)
        try:
            return list(answer["embeddings"]), str(answer.get("model") or self._model)
        except (KeyError, TypeError, AttributeError):
            raise StoreError(f"{self.name}: the answer holds no embeddings") from None


def from_name(rest: str) -> OllamaEmbedder:
    """The embedder of ``ollama:<rest>`` (``rest`` a model, maybe with ``?dimensions=``)."""
    model, options = split_options(rest, ["dimensions"])
    return OllamaEmbedder(model, dimensions=options.get("dimensions"))


def base_url(host: str) -> str:
    """``OLLAMA_HOST`` as a URL, the way Ollama reads it: ``http://`` when no scheme is
    given and port 11434 when none is (``localhost`` -> ``http://localhost:11434``)."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    port = parts.port or (DEFAULT_PORT if parts.scheme == "http" else None)
    netloc = parts.hostname or "127.0.0.1"
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    address = f"{netloc}:{port}" if port else netloc
    return f"{parts.scheme}://{address}{parts.path.rstrip('/')}"
