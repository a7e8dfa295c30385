"""Answers: the offline extractive default, answers written through a real HTTP stand-in
of an OpenAI-compatible endpoint, the degraded fallback, streaming, the answer cache on
both cache backends (with a writer in another process), the CLI and the log line.

Everything is real: the embedding model, the SQLite store on disk, the chat endpoint
(``openai_standin``, a stdlib HTTP server on 127.0.0.1), a redis-server, and the
processes that write.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import RAGSTORE_BIN, SAMPLE_DOCS
from openai_standin import Answer as Reply
from openai_standin import (
    Fail,
    OpenAIStandIn,
    openai_server_fixture,  # noqa: F401
    prompt_words,
    words,
)
from test_cache import redis_server  # noqa: F401

import ragstore
from ragstore.answer import Answer
from ragstore.answer.llm import ChatModel, LLMSettings, Price
from ragstore.cache import CacheSettings, cache_for
from ragstore.cli import cli
from ragstore.embed import Embedder
from ragstore.errors import InvalidFilter, InvalidInput
from ragstore.server.logs import JsonFormatter

RECORDS = [
    {"id": "refunds", "title": "Refund policy",
     "text": "You can return any item within 30 days of delivery for a full refund. "
             "Refunds reach your card within five business days.",
     "metadata": {"topic": "returns"}},
    {"id": "electronics", "title": "Electronics returns",
     "text": "Electronics can be returned within 14 days if unopened. Opened electronics "
             "carry a restocking fee.",
     "metadata": {"topic": "returns"}},
    {"id": "shipping", "title": "Shipping",
     "text": "Standard shipping takes 3 to 5 business days; express arrives the next day.",
     "metadata": {"topic": "shipping"}},
    {"id": "2fa", "title": "Two-factor authentication",
     "text": "Turn on two-factor authentication in Settings, Security, then scan the QR code.",
     "metadata": {"topic": "security"}},
]  # fmt: skip
QUESTION = "how long do I have to return an item?"
MODEL = "standin-1"
PRICE = Price(input=2.0, output=10.0)
SECRET = "sk-test-0123456789-SECRET"


@pytest.fixture(autouse=True)
def no_configured_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``RAGSTORE_LLM_*`` from the environment: the default answer is extractive."""
    for name in list(os.environ):
        if name.startswith("RAGSTORE_LLM_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["local", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments of ``configure_cache`` for each backend."""
    if request.param == "redis":
        return {"backend": "redis", "url": request.getfixturevalue("redis_server").url}
    return {"backend": "local"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ragstore.Store]:
    with ragstore.open(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def docs(store: ragstore.Store, embedder: Embedder) -> ragstore.Collection:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert(RECORDS)
    return col


def chat_model(server: OpenAIStandIn, **settings: Any) -> ChatModel:
    """A model on the stand-in: quick retries, priced."""
    options: dict[str, Any] = {"max_attempts": 2, "backoff_s": 0.01, "breaker_failures": 10}
    options |= {"prices": {MODEL: PRICE}} | settings
    return ChatModel(LLMSettings(url=server.url, model=MODEL, **options))


@pytest.fixture
def chat(openai_server: OpenAIStandIn) -> Iterator[ChatModel]:
    model = chat_model(openai_server)
    yield model
    model.close()


def user_prompt(server: OpenAIStandIn, index: int = -1) -> str:
    """The user message of a request the stand-in received."""
    messages = server.requests[index].body["messages"]
    return str(next(m["content"] for m in messages if m["role"] == "user"))


def cited_docs(answer: Answer) -> list[str]:
    return [c.doc_id for c in answer.citations]


# ------------------------------------------------------------------ extractive default


def test_ask_answers_from_the_refund_policy_out_of_the_box(
    tmp_path: Path, embedder: Embedder
) -> None:
    store = tmp_path / "store"
    with ragstore.open(store) as opened:
        opened.create_collection("default", embedder=embedder).ingest([SAMPLE_DOCS])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    asked = subprocess.run(
        [RAGSTORE_BIN, "--store", str(store), "ask", "how long do I have to return headphones?"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "14 days" in asked.stdout and "policies/refunds.md" in asked.stdout
    assert "extractive answer" in asked.stderr

    def ask_json(*args: str) -> dict[str, Any]:
        done = CliRunner().invoke(cli, ["--store", str(store), "ask", "--json", *args])
        assert done.exit_code == 0, done.output
        return dict(json.loads(done.stdout))

    body = ask_json("how long do I have to return headphones?")
    assert body["mode"] == "extractive" and not body["degraded"]
    assert body["cached"] == "exact"  # the same question, answered a moment ago
    refund = next(c for c in body["citations"] if c["doc_id"] == "policies/refunds.md")
    text = (SAMPLE_DOCS / "policies" / "refunds.md").read_text(encoding="utf-8")
    assert text[refund["start"] : refund["end"]] in body["text"]
    assert set(body["timings_ms"]) == {"cache"}
    fresh = ask_json("refund window?", "--no-cache")
    assert fresh["cached"] is None
    assert set(fresh["timings_ms"]) == {"embed", "retrieve", "generate"}


def test_ask_usage_errors_exit_2(docs: ragstore.Collection, store: ragstore.Store) -> None:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--store", str(store.location), "--collection", "docs",
                                        "ask", *args])  # fmt: skip

    assert invoke(QUESTION, "-k", "2").exit_code == 0
    for bad in (["   "], [QUESTION, "-k", "0"], [QUESTION, "--filter", "{"],
                [QUESTION, "--mode", "fuzzy"], []):  # fmt: skip
        result = invoke(*bad)
        assert result.exit_code == 2, (bad, result.output)
    assert "no collection" in invoke(QUESTION, "--collection", "nope").output.lower()


def test_bad_input_names_the_field(docs: ragstore.Collection, store: ragstore.Store) -> None:
    for question in ("", "  ", None, 3):
        with pytest.raises(InvalidInput) as bad:
            docs.answer(question)  # type: ignore[arg-type]
        assert bad.value.field == "question"
    with pytest.raises(InvalidInput) as bad:
        docs.answer("\ud800?")
    assert bad.value.field == "question"
    with pytest.raises(InvalidInput) as bad:
        docs.answer(QUESTION, k=0)
    assert bad.value.field == "k"
    with pytest.raises(InvalidFilter):
        docs.answer(QUESTION, where={"topic": {"$nope": 1}})
    vectors = store.create_collection("vecs", embedder=None, dim=4)
    with pytest.raises(InvalidInput) as bad:
        vectors.answer(QUESTION)
    assert bad.value.field == "collection"


def test_extractive_answer_respects_the_filter(docs: ragstore.Collection) -> None:
    answer = docs.answer(QUESTION, where={"topic": "shipping"}, cache=False)
    assert {h.doc_id for h in answer.hits} == {"shipping"}
    assert cited_docs(answer) == ["shipping"]
    nothing = docs.answer(QUESTION, where={"topic": "none"}, cache=False)
    assert (nothing.text, nothing.citations, nothing.hits) == ("", [], [])


def test_an_alias_answers_from_the_collection_it_names(
    docs: ragstore.Collection, store: ragstore.Store
) -> None:
    store.set_alias("current", "docs")
    through = store.get_collection("current").answer(QUESTION, cache=False)
    assert through.text == docs.answer(QUESTION, cache=False).text
    assert "refunds" in cited_docs(through)


# ------------------------------------------------------------------ generated answers


def test_generated_answer_maps_citations_and_counts_usage_and_cost(
    docs: ragstore.Collection, chat: ChatModel, openai_server: OpenAIStandIn
) -> None:
    openai_server.respond_with("Items go back within 30 days [1], electronics 14 [2][9].")
    answer = docs.answer(QUESTION, k=3, llm=chat, cache=False)
    assert answer.mode == "generated" and answer.model == MODEL and not answer.degraded
    assert answer.text == "Items go back within 30 days [1], electronics 14 [2]."
    assert answer.dropped_citations == 1
    prompt = user_prompt(openai_server)
    for citation in answer.citations:  # each marker names the passage shown under it
        block = prompt.split(f"[{citation.marker}] ", 1)[1].split("\n\n")[0]
        hit = next(h for h in answer.hits if h.chunk_id == citation.chunk_id)
        assert hit.text in block and (citation.title or citation.doc_id) in block
    assert cited_docs(answer) == [answer.hits[0].doc_id, answer.hits[1].doc_id]
    sent = openai_server.requests[-1]
    expected_prompt = prompt_words(sent.body)
    assert answer.usage.prompt_tokens == expected_prompt
    assert answer.usage.completion_tokens == words(sent.answered["text"])  # type: ignore[index]
    expected_cost = expected_prompt * PRICE.input + answer.usage.completion_tokens * PRICE.output
    assert answer.cost_usd == pytest.approx(expected_cost / 1e6)
    assert set(answer.timings_ms) == {"embed", "retrieve", "generate"}


def test_model_failures_give_the_degraded_extractive_answer(
    docs: ragstore.Collection, openai_server: OpenAIStandIn, store: ragstore.Store
) -> None:
    chat = chat_model(openai_server, breaker_failures=1, breaker_reset_s=60.0)
    openai_server.script(Fail(500), Fail(500))
    failed = docs.answer(QUESTION, llm=chat)
    assert failed.degraded and failed.reason == "server_error"
    assert failed.mode == "extractive" and "30 days" in failed.text
    assert "refunds" in cited_docs(failed) and len(openai_server.requests) == 2
    shed = docs.answer(QUESTION, llm=chat)  # the breaker is open: not even tried
    assert shed.degraded and shed.reason == "breaker_open"
    assert len(openai_server.requests) == 2 and shed.cached is None
    assert cache_for(docs.backend).stats().entries == 0  # degraded answers are not kept
    chat.close()


# ----------------------------------------------------------------------- streaming


def test_streamed_answer(
    docs: ragstore.Collection, chat: ChatModel, openai_server: OpenAIStandIn
) -> None:
    openai_server.respond_with("Within 30 days [1, 2].")
    written = docs.answer(QUESTION, k=3, llm=chat, stream=True, cache=False)
    assert [h.doc_id for h in written.hits][:1] == ["refunds"] and written.answer is None
    deltas = list(written)
    assert len(deltas) > 1 and "".join(deltas) == "Within 30 days [1, 2]."
    assert written.answer is not None and written.answer.text == "Within 30 days [1][2]."
    assert written.answer.mode == "generated" and written.answer.usage.completion_tokens > 0
    assert openai_server.requests[-1].stream


def test_stream_cut_midway_ends_with_the_degraded_answer(
    docs: ragstore.Collection, chat: ChatModel, openai_server: OpenAIStandIn
) -> None:
    openai_server.respond_with("one two three four five six seven")
    openai_server.script(Reply(drop_after_chunks=2))
    written = docs.answer(QUESTION, llm=chat, stream=True, cache=False)
    deltas = list(written)
    assert "".join(deltas) == "one two"
    assert written.answer is not None and written.answer.degraded
    assert written.answer.reason is not None and "30 days" in written.answer.text
    openai_server.script(Fail(500), Fail(500))  # failing before any text: one piece
    before = docs.answer(QUESTION, llm=chat, stream=True, cache=False)
    deltas = list(before)
    assert before.answer is not None and before.answer.reason == "server_error"
    assert deltas == [before.answer.text]


# --------------------------------------------------------------------- answer cache


def test_exact_and_semantic_answer_cache_hits(
    docs: ragstore.Collection,
    store: ragstore.Store,
    cache_backend: dict[str, Any],
    chat: ChatModel,
    openai_server: OpenAIStandIn,
) -> None:
    store.configure_cache(**cache_backend, settings=CacheSettings(threshold=0.97))
    first = docs.answer(QUESTION, llm=chat)
    assert first.cached is None and len(openai_server.requests) == 1
    again = docs.answer("  How long do I have to RETURN an item?", llm=chat)
    assert again.cached == "exact" and len(openai_server.requests) == 1
    assert (again.text, again.citations) == (first.text, first.citations)
    assert again.usage.total_tokens == 0 and again.cost_usd == 0.0
    assert {h.cached for h in again.hits} == {"exact"}
    close = docs.answer("how long do I have to return an item", llm=chat)
    assert close.cached == "semantic" and close.text == first.text
    assert len(openai_server.requests) == 1
    other = docs.answer("how do I turn on two-factor authentication?", llm=chat)
    assert other.cached is None and len(openai_server.requests) == 2
    streamed = docs.answer(QUESTION, llm=chat, stream=True)
    assert streamed.cached == "exact" and list(streamed) == [first.text]
    extractive = docs.answer(QUESTION)  # another model: another key
    assert extractive.cached is None and extractive.mode == "extractive"
    assert docs.answer(QUESTION, k=2, llm=chat).cached is None  # another request
    assert docs.answer(QUESTION, llm=chat, tenant="globex").cached is None
    assert docs.search(QUESTION, cache=True)[0].cached is None  # searches keep their own


UPDATE = """
import sys, ragstore
with ragstore.open(sys.argv[1]) as store:
    store.get_collection("docs").upsert([{"id": "refunds", "title": "Refund policy",
        "text": "You can return any item within 45 days of delivery for a refund."}])
"""
DELETE = """
import sys, ragstore
with ragstore.open(sys.argv[1]) as store:
    assert store.get_collection("docs").delete(["refunds"]) == 1
"""


def in_another_process(store: ragstore.Store, script: str) -> None:
    """Run ``script`` (which opens the store itself) as a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(store.location)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_cited_document_deleted_by_another_process_retires_the_answer(
    docs: ragstore.Collection,
    store: ragstore.Store,
    cache_backend: dict[str, Any],
    chat: ChatModel,
    openai_server: OpenAIStandIn,
) -> None:
    store.configure_cache(**cache_backend)
    generated = docs.answer(QUESTION, llm=chat)
    extractive = docs.answer(QUESTION)
    assert "refunds" in cited_docs(generated) and "refunds" in cited_docs(extractive)
    assert docs.answer(QUESTION, llm=chat).cached == docs.answer(QUESTION).cached == "exact"
    in_another_process(store, DELETE)
    fresh = docs.answer(QUESTION)
    assert fresh.cached is None and "refunds" not in {h.doc_id for h in fresh.hits}
    regenerated = docs.answer(QUESTION, llm=chat)
    assert regenerated.cached is None and len(openai_server.requests) == 2
    assert "refunds" not in {h.doc_id for h in regenerated.hits}
    assert cache_for(docs.backend).stats().invalidations >= 2


def test_a_cited_document_updated_by_another_process_is_answered_afresh(
    docs: ragstore.Collection, store: ragstore.Store, chat: ChatModel, openai_server: OpenAIStandIn
) -> None:
    openai_server.respond_with(lambda body: "30 days [1]." if "30 days" in str(body) else "45 [1].")
    assert docs.answer(QUESTION).cached is None
    assert docs.answer(QUESTION, llm=chat).text == "30 days [1]."
    assert docs.answer(QUESTION, llm=chat).cached == docs.answer(QUESTION).cached == "exact"
    in_another_process(store, UPDATE)
    fresh = docs.answer(QUESTION)
    assert fresh.cached is None and "45 days" in fresh.text and "30 days" not in fresh.text
    regenerated = docs.answer(QUESTION, llm=chat)
    assert regenerated.cached is None and regenerated.text == "45 [1]."


def test_an_answer_built_while_a_cited_document_changed_is_not_kept(
    docs: ragstore.Collection, store: ragstore.Store, openai_server: OpenAIStandIn
) -> None:
    """The writer lands while the model writes: the answer is given, not cached."""

    def delete_meanwhile(body: dict[str, Any]) -> str:
        in_another_process(store, DELETE)
        return "30 days [1]."

    openai_server.respond_with(delete_meanwhile)
    chat = chat_model(openai_server, timeout_s=120.0, deadline_s=240.0)
    assert docs.answer(QUESTION, llm=chat).text == "30 days [1]."
    assert cache_for(docs.backend).stats().entries == 0
    chat.close()


# -------------------------------------------------------------------------- logging


def test_one_log_line_per_answer_with_timings_and_never_the_key(
    docs: ragstore.Collection, openai_server: OpenAIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="ragstore")  # a CLI run may have raised it
    openai_server.key = SECRET
    good = chat_model(openai_server, api_key=SECRET)
    wrong = chat_model(openai_server, api_key=SECRET.replace("SECRET", "WRONG-KEY"))
    assert docs.answer(QUESTION, llm=good, cache=False).mode == "generated"
    openai_server.script(Fail(500), Fail(500))
    failed = docs.answer(QUESTION, llm=good, cache=False)
    assert failed.degraded and failed.reason == "server_error"
    refused = docs.answer(QUESTION, llm=wrong, cache=False)  # the endpoint refused the key
    assert refused.degraded and refused.reason == "refused"
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert not [line for line in lines if "SECRET" in line or "WRONG-KEY" in line]
    answered = [json.loads(line) for line in lines if json.loads(line)["msg"] == "answer"]
    assert [line["answer_mode"] for line in answered] == ["generated", "extractive", "extractive"]
    assert any("RAGSTORE_LLM_API_KEY" in line for line in lines)  # the refusal says what to set
    assert set(answered[0]["timings_ms"]) == {"embed", "retrieve", "generate"}
    assert answered[0]["prompt_tokens"] > 0 and answered[0]["collection"] == "docs"
    assert answered[1]["degraded"] and answered[1]["reason"] == "server_error"
    good.close()
    wrong.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
