"""The chat model client against a stand-in OpenAI-compatible server on 127.0.0.1: answers,
streams, usage and cost, retries and backoff, the deadline, the rate limiter (threads and
processes sharing a file), the circuit breaker, configuration, and the API key kept out of
every message and log record."""

from __future__ import annotations

import contextlib
import itertools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from openai_standin import (
    Answer,
    Drop,
    Fail,
    OpenAIStandIn,
    echo_citing,
    openai_server_fixture,  # noqa: F401
)

from ragstore.answer.llm import ChatModel, Completion, LLMSettings, NoObserver, Price
from ragstore.errors import InvalidConfig, InvalidInput, LLMError

KEY = "sk-standin-llm-0123456789-do-not-leak"
MODEL = "standin-chat"
QUESTION = [
    {"role": "system", "content": "Answer from the sources; cite them as [n]."},
    {"role": "user", "content": "How long do refunds take?"},
]
PRICE = Price(input=2.5, output=10.0)


class Recorder(NoObserver):
    """An observer that keeps what it is told."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.retries: list[str] = []
        self.completions: list[Completion] = []
        self.breaker: list[str] = []

    def on_attempt(self, model: str, outcome: str, seconds: float) -> None:
        self.attempts.append(outcome)

    def on_retry(self, model: str, reason: str) -> None:
        self.retries.append(reason)

    def on_completion(self, completion: Completion) -> None:
        self.completions.append(completion)

    def on_breaker(self, model: str, state: str) -> None:
        self.breaker.append(state)


def settings(server: OpenAIStandIn, **changes: Any) -> LLMSettings:
    """Settings for the stand-in, with quick retries."""
    values: dict[str, Any] = {
        "url": server.url,
        "model": MODEL,
        "api_key": KEY,
        "backoff_s": 0.05,
        "timeout_s": 5.0,
        "deadline_s": 20.0,
        **changes,
    }
    return LLMSettings(**values)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_chat(openai_server: OpenAIStandIn, recorder: Recorder) -> Iterator[Any]:
    """Builds chat models on the stand-in (closed after the test)."""
    made: list[ChatModel] = []

    def make(**changes: Any) -> ChatModel:
        made.append(ChatModel(settings(openai_server, **changes), observer=recorder))
        return made[-1]

    yield make
    for chat in made:
        chat.close()


def gaps(server: OpenAIStandIn) -> list[float]:
    """Seconds between the arrivals of successive requests."""
    times = [seen.at for seen in server.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def failure(call: Any) -> tuple[LLMError, float]:
    """The LLMError ``call()`` raises, and how long it took."""
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        call()
    return caught.value, time.monotonic() - started


# -- answers, streams, usage and cost ----------------------------------------------------


def test_an_answer_carries_the_endpoints_usage_and_its_cost(
    openai_server: OpenAIStandIn, make_chat: Any, recorder: Recorder
) -> None:
    openai_server.respond_with(echo_citing)
    chat = make_chat(prices={MODEL: PRICE})
    completion = chat.complete(QUESTION, max_tokens=64)

    seen = openai_server.requests[0]
    assert seen.answered is not None
    assert completion.text == seen.answered["text"] == echo_citing(seen.body)
    sent = seen.answered["usage"]
    assert completion.usage.prompt_tokens == sent["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == sent["completion_tokens"] > 0
    assert not completion.usage.estimated
    expected = sent["prompt_tokens"] * 2.5 / 1e6 + sent["completion_tokens"] * 10.0 / 1e6
    assert completion.cost_usd == pytest.approx(expected)
    assert (completion.model, completion.attempts, completion.finish_reason) == (MODEL, 1, "stop")
    assert seen.path == "/v1/chat/completions"
    assert seen.body == {"model": MODEL, "messages": QUESTION, "max_tokens": 64, "stream": False}
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.attempts == ["ok"] and recorder.completions == [completion]


def test_no_price_no_cost_and_no_key_no_authorization(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    chat = make_chat(api_key=None, prices={"another-model": PRICE})
    completion = chat.complete(QUESTION)
    assert completion.cost_usd is None
    seen = openai_server.requests[0]
    assert "authorization" not in seen.headers
    assert seen.body["max_tokens"] == chat.settings.max_answer_tokens


def test_a_stream_yields_the_deltas_and_takes_usage_from_the_last_chunk(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    openai_server.respond_with("Refunds reach your card within 30 days [1].")
    chat = make_chat(prices={MODEL: PRICE})
    stream = chat.stream(QUESTION)
    deltas = list(stream)

    seen = openai_server.requests[0]
    assert seen.answered is not None
    assert len(deltas) > 3 and "".join(deltas) == seen.answered["text"]
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    completion = stream.completion
    assert completion is not None and completion.text == seen.answered["text"]
    usage = seen.answered["usage"]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert not completion.usage.estimated
    assert completion.cost_usd == pytest.approx(PRICE.cost(completion.usage))
    assert completion.finish_reason == "stop"


@pytest.mark.parametrize("streamed", [False, True])
def test_usage_is_estimated_when_the_endpoint_reports_none(
    openai_server: OpenAIStandIn, make_chat: Any, streamed: bool
) -> None:
    openai_server.script(Answer(usage=False))
    chat = make_chat(prices={MODEL: PRICE})
    if streamed:
        stream = chat.stream(QUESTION)
        text = "".join(stream)
        completion = stream.completion
    else:
        completion = chat.complete(QUESTION)
        text = completion.text
    assert completion is not None and completion.usage.estimated
    assert completion.usage.prompt_tokens == chat.prompt_tokens(QUESTION) > 0
    assert completion.usage.completion_tokens == chat.count_tokens(text) > 0
    assert completion.cost_usd == pytest.approx(PRICE.cost(completion.usage))


def test_bad_messages_and_max_tokens_are_refused_before_any_call(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    chat = make_chat()
    with pytest.raises(InvalidInput) as caught:
        chat.complete([])
    assert caught.value.field == "messages"
    with pytest.raises(InvalidInput) as caught:
        chat.complete([{"role": "user"}])
    assert caught.value.field == "messages[0]"
    with pytest.raises(InvalidInput) as caught:
        chat.complete(QUESTION, max_tokens=0)
    assert caught.value.field == "max_tokens"
    assert openai_server.requests == []


# -- retries, backoff and the deadline ---------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "1"}, 1.0, 1.3),
        ({"retry-after-ms": "400", "Retry-After": "9"}, 0.4, 0.7),
        ({"Retry-After": "date"}, 0.9, 2.3),
    ],
    ids=["seconds", "milliseconds", "http-date"],
)
def test_a_429_is_retried_after_the_wait_it_asks_for(
    openai_server: OpenAIStandIn,
    make_chat: Any,
    recorder: Recorder,
    headers: dict[str, str],
    low: float,
    high: float,
) -> None:
    if headers.get("Retry-After") == "date":
        headers = {"Retry-After": formatdate(time.time() + 2, usegmt=True)}
    openai_server.script(Fail(429, headers=headers))
    completion = make_chat(backoff_s=5.0).complete(QUESTION)
    assert completion.attempts == 2
    [waited] = gaps(openai_server)
    assert low <= waited <= high
    assert recorder.attempts == ["429", "ok"] and recorder.retries == ["429"]


def test_server_errors_and_dropped_connections_are_retried_with_jittered_backoff(
    openai_server: OpenAIStandIn, make_chat: Any, recorder: Recorder
) -> None:
    openai_server.script(Fail(500), Drop(), Drop(mid_body=True), Fail(503), Fail(502), Drop())
    chat = make_chat(max_attempts=7, backoff_s=0.04, max_backoff_s=0.3)
    completion = chat.complete(QUESTION)

    assert completion.attempts == 7 and len(openai_server.requests) == 7
    waits = gaps(openai_server)
    ceilings = [min(0.3, 0.04 * 2**n) for n in range(6)]
    assert all(wait <= ceiling + 0.05 for wait, ceiling in zip(waits, ceilings, strict=True))
    assert len({round(wait, 3) for wait in waits}) > 1  # jitter, not a fixed schedule
    assert sum(waits) >= 0.05  # and it does wait
    assert recorder.retries == ["5xx", "connection", "connection", "5xx", "5xx", "connection"]


def test_no_retry_past_max_attempts(openai_server: OpenAIStandIn, make_chat: Any) -> None:
    openai_server.script(*[Fail(500)] * 5)
    error, _ = failure(lambda: make_chat(max_attempts=3).complete(QUESTION))
    assert (error.reason, error.status) == ("server_error", 500)
    assert len(openai_server.requests) == 3

    openai_server.reset()
    openai_server.script(*[Fail(429, headers={"Retry-After": "0.1"})] * 3)
    error, _ = failure(lambda: make_chat(max_attempts=2).complete(QUESTION))
    assert (error.reason, error.status, error.retry_after) == ("rate_limited", 429, 0.1)
    assert len(openai_server.requests) == 2


def test_other_client_errors_are_not_retried(openai_server: OpenAIStandIn, make_chat: Any) -> None:
    openai_server.script(Fail(400, message="This model's maximum context length is 8192 tokens"))
    error, _ = failure(lambda: make_chat().complete(QUESTION))
    assert (error.reason, error.status) == ("bad_response", 400)
    assert "maximum context length" in str(error)
    assert len(openai_server.requests) == 1


def test_each_attempt_has_its_own_timeout(
    openai_server: OpenAIStandIn, make_chat: Any, recorder: Recorder
) -> None:
    openai_server.script(Answer(delay_s=3))
    started = time.monotonic()
    completion = make_chat(timeout_s=0.3).complete(QUESTION)
    assert completion.attempts == 2 and time.monotonic() - started < 1.0
    assert recorder.attempts == ["timeout", "ok"]


def test_the_deadline_bounds_a_slow_answer(openai_server: OpenAIStandIn, make_chat: Any) -> None:
    openai_server.script(Answer(delay_s=5))
    error, took = failure(lambda: make_chat(timeout_s=30, deadline_s=1.0).complete(QUESTION))
    assert error.reason == "deadline" and 1.0 <= took <= 1.4


def test_the_deadline_bounds_retries_and_their_waits(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    openai_server.script(*[Answer(delay_s=3)] * 10)
    chat = make_chat(timeout_s=0.25, max_attempts=10, deadline_s=1.2)
    error, took = failure(lambda: chat.complete(QUESTION))
    assert error.reason == "deadline" and took <= 1.35
    assert len(openai_server.requests) >= 3


def test_a_wait_past_the_deadline_fails_at_once(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    openai_server.script(Fail(429, headers={"Retry-After": "5"}))
    error, took = failure(lambda: make_chat(deadline_s=2.0).complete(QUESTION))
    assert (error.reason, error.retry_after) == ("deadline", 5.0)
    assert took < 0.5 and len(openai_server.requests) == 1


def test_a_stream_is_retried_before_its_first_delta_only(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    openai_server.script(Answer(drop_after_chunks=0), Fail(503))
    stream = make_chat().stream(QUESTION)
    assert "".join(stream) and stream.completion is not None
    assert stream.completion.attempts == 3

    openai_server.reset()
    openai_server.respond_with("one two three four five six")
    openai_server.script(Answer(drop_after_chunks=3))
    stream = make_chat().stream(QUESTION)
    deltas: list[str] = []
    with pytest.raises(LLMError) as caught:
        deltas.extend(stream)
    assert caught.value.reason == "connection"
    assert deltas == ["one", " two", " three"] and stream.completion is None
    assert len(openai_server.requests) == 1


def test_a_stream_left_early_is_closed(openai_server: OpenAIStandIn, make_chat: Any) -> None:
    openai_server.script(Answer(chunk_delay_s=0.2))
    stream = make_chat().stream(QUESTION)
    assert next(iter(stream))
    stream.close()
    assert stream.completion is None
    assert make_chat().complete(QUESTION).text  # the endpoint is still served


# -- the rate limiter ----------------------------------------------------------------------


def steady_rate(arrivals: list[float], burst: float, cost: float = 1.0) -> float:
    """Units per second admitted after the bucket's initial ``burst``: a token bucket
    admits ``burst`` units at once, then refills at its rate."""
    arrivals = sorted(arrivals)
    return (len(arrivals) * cost - burst) / (arrivals[-1] - arrivals[0])


def run_threads(count: int, seconds: float, call: Any) -> None:
    """``call()`` in a loop on ``count`` threads for ``seconds``."""
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            call()

    threads = [threading.Thread(target=loop) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_requests_per_minute_hold_under_concurrent_threads(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    chat = make_chat(requests_per_minute=1200)  # 20 a second; the bucket holds 20
    run_threads(8, 3.0, lambda: chat.complete(QUESTION))
    arrivals = [seen.at for seen in openai_server.requests]
    assert len(arrivals) > 60
    assert steady_rate(arrivals, burst=20) == pytest.approx(20.0, rel=0.05)


_WORKER = """
import sys
from pathlib import Path
from ragstore.answer.llm import ChatModel, LLMSettings
url, path, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
chat = ChatModel(LLMSettings(url=url, model="standin-chat", requests_per_minute=1200,
                             limiter_path=path))
print("ready", flush=True)
sys.stdin.readline()
import time
stop = time.monotonic() + seconds
while time.monotonic() < stop:
    chat.complete([{"role": "user", "content": "hello"}])
chat.close()
"""


def test_requests_per_minute_hold_across_processes_sharing_a_file(
    openai_server: OpenAIStandIn, tmp_path: Path
) -> None:
    path = tmp_path / "limits" / "llm.sqlite"
    command = [sys.executable, "-c", _WORKER, openai_server.url, str(path), "3.0"]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()
    arrivals = [seen.at for seen in openai_server.requests]
    assert len(arrivals) > 60
    assert steady_rate(arrivals, burst=20) == pytest.approx(20.0, rel=0.05)


def test_tokens_per_minute_hold_under_concurrent_threads(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    chat = make_chat(tokens_per_minute=12_000)  # 200 a second; the bucket holds 200
    cost = chat.prompt_tokens(QUESTION) + 40  # what each call is charged before it is sent
    run_threads(4, 2.5, lambda: chat.complete(QUESTION, max_tokens=40))
    arrivals = [seen.at for seen in openai_server.requests]
    assert len(arrivals) > 8
    assert steady_rate(arrivals, burst=200, cost=cost) == pytest.approx(200.0, rel=0.05)


def test_a_call_without_room_in_time_is_shed(openai_server: OpenAIStandIn, make_chat: Any) -> None:
    impatient = make_chat(requests_per_minute=60, limiter_wait_s=0.2)  # one a second
    impatient.complete(QUESTION)
    error, took = failure(lambda: impatient.complete(QUESTION))
    assert error.reason == "shed" and took < 0.1
    assert error.retry_after is not None and 0.5 < error.retry_after <= 1.0
    assert len(openai_server.requests) == 1

    patient = make_chat(requests_per_minute=60, limiter_wait_s=2.0)  # shares the bucket
    started = time.monotonic()
    patient.complete(QUESTION)
    assert 0.5 < time.monotonic() - started < 1.3
    assert len(openai_server.requests) == 2


def test_an_unusable_limiter_file_is_a_config_error(
    openai_server: OpenAIStandIn, tmp_path: Path
) -> None:
    with pytest.raises(InvalidConfig) as caught:
        ChatModel(settings(openai_server, requests_per_minute=60, limiter_path=tmp_path))
    assert caught.value.field == "RAGSTORE_LLM_LIMITER_PATH"


# -- the circuit breaker -------------------------------------------------------------------


def test_the_breaker_opens_fails_fast_tries_once_and_closes(
    openai_server: OpenAIStandIn, make_chat: Any, recorder: Recorder
) -> None:
    chat = make_chat(max_attempts=1, breaker_failures=3, breaker_reset_s=0.5)
    openai_server.script(*[Fail(500)] * 3)
    for _ in range(3):
        assert failure(lambda: chat.complete(QUESTION))[0].reason == "server_error"
    assert recorder.breaker == ["open"]

    error, took = failure(lambda: chat.complete(QUESTION))
    assert error.reason == "breaker_open" and took < 0.1
    assert error.retry_after is not None and 0 < error.retry_after <= 0.5
    assert len(openai_server.requests) == 3

    time.sleep(0.5)  # half-open: one trial, which fails and opens it again
    openai_server.script(Fail(500))
    assert failure(lambda: chat.complete(QUESTION))[0].reason == "server_error"
    assert failure(lambda: chat.complete(QUESTION))[0].reason == "breaker_open"
    assert recorder.breaker == ["open", "half_open", "open"]
    assert len(openai_server.requests) == 4

    time.sleep(0.5)  # half-open: while the trial runs, other calls are still refused
    openai_server.script(Answer(delay_s=0.3))
    trial = threading.Thread(target=chat.complete, args=(QUESTION,))
    trial.start()
    time.sleep(0.1)
    assert failure(lambda: chat.complete(QUESTION))[0].reason == "breaker_open"
    trial.join()
    assert recorder.breaker == ["open", "half_open", "open", "half_open", "closed"]
    chat.complete(QUESTION)
    assert len(openai_server.requests) == 6


def test_the_breaker_counts_only_consecutive_failures(
    openai_server: OpenAIStandIn, make_chat: Any, recorder: Recorder
) -> None:
    chat = make_chat(max_attempts=1, breaker_failures=2)
    openai_server.script(Fail(500), Answer(), Fail(500), Fail(400), Fail(500))
    for _ in range(5):
        with contextlib.suppress(LLMError):
            chat.complete(QUESTION)
    assert recorder.breaker == []  # a 400 shows the endpoint is up, like an answer


# -- configuration and the key -------------------------------------------------------------


def test_a_refused_key_names_the_variable_and_never_the_key(
    openai_server: OpenAIStandIn, make_chat: Any
) -> None:
    openai_server.key = KEY
    wrong = "sk-wrong-9876543210-secret"
    with pytest.raises(LLMError) as caught:
        make_chat(api_key=wrong).complete(QUESTION)
    assert caught.value.reason == "refused" and caught.value.status == 401
    assert "RAGSTORE_LLM_API_KEY" in str(caught.value) and "401" in str(caught.value)
    assert wrong not in str(caught.value) and KEY not in str(caught.value)
    assert len(openai_server.requests) == 1  # not retried

    with pytest.raises(LLMError, match="RAGSTORE_LLM_API_KEY") as caught:
        make_chat(api_key=None).complete(QUESTION)
    assert caught.value.reason == "refused"

    openai_server.models = {"another-model"}
    with pytest.raises(LLMError, match="RAGSTORE_LLM_MODEL") as caught:
        make_chat().complete(QUESTION)
    assert caught.value.reason == "refused"


def test_no_key_in_any_log_record_or_error(
    openai_server: OpenAIStandIn, make_chat: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "ragstore"):
        caplog.set_level(logging.DEBUG, logger=name)
    openai_server.key = KEY
    chat = make_chat(max_attempts=2)
    openai_server.script(Fail(429, headers={"Retry-After": "0"}), Drop())
    errors: list[str] = [str(failure(lambda: chat.complete(QUESTION))[0])]
    chat.complete(QUESTION)
    "".join(chat.stream(QUESTION))
    with pytest.raises(LLMError) as caught:
        make_chat(api_key=KEY + "-revoked").complete(QUESTION)
    errors.append(str(caught.value))

    names = {record.name.split(".")[0] for record in caplog.records}
    assert {"httpx", "httpcore", "ragstore"} <= names  # the loggers were heard
    for text in [*errors, *(record.getMessage() for record in caplog.records)]:
        assert KEY not in text and "Bearer" not in text


def test_the_key_is_not_in_the_settings_repr(openai_server: OpenAIStandIn) -> None:
    assert KEY not in repr(settings(openai_server))


FULL_ENV = {
    "RAGSTORE_LLM_URL": "http://127.0.0.1:9/v1",
    "RAGSTORE_LLM_MODEL": MODEL,
    "RAGSTORE_LLM_API_KEY": KEY,
    "RAGSTORE_LLM_TIMEOUT": "12.5",
    "RAGSTORE_LLM_MAX_ATTEMPTS": "3",
    "RAGSTORE_LLM_DEADLINE": "40",
    "RAGSTORE_LLM_RPM": "600",
    "RAGSTORE_LLM_TPM": "90000",
    "RAGSTORE_LLM_LIMITER_PATH": "/tmp/llm-limits.sqlite",
    "RAGSTORE_LLM_LIMITER_WAIT": "2",
    "RAGSTORE_LLM_BREAKER_FAILURES": "7",
    "RAGSTORE_LLM_BREAKER_RESET": "15",
    "RAGSTORE_LLM_CONTEXT_TOKENS": "2000",
    "RAGSTORE_LLM_MAX_TOKENS": "256",
    "RAGSTORE_LLM_PRICES": '{"standin-chat": {"input": 0.15, "output": 0.6}}',
}


def test_settings_from_the_environment() -> None:
    assert LLMSettings.from_env({}) is None
    loaded = LLMSettings.from_env(FULL_ENV)
    assert loaded == LLMSettings(
        url="http://127.0.0.1:9/v1",
        model=MODEL,
        api_key=KEY,
        timeout_s=12.5,
        max_attempts=3,
        deadline_s=40.0,
        requests_per_minute=600.0,
        tokens_per_minute=90000.0,
        limiter_path=Path("/tmp/llm-limits.sqlite"),
        limiter_wait_s=2.0,
        breaker_failures=7,
        breaker_reset_s=15.0,
        context_tokens=2000,
        max_answer_tokens=256,
        prices={MODEL: Price(input=0.15, output=0.6)},
    )


def test_prices_from_a_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"a": {"input": 1, "output": 2}}', encoding="utf-8")
    loaded = LLMSettings.from_env({**FULL_ENV, "RAGSTORE_LLM_PRICES": str(prices)})
    assert loaded is not None and loaded.prices == {"a": Price(1, 2)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RAGSTORE_LLM_URL", "ftp://example.com/v1"),
        ("RAGSTORE_LLM_URL", "not a url"),
        ("RAGSTORE_LLM_MODEL", ""),
        ("RAGSTORE_LLM_TIMEOUT", "soon"),
        ("RAGSTORE_LLM_TIMEOUT", "-1"),
        ("RAGSTORE_LLM_MAX_ATTEMPTS", "0"),
        ("RAGSTORE_LLM_MAX_ATTEMPTS", "2.5"),
        ("RAGSTORE_LLM_DEADLINE", "0"),
        ("RAGSTORE_LLM_RPM", "-600"),
        ("RAGSTORE_LLM_TPM", "nan"),
        ("RAGSTORE_LLM_LIMITER_WAIT", "-1"),
        ("RAGSTORE_LLM_BREAKER_FAILURES", "0"),
        ("RAGSTORE_LLM_BREAKER_RESET", "inf"),
        ("RAGSTORE_LLM_MAX_TOKENS", "0"),
        ("RAGSTORE_LLM_PRICES", "{not json"),
        ("RAGSTORE_LLM_PRICES", '{"m": {"input": -1, "output": 2}}'),
        ("RAGSTORE_LLM_PRICES", '{"m": {"input": 1}}'),
        ("RAGSTORE_LLM_PRICES", "/no/such/prices.json"),
    ],
)
def test_a_bad_variable_is_named(variable: str, value: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        LLMSettings.from_env({**FULL_ENV, variable: value})
    assert caught.value.field == variable and variable in str(caught.value)
    assert KEY not in str(caught.value)
