"""Embeddings from an OpenAI-compatible endpoint.

Named ``openai:<model>``, optionally ``openai:<model>?dimensions=<n>`` for the models
that shorten their vectors (``text-embedding-3-*``). The endpoint is
``$RAGSTORE_OPENAI_BASE_URL``, else ``$OPENAI_BASE_URL``, else OpenAI's own; the key is
``$RAGSTORE_OPENAI_API_KEY``, else ``$OPENAI_API_KEY`` (none is sent when neither is
set, for local servers that need none). Neither is recorded with a collection: only the
name is, so the same collection can be served through another compatible endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ragstore.embed.remote import (
    DEFAULT_RETRIES,
    JsonClient,
    RemoteEmbedder,
    Retries,
    split_options,
)
from ragstore.errors import StoreError

SCHEME = "openai"
BASE_URL_ENVS = ("RAGSTORE_OPENAI_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENVS = ("RAGSTORE_OPENAI_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_INPUTS = 2048
"""Most inputs OpenAI takes in one embeddings request."""
MAX_TOKENS = 8191
"""Most tokens OpenAI's embedding models take in one input."""


class OpenAIEmbedder(RemoteEmbedder):
    """``model`` served by the ``/embeddings`` route of an OpenAI-compatible API.

    ``base_url`` and ``api_key`` default to the environment (see the module); requests
    carry at most ``batch_size`` inputs and time out after ``timeout`` seconds.
    """

    def __init__(
        self,
        model: str,
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = MAX_INPUTS,
        timeout: float = 60.0,
        retries: Retries = DEFAULT_RETRIES,
    ) -> None:
        key = api_key if api_key is not None else _first_set(API_KEY_ENVS)
        client = JsonClient(
            base_url or _first_set(BASE_URL_ENVS) or DEFAULT_BASE_URL,
            service="OpenAI-compatible embeddings endpoint",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            secret=key,
            hints={401: _key_hint(key), 403: _key_hint(key), 404: f"is {model!r} served there?"},
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
        body: dict[str, Any] = {"model": self._model, "input": texts, "encoding_format": "float"}
        if self._dimensions:
            body["dimensions"] = self._dimensions
        answer = self._client.post("embeddings", body)
        try:
            rows = sorted(answer["data"], key=lambda row: int(row["index"]))
            return [row["embedding"] for row in rows], str(answer.get("model") or self._model)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StoreError(f"{self.name}: the answer is not an embeddings list") from None


def from_name(rest: str) -> OpenAIEmbedder:
    """The embedder of ``openai:<rest>`` (``rest`` a model, maybe with ``?dimensions=``)."""
    model, options = split_options(rest, ["dimensions"])
    return OpenAIEmbedder(model, dimensions=options.get("dimensions"))


def _first_set(names: Sequence[str]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def _key_hint(key: str | None) -> str:
    names = " or ".join(API_KEY_ENVS)
    return f"check the API key in {names}" if key else f"no API key is set: set {names}"
