"""Generation through any OpenAI-compatible chat-completions endpoint.

A :class:`ChatModel` POSTs ``{url}/chat/completions`` (``model``, ``messages``,
``max_tokens``, ``stream``) and survives the endpoint's failures:

- each attempt has its own timeout (``timeout_s``: connecting, and each read);
- 408, 429, 5xx, timeouts and dropped connections are retried (through ``tenacity``) up
  to ``max_attempts`` tries, after the wait the endpoint asks (``Retry-After`` in seconds
  or as an HTTP date, or ``retry-after-ms``), else an exponential backoff with full
  jitter; nothing sleeps past the overall ``deadline_s``, the call fails with
  ``reason="deadline"`` instead;
- 401, 403 and 404 raise ``LLMError(reason="refused")`` naming the variable to fix (the
  key, the model or the URL); any other 4xx ``LLMError(reason="bad_response")``; neither
  is retried;
- a client-side limiter on requests and tokens per minute (shared by processes through
  ``limiter_path``) and a circuit breaker per endpoint and model
  (:mod:`ragstore.answer.limits`).

Failures raise :class:`~ragstore.errors.LLMError` with a ``reason``. The API key is sent
only in the ``Authorization`` header, never logged, and blanked out of any message the
endpoint sends back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from ragstore.answer.limits import CircuitBreaker, RateLimiter, breaker_for
from ragstore.answer.types import Usage
from ragstore.embed.remote import _asked_delay, approximate_token_offsets
from ragstore.errors import InvalidConfig, InvalidInput, LLMError

log = logging.getLogger(__name__)

KEY_VAR = "RAGSTORE_LLM_API_KEY"
URL_VAR = "RAGSTORE_LLM_URL"
MODEL_VAR = "RAGSTORE_LLM_MODEL"
PRICES_VAR = "RAGSTORE_LLM_PRICES"
LIMITER_PATH_VAR = "RAGSTORE_LLM_LIMITER_PATH"

MESSAGE_TOKENS = 4
"""Tokens a chat message costs beyond its content (its role and separators)."""
REPLY_TOKENS = 3
"""Tokens that start the reply."""

_BREAKER_FAILURES = {"timeout", "connection", "rate_limited", "server_error", "deadline"}
"""The reasons that count as a failed call for the circuit breaker; any other answer
shows the endpoint is up."""


@dataclass(frozen=True)
class Price:
    """USD per 1,000,000 tokens."""

    input: float
    output: float

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidConfig(
                    f"a price's {name} must be a number of USD per million tokens, "
                    f"at least 0, not {value!r}",
                    field="prices",
                )

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs, in USD."""
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / 1e6


# field -> (environment variable, kind of value); the kinds are checked by _checked.
_NUMBERS: dict[str, tuple[str, str]] = {
    "timeout_s": ("RAGSTORE_LLM_TIMEOUT", "positive"),
    "max_attempts": ("RAGSTORE_LLM_MAX_ATTEMPTS", "count"),
    "deadline_s": ("RAGSTORE_LLM_DEADLINE", "positive"),
    "requests_per_minute": ("RAGSTORE_LLM_RPM", "positive"),
    "tokens_per_minute": ("RAGSTORE_LLM_TPM", "positive"),
    "limiter_wait_s": ("RAGSTORE_LLM_LIMITER_WAIT", "non_negative"),
    "breaker_failures": ("RAGSTORE_LLM_BREAKER_FAILURES", "count"),
    "breaker_reset_s": ("RAGSTORE_LLM_BREAKER_RESET", "non_negative"),
    "backoff_s": ("RAGSTORE_LLM_BACKOFF", "non_negative"),
    "max_backoff_s": ("RAGSTORE_LLM_MAX_BACKOFF", "non_negative"),
    "context_tokens": ("RAGSTORE_LLM_CONTEXT_TOKENS", "count"),
    "max_answer_tokens": ("RAGSTORE_LLM_MAX_TOKENS", "count"),
}


@dataclass(frozen=True)
class LLMSettings:
    """Where and how to call a language model; :meth:`from_env` reads them from
    ``RAGSTORE_LLM_*`` variables (``docs/answers.md`` lists them).

    ``backoff_s`` is the first retry's longest wait (doubling after each next failure, at
    most ``max_backoff_s``) when the endpoint asks for none.
    """

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_attempts: int = 4
    deadline_s: float = 120.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    limiter_path: Path | None = None
    limiter_wait_s: float = 10.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    prices: Mapping[str, Price] = field(default_factory=dict)
    context_tokens: int = 3000
    max_answer_tokens: int = 512
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    def __post_init__(self) -> None:
        _check_url(self.url, "url")
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidConfig("model must name the model to call", field="model")
        for name, (_, kind) in _NUMBERS.items():
            _checked(name, getattr(self, name), kind)
        for model, price in self.prices.items():
            if not isinstance(price, Price):
                raise InvalidConfig(f"the price of {model!r} must be a Price", field="prices")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LLMSettings | None:
        """The settings in ``environ``; ``None`` when ``RAGSTORE_LLM_URL`` is unset.

        Raises:
            InvalidConfig: a variable with a bad value (named in ``field``), or
                ``RAGSTORE_LLM_MODEL`` missing beside the URL.
        """
        url = environ.get(URL_VAR, "").strip()
        if not url:
            return None
        _check_url(url, URL_VAR)
        model = environ.get(MODEL_VAR, "").strip()
        if not model:
            raise InvalidConfig(
                f"{MODEL_VAR} must name the model to call at {URL_VAR}", field=MODEL_VAR
            )
        values: dict[str, Any] = {}
        for name, (var, kind) in _NUMBERS.items():
            raw = environ.get(var, "").strip()
            if raw:
                values[name] = _checked(var, _number(var, raw, kind), kind)
        if path := environ.get(LIMITER_PATH_VAR, "").strip():
            values["limiter_path"] = Path(path)
        if prices := environ.get(PRICES_VAR, "").strip():
            values["prices"] = _prices(prices)
        key = environ.get(KEY_VAR, "").strip() or None
        return cls(url=url, model=model, api_key=key, **values)


def _check_url(url: str, name: str) -> None:
    """An http(s) URL with a host, or :class:`InvalidConfig` naming ``name``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        shown = _display_url(url) if parsed is not None else "that value"
        raise InvalidConfig(
            f"{name} must be an http(s) URL such as https://api.openai.com/v1, not {shown}",
            field=name,
        )


def _number(name: str, raw: str, kind: str) -> float:
    """``raw`` as a number (an integer for counts), or :class:`InvalidConfig`."""
    try:
        return int(raw) if kind == "count" else float(raw)
    except ValueError:
        wanted = "a whole number" if kind == "count" else "a number"
        raise InvalidConfig(f"{name} must be {wanted}, not {raw!r}", field=name) from None


def _checked(name: str, value: Any, kind: str) -> Any:
    """``value`` when it is of ``kind`` (``None`` passes for the optional limits)."""
    if value is None and name in ("requests_per_minute", "tokens_per_minute"):
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "count":
        ok = ok and isinstance(value, int) and value >= 1
        wanted = "a whole number, at least 1"
    elif kind == "positive":
        ok = ok and value > 0
        wanted = "a number above 0"
    else:
        ok = ok and value >= 0
        wanted = "a number, at least 0"
    if not ok:
        raise InvalidConfig(f"{name} must be {wanted}, not {value!r}", field=name)
    return value


def _prices(text: str) -> dict[str, Price]:
    """Prices from inline JSON or a JSON file: ``{"model": {"input": x, "output": y}}``."""
    if not text.lstrip().startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(
                f"{PRICES_VAR} names a file that cannot be read: {exc.strerror}", field=PRICES_VAR
            ) from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError
        return {str(model): _price(price) for model, price in data.items()}
    except (ValueError, TypeError, KeyError, InvalidConfig):
        raise InvalidConfig(
            f'{PRICES_VAR} must hold JSON like {{"model": {{"input": 2.5, "output": 10}}}} '
            "(USD per million tokens, each at least 0)",
            field=PRICES_VAR,
        ) from None


def _price(value: Any) -> Price:
    if not isinstance(value, dict) or set(value) != {"input", "output"}:
        raise TypeError
    return Price(input=value["input"], output=value["output"])


@dataclass(frozen=True)
class Completion:
    """What one call generated. ``usage`` is the endpoint's count, else estimated
    (``usage.estimated``); ``cost_usd`` is ``None`` when the model has no price;
    ``latency_s`` covers the whole call: limiter waits, retries and backoffs included."""

    text: str
    model: str
    usage: Usage
    cost_usd: float | None
    attempts: int
    latency_s: float
    finish_reason: str | None


class LLMObserver(Protocol):
    """Told what the calls do (the server's metrics implement it)."""

    def on_attempt(self, model: str, outcome: str, seconds: float) -> None:
        """One attempt ended: ``outcome`` is ``"ok"``, ``"429"``, ``"5xx"``, ``"408"``,
        ``"4xx"``, ``"timeout"``, ``"connection"``, ``"bad_response"`` or ``"deadline"``."""

    def on_retry(self, model: str, reason: str) -> None:
        """A failed attempt is being retried (``reason``: the attempt's outcome)."""

    def on_completion(self, completion: Completion) -> None:
        """A call succeeded."""

    def on_breaker(self, model: str, state: str) -> None:
        """The breaker went ``"closed"``, ``"open"`` or ``"half_open"``."""


class NoObserver:
    """An observer that ignores everything; subclass it to hear only some events."""

    def on_attempt(self, model: str, outcome: str, seconds: float) -> None:
        """Ignored."""

    def on_retry(self, model: str, reason: str) -> None:
        """Ignored."""

    def on_completion(self, completion: Completion) -> None:
        """Ignored."""

    def on_breaker(self, model: str, state: str) -> None:
        """Ignored."""


class _Retryable(Exception):
    """An attempt that failed in a way that may pass: ``outcome`` for the observer,
    ``reason`` for the final :class:`LLMError`, the answer's ``status`` and ``headers``."""

    def __init__(
        self,
        outcome: str,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.reason = reason
        self.message = message
        self.status = status
        self.headers = dict(headers or {})


Messages = Sequence[Mapping[str, str]]


class ChatModel:
    """A chat model behind an OpenAI-compatible endpoint; safe to share between threads."""

    def __init__(self, settings: LLMSettings, *, observer: LLMObserver | None = None) -> None:
        self.settings = settings
        self._observer: LLMObserver = observer or NoObserver()
        self._endpoint = f"{settings.url.rstrip('/')}/chat/completions"
        self._shown = _display_url(self._endpoint)
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.Client(headers=headers, timeout=settings.timeout_s)
        key = f"{self._shown}|{settings.model}"
        self._limiter = RateLimiter(
            key,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            path=settings.limiter_path,
        )
        self._breaker: CircuitBreaker = breaker_for(
            key, settings.breaker_failures, settings.breaker_reset_s
        )

    @property
    def model(self) -> str:
        """The model called."""
        return self.settings.model

    def count_tokens(self, text: str) -> int:
        """An estimate of ``text``'s tokens: runs of up to four word characters and single
        other characters (close to the tokenizers of OpenAI's models for English)."""
        return len(approximate_token_offsets(text))

    def prompt_tokens(self, messages: Messages) -> int:
        """An estimate of the prompt tokens of ``messages``."""
        content = sum(self.count_tokens(m["content"]) for m in messages)
        return content + MESSAGE_TOKENS * len(messages) + REPLY_TOKENS

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """The model's reply to ``messages``, in at most ``max_tokens`` tokens (default
        ``max_answer_tokens``).

        Raises:
            LLMError: no usable answer (``reason`` says why).
            InvalidInput: ``messages`` or ``max_tokens`` malformed.
        """
        call = _Call(self, messages, max_tokens, stream=False)
        completion: Completion = call.run(call.read_whole)
        return completion

    def stream(self, messages: Messages, *, max_tokens: int | None = None) -> CompletionStream:
        """The reply to ``messages`` as it is generated; the call is made (and retried
        until the first delta) when iteration starts."""
        return CompletionStream(_Call(self, messages, max_tokens, stream=True))

    def close(self) -> None:
        """Close the connections and the limiter's file."""
        self._client.close()
        self._limiter.close()

    def _notify_breaker(self, state: str) -> None:
        level = logging.INFO if state == "closed" else logging.WARNING
        log.log(level, "circuit breaker for %s (%s) is %s", self._shown, self.model, state)
        self._observer.on_breaker(self.model, state)

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


class CompletionStream:
    """Iterate for the reply's text deltas; after the loop, :attr:`completion` holds the
    :class:`Completion`. A failure after the first delta raises :class:`LLMError` from the
    iterator (only the attempts before it are retried)."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._iterator: Generator[str, None, None] | None = None
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    def close(self) -> None:
        """Stop reading; the connection is closed."""
        if self._iterator is not None:
            self._iterator.close()

    def _deltas(self) -> Generator[str, None, None]:
        opened = self._call.run(self._call.open_stream)
        try:
            yield from self._call.deltas(opened)
        finally:
            opened.response.close()
            self._call.settle(None)  # a stream left early still got an answer
        self.completion = self._call.finished(opened.reply)


@dataclass
class _Reply:
    """What has been read of a reply so far."""

    parts: list[str] = field(default_factory=list)
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class _Opened:
    """A stream whose first delta arrived: the response, its remaining events, and the
    reply read so far."""

    response: httpx.Response
    events: Iterator[dict[str, Any]]
    reply: _Reply


class _Call:
    """One call: breaker, limiter, attempts with retries, then the completion."""

    def __init__(
        self, chat: ChatModel, messages: Messages, max_tokens: int | None, *, stream: bool
    ) -> None:
        self.chat = chat
        self.settings = chat.settings
        self.messages = _valid_messages(messages)
        self.max_tokens = _valid_max_tokens(max_tokens, self.settings.max_answer_tokens)
        self.stream = stream
        self.started = time.monotonic()
        self.deadline = self.started + self.settings.deadline_s
        self.attempts = 0
        self._settled = False
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        self.body = body

    def run(self, attempt: Callable[[], Any]) -> Any:
        """``attempt`` through the breaker, the limiter and the retries."""
        breaker = self.chat._breaker
        breaker.before(self.chat._notify_breaker)
        try:
            self._wait_for_room()
        except LLMError:
            breaker.abandoned()
            raise
        try:
            result = self._retrying()(attempt)
        except LLMError as exc:
            self.settle(exc.reason)
            raise
        except _Retryable as last:
            error = self._exhausted(last)
            self.settle(error.reason)
            raise error from None
        except BaseException:
            self.settle(None)
            raise
        if not self.stream:
            self.settle(None)
        return result

    def read_whole(self) -> Completion:
        """One attempt of a call without streaming."""
        with self._attempt() as response:
            data = self._json(b"".join(self._chunks(response)))
        reply = _Reply(model=_text(data.get("model")))
        try:
            choice = data["choices"][0]
            reply.parts.append(choice["message"].get("content") or "")
            reply.finish_reason = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._bad("an answer without choices[0].message") from None
        reply.usage = _usage(data.get("usage"))
        return self.finished(reply)

    def open_stream(self) -> _Opened:
        """One attempt of a streamed call, up to its first delta."""
        with self._attempt(keep_open=True) as response:
            events = self._events(response)
            reply = _Reply()
            for event in events:
                if self._take(event, reply):
                    break
            return _Opened(response, events, reply)

    def deltas(self, opened: _Opened) -> Iterator[str]:
        """The stream's text deltas, the first included; errors as :class:`LLMError`."""
        yield from opened.reply.parts
        try:
            for event in opened.events:
                before = len(opened.reply.parts)
                self._take(event, opened.reply)
                yield from opened.reply.parts[before:]
        except _Retryable as exc:
            self.settle(exc.reason)
            raise LLMError(self._failed_message(exc), reason=exc.reason) from None
        except LLMError as exc:
            self.settle(exc.reason)
            raise
        self.settle(None)

    def finished(self, reply: _Reply) -> Completion:
        """The completion of ``reply``, told to the observer."""
        text = "".join(reply.parts)
        usage = reply.usage or Usage(
            prompt_tokens=self.chat.prompt_tokens(self.messages),
            completion_tokens=self.chat.count_tokens(text),
            estimated=True,
        )
        model = reply.model or self.settings.model
        prices = self.settings.prices
        price = prices.get(model) or prices.get(self.settings.model)
        completion = Completion(
            text=text,
            model=model,
            usage=usage,
            cost_usd=None if price is None else price.cost(usage),
            attempts=self.attempts,
            latency_s=time.monotonic() - self.started,
            finish_reason=reply.finish_reason,
        )
        self.chat._observer.on_completion(completion)
        return completion

    # -- the limiter, the breaker and the retries --------------------------------------

    def _wait_for_room(self) -> None:
        """Book the limiter's room (prompt estimate + ``max_tokens``) and wait for it."""
        limiter = self.chat._limiter
        if not limiter.active:
            return
        tokens = self.chat.prompt_tokens(self.messages) + self.max_tokens
        max_wait = min(self.settings.limiter_wait_s, self.deadline - time.monotonic())
        time.sleep(limiter.reserve(tokens, max(0.0, max_wait)))

    def settle(self, reason: str | None) -> None:
        """Tell the breaker how the call ended (``None``: it got an answer); only the
        first word counts."""
        if self._settled:
            return
        self._settled = True
        breaker, notify = self.chat._breaker, self.chat._notify_breaker
        if reason in _BREAKER_FAILURES:
            breaker.failed(notify)
        elif reason != "shed":
            breaker.succeeded(notify)

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        """The endpoint's asked wait, else full jitter: uniform in [0, backoff · 2^n]."""
        failed = state.outcome.exception() if state.outcome else None
        headers = failed.headers if isinstance(failed, _Retryable) else {}
        asked = _asked_delay({k.lower(): v for k, v in headers.items()})
        if asked is not None:
            return max(0.0, asked)
        ceiling = self.settings.backoff_s * 2 ** (state.attempt_number - 1)
        return random.uniform(0.0, min(self.settings.max_backoff_s, ceiling))

    def _stop(self, state: RetryCallState) -> bool:
        """Stop after ``max_attempts``, or when the wait would pass the deadline."""
        if state.attempt_number >= self.settings.max_attempts:
            return True
        return time.monotonic() + state.upcoming_sleep >= self.deadline

    def _before_sleep(self, state: RetryCallState) -> None:
        failed = state.outcome.exception() if state.outcome else None
        outcome = failed.outcome if isinstance(failed, _Retryable) else "error"
        log.warning(
            "chat completion at %s (%s): %s; retrying in %.2f s",
            self.chat._shown,
            self.settings.model,
            failed.message if isinstance(failed, _Retryable) else outcome,
            state.upcoming_sleep,
        )
        self.chat._observer.on_retry(self.settings.model, outcome)

    def _exhausted(self, last: _Retryable) -> LLMError:
        """The error of a call whose retries ran out, or whose next wait passed the
        deadline."""
        asked = _asked_delay({k.lower(): v for k, v in last.headers.items()})
        if self.attempts < self.settings.max_attempts:
            return LLMError(
                f"chat completion at {self.chat._shown} ({self.settings.model}) gave no answer "
                f"within the {self.settings.deadline_s:g} s deadline after {self.attempts} "
                f"attempts; the last: {last.message}",
                reason="deadline",
                status=last.status,
                retry_after=asked,
            )
        return LLMError(
            self._failed_message(last), reason=last.reason, status=last.status, retry_after=asked
        )

    def _failed_message(self, last: _Retryable) -> str:
        return (
            f"chat completion at {self.chat._shown} ({self.settings.model}) failed after "
            f"{self.attempts} attempts; the last: {last.message}"
        )

    # -- one attempt -----------------------------------------------------------------------

    def _attempt(self, *, keep_open: bool = False) -> _Attempt:
        """An attempt's response (status 2xx), closed on leaving unless ``keep_open``."""
        self.attempts += 1
        return _Attempt(self, keep_open)

    def _send(self) -> httpx.Response:
        """Send the request; the response with its headers read."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Retryable("deadline", "deadline", "the deadline passed")
        timeout = httpx.Timeout(min(self.settings.timeout_s, left))
        request = self.chat._client.build_request(
            "POST", self.chat._endpoint, json=self.body, timeout=timeout
        )
        return self.chat._client.send(request, stream=True)

    def _check(self, response: httpx.Response) -> None:
        """Raise for an answer other than 2xx: :class:`_Retryable` when it may pass."""
        status = response.status_code
        if status < 400:
            return
        response.read()
        message = f"HTTP {status}: {self.chat._scrub(_error_message(response))}"
        if status == 429:
            raise _Retryable(
                "429", "rate_limited", message, status=status, headers=response.headers
            )
        if status >= 500:
            raise _Retryable(
                "5xx", "server_error", message, status=status, headers=response.headers
            )
        if status == 408:
            raise _Retryable("408", "timeout", message, status=status, headers=response.headers)
        if status in (401, 403, 404):
            raise self._refused(status, message)
        raise LLMError(
            f"chat completion at {self.chat._shown} refused the request ({message})",
            reason="bad_response",
            status=status,
        )

    def _refused(self, status: int, message: str) -> LLMError:
        if status in (401, 403):
            advice = f"set {KEY_VAR} to a key the endpoint accepts"
        elif "model" in message.lower():
            advice = f"set {MODEL_VAR} to a model the endpoint serves"
        else:
            advice = f"check {URL_VAR} (the base URL, such as .../v1)"
        return LLMError(
            f"chat completion at {self.chat._shown} ({self.settings.model}) refused: "
            f"{message}; {advice}",
            reason="refused",
            status=status,
        )

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        """The body's bytes as they come, stopped at the deadline."""
        for chunk in response.iter_bytes():
            self._check_deadline()
            yield chunk

    def _events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """The JSON of each SSE ``data:`` line up to ``[DONE]``; a stream that ends
        before it is a dropped connection."""
        try:
            for line in response.iter_lines():
                self._check_deadline()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                event = self._json(payload.encode())
                if "error" in event:
                    raise self._bad(f"an error event: {_error_text(event['error'])}")
                yield event
        except httpx.TransportError as exc:
            raise _transport_failure(exc, self.chat._scrub) from None
        raise _Retryable("connection", "connection", "the stream ended before data: [DONE]")

    def _take(self, event: dict[str, Any], reply: _Reply) -> bool:
        """Add a stream event to ``reply``; whether it held a text delta."""
        reply.model = reply.model or _text(event.get("model"))
        if event.get("usage"):
            reply.usage = _usage(event["usage"])
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                reply.parts.append(content)
                return True
        return False

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise LLMError(
                f"chat completion at {self.chat._shown} ({self.settings.model}) did not "
                f"finish within the {self.settings.deadline_s:g} s deadline",
                reason="deadline",
            )

    def _json(self, data: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(data)
        except ValueError:
            raise self._bad("an answer that is not JSON") from None
        if not isinstance(decoded, dict):
            raise self._bad("an answer that is not a JSON object")
        return decoded

    def _bad(self, what: str) -> LLMError:
        return LLMError(
            f"chat completion at {self.chat._shown} ({self.settings.model}) sent {what}",
            reason="bad_response",
        )


class _Attempt:
    """A context manager around one attempt: sends, checks the status, maps transport
    errors to :class:`_Retryable`, tells the observer how the attempt went and closes
    the response (unless kept open for a stream)."""

    def __init__(self, call: _Call, keep_open: bool) -> None:
        self._call = call
        self._keep_open = keep_open
        self._started = time.monotonic()
        self._response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        try:
            self._response = self._call._send()
        except httpx.TransportError as exc:
            self._end(exc)
        try:
            self._call._check(self._response)
        except BaseException as exc:
            self._end(exc)
        return self._response

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is not None:
            self._end(exc)
        if not self._keep_open and self._response is not None:
            self._response.close()
        self._observe("ok")

    def _end(self, exc: BaseException) -> NoReturn:
        """Close the response, tell the observer, and raise ``exc`` as the right error."""
        if self._response is not None:
            self._response.close()
        if isinstance(exc, httpx.TransportError):
            exc = _transport_failure(exc, self._call.chat._scrub)
        if isinstance(exc, _Retryable):
            self._observe(exc.outcome)
        elif isinstance(exc, LLMError):
            self._observe(exc.reason)
        raise exc

    def _observe(self, outcome: str) -> None:
        seconds = time.monotonic() - self._started
        self._call.chat._observer.on_attempt(self._call.settings.model, outcome, seconds)


def _transport_failure(exc: httpx.TransportError, scrub: Callable[[str], str]) -> _Retryable:
    """A timeout or a connection failure, without the key."""
    text = scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return _Retryable("timeout", "timeout", f"{type(exc).__name__}: {text}")
    return _Retryable("connection", "connection", f"{type(exc).__name__}: {text}")


def _usage(data: Any) -> Usage | None:
    """The endpoint's ``usage``, if it holds the two counts."""
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        error = error.get("message")
    return " ".join(str(error).split())[:500]


def _error_message(response: httpx.Response) -> str:
    """The endpoint's own account of an error (OpenAI's ``error.message``), else the
    start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    text = _error_text(error) if error else " ".join(response.text.split())[:500]
    return text or response.reason_phrase


def _display_url(url: str) -> str:
    """``url`` without user info or query, which may carry credentials."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _valid_messages(messages: Messages) -> list[dict[str, str]]:
    """``messages`` as plain dicts, or :class:`InvalidInput`."""
    if isinstance(messages, str | bytes) or not messages:
        raise InvalidInput("messages must be a non-empty list of chat messages", field="messages")
    valid: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidInput(
                f"messages[{i}] must have a string role and content", field=f"messages[{i}]"
            )
        valid.append(dict(message))
    return valid


def _valid_max_tokens(max_tokens: int | None, default: int) -> int:
    if max_tokens is None:
        return default
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidInput(
            f"max_tokens must be a whole number, at least 1, not {max_tokens!r}", field="max_tokens"
        )
    return max_tokens
