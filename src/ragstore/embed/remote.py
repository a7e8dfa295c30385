"""What the embedders served over HTTP share: batching, retries, errors, a learned dimension.

A :class:`RemoteEmbedder` sends texts in batches through a :class:`JsonClient`, which
maps the service's answers to ragstore errors:

- 408, 429, 5xx, timeouts and connection errors are retried (through ``tenacity``) with
  exponential backoff, waiting what ``Retry-After`` (or ``retry-after-ms``) asks when the
  service says; when the tries run out, :class:`~ragstore.errors.StoreError`.
- 401 and 403 (a missing or bad key) and 404 (an unknown model, or a wrong base URL):
  :class:`~ragstore.errors.InvalidConfig`; any other 4xx:
  :class:`~ragstore.errors.InvalidInput`. The API key never appears in a message or a
  log record; the service's own message does, with the key blanked out of it.

The dimension and version are learned from the first answer (a one-text probe when they
are asked for before anything was embedded): the version is the model name the service
reports serving, since no service exposes a version of its weights. A ``dimensions``
option fixes the dimension up front, and an answer of another length is refused.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from ragstore.embed.base import Vectors
from ragstore.errors import DimensionMismatch, InvalidConfig, InvalidInput, StoreError

log = logging.getLogger(__name__)

_PROBE = "dimension probe"
_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")
"""An approximate token: up to four word characters, or one other non-space character
(the tokenizers of embedding services average about four characters per token)."""


@dataclass(frozen=True, slots=True)
class Retries:
    """How often and how long to retry a request that failed in a way that may pass.

    Try ``attempts`` times in all; wait ``backoff`` seconds after the first failure,
    doubling after each next one (with jitter), or what the service asks, never more
    than ``max_wait``.
    """

    attempts: int = 6
    backoff: float = 0.5
    max_wait: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidConfig("retries need at least 1 attempt", field="retries")


DEFAULT_RETRIES = Retries()


def retry_delay(attempt: int, retries: Retries, headers: Mapping[str, str] | None) -> float:
    """Seconds to wait after failed try number ``attempt`` (0 for the first)."""
    asked = _asked_delay(headers or {})
    if asked is None:
        asked = retries.backoff * 2**attempt * random.uniform(0.5, 1.0)
    return min(max(asked, 0.0), retries.max_wait)


def _asked_delay(headers: Mapping[str, str]) -> float | None:
    """The wait a ``retry-after-ms`` or ``Retry-After`` header asks for, in seconds."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    return seconds if seconds is not None else _seconds_until(value)


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _seconds_until(date: str) -> float | None:
    """Seconds from now to an HTTP date, ``None`` for anything else."""
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def split_options(rest: str, allowed: Sequence[str]) -> tuple[str, dict[str, int]]:
    """``"model?dimensions=256"`` -> ``("model", {"dimensions": 256})``; every option
    is a positive integer.

    Raises:
        InvalidConfig: an option not in ``allowed``, or not a positive integer.
    """
    model, _, query = rest.partition("?")
    options: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise InvalidConfig(f"unknown embedder option {key!r} in {rest!r}", field="embedder")
        if not value.isdigit() or int(value) < 1:
            raise InvalidConfig(
                f"embedder option {key} must be a positive integer", field="embedder"
            )
        options[key] = int(value)
    if not model:
        raise InvalidConfig(f"no model named in {rest!r}", field="embedder")
    return model, options


def approximate_token_offsets(text: str) -> list[tuple[int, int]]:
    """Char spans of approximate tokens, for services whose tokenizer is not at hand."""
    return [match.span() for match in _TOKEN.finditer(text)]


class _Retryable(Exception):
    """A failure that may pass when tried again: a 408, 429 or 5xx answer (with its
    ``headers``), or no answer at all; ``failure`` says what happened, without the key."""

    def __init__(self, failure: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(failure)
        self.failure = failure
        self.headers = headers


class JsonClient:
    """POSTs JSON to one service, retrying what may pass, mapping failures to errors.

    ``service`` names it in messages; ``secret`` is blanked out of them; ``hints``
    adds advice to the error of a status code (``{401: "set OPENAI_API_KEY"}``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        hints: Mapping[int, str] | None = None,
        timeout: float = 60.0,
        retries: Retries = DEFAULT_RETRIES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._service = service
        self._secret = secret
        self._hints = dict(hints or {})
        self._retries = retries
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        """The decoded JSON answer to ``body`` POSTed to ``path`` (under the base URL)."""
        retrying = Retrying(
            stop=stop_after_attempt(self._retries.attempts),
            wait=self._delay,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=lambda state: self._log_retry(path, state),
            reraise=True,
        )
        try:
            response = retrying(self._send, path, body)
        except _Retryable as last:
            raise StoreError(
                f"{self._service} at {self.base_url}/{path} failed {self._retries.attempts} "
                f"times; the last answer: {last.failure}"
            ) from None
        return self._decoded(response)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def _send(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """The response to one try; :class:`_Retryable` for a failure that may pass,
        the refusal's error for one that retrying cannot change."""
        try:
            response = self._client.post(path, json=body)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {self._scrub(str(exc))}") from None
        status = response.status_code
        if status >= 400 and _retryable(status):
            raise _Retryable(f"HTTP {status}", response.headers)
        if status >= 400:
            raise self._refused(path, response)
        return response

    def _delay(self, state: RetryCallState) -> float:
        """Seconds to wait after the try that just failed (see :func:`retry_delay`)."""
        failed = state.outcome.exception() if state.outcome else None
        headers = failed.headers if isinstance(failed, _Retryable) else None
        return retry_delay(state.attempt_number - 1, self._retries, headers)

    def _log_retry(self, path: str, state: RetryCallState) -> None:
        """Say what failed and how long until the next try (no headers, no key)."""
        failed = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s at %s/%s: %s; retrying in %.1f s",
            self._service,
            self.base_url,
            path,
            failed.failure if isinstance(failed, _Retryable) else failed,
            state.upcoming_sleep,
        )

    def _decoded(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise StoreError(
                f"{self._service} at {self.base_url} answered with something other than JSON"
            ) from None

    def _refused(self, path: str, response: httpx.Response) -> InvalidInput:
        status = response.status_code
        hint = f"; {self._hints[status]}" if status in self._hints else ""
        message = (
            f"{self._service} at {self.base_url}/{path} refused the request "
            f"(HTTP {status}): {self._scrub(_error_message(response))}{hint}"
        )
        if status in (401, 403, 404):
            return InvalidConfig(message, field="embedder")
        return InvalidInput(message, field="embedder")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _error_message(response: httpx.Response) -> str:
    """The service's own account of an error: OpenAI's ``error.message``, Ollama's
    ``error``, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        error = error.get("message")
    text = error if isinstance(error, str) else response.text
    return " ".join(str(text).split())[:500] or response.reason_phrase


class RemoteEmbedder:
    """An embedder whose vectors come from a service through ``client``, named
    ``scheme:model`` (with ``?dimensions=N`` when asked for); subclasses make the
    request (:meth:`_request`).

    Texts go in batches of at most ``batch_size``; vectors come back scaled to unit
    length. Tokens are approximated (:func:`approximate_token_offsets`), and
    ``max_tokens`` caps a chunk in those approximate tokens.
    """

    def __init__(
        self,
        scheme: str,
        model: str,
        client: JsonClient,
        *,
        batch_size: int,
        max_tokens: int,
        dimensions: int | None,
    ) -> None:
        if batch_size < 1:
            raise InvalidConfig("batch_size must be at least 1", field="batch_size")
        option = f"?dimensions={dimensions}" if dimensions else ""
        self._name = f"{scheme}:{model}{option}"
        self._model = model
        self._dimensions = dimensions
        self._client = client
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._dim = dimensions
        self._version: str | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The name this embedder resolves from, options included."""
        return self._name

    @property
    def version(self) -> str:
        """The model name the service reports serving (asks it when not known yet)."""
        if self._version is None:
            self._embed([_PROBE])
        assert self._version is not None
        return self._version

    @property
    def dim(self) -> int:
        """Vector length: the ``dimensions`` option, else learned from an answer."""
        if self._dim is None:
            self._embed([_PROBE])
        assert self._dim is not None
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Most approximate tokens one input may hold."""
        return self._max_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Char spans of approximate tokens of ``text``."""
        return approximate_token_offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages, ``batch_size`` texts per request."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        size = self._batch_size
        return np.vstack([self._embed(texts[i : i + size]) for i in range(0, len(texts), size)])

    def embed_query(self, text: str) -> Vectors:
        """Embed one query."""
        vector: Vectors = self._embed([text])[0]
        return vector

    def close(self) -> None:
        """Close the connections to the service; the embedder cannot embed after it."""
        self._client.close()

    def _request(self, texts: list[str]) -> tuple[list[list[float]], str]:
        """One request: a vector per text, in order, and the model the service names."""
        raise NotImplementedError

    def _embed(self, texts: Sequence[str]) -> Vectors:
        rows, model = self._request(list(texts))
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts) or not vectors.shape[1]:
            raise StoreError(
                f"{self._name}: {len(texts)} texts sent, answer of shape {vectors.shape}"
            )
        self._learn(vectors.shape[1], model)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: Vectors = vectors / np.maximum(norms, np.float32(1e-12))
        return normalized

    def _learn(self, dim: int, model: str) -> None:
        with self._lock:
            if self._dim is None:
                self._dim = dim
            if self._version is None:
                self._version = model
        if dim != self._dim:
            raise DimensionMismatch(self._dim, dim, field="embedder")
