"""What an answer is made of: its citations, token usage, cost and stage timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragstore.types import Hit

AnswerCached = Literal["exact", "semantic"] | None


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage an answer rests on: ``marker`` is the ``[n]`` the answer text uses for
    it, ``start``/``end`` locate the cited text in the document's text, ``title`` is the
    document's title (its metadata ``title`` or its source's file name) when known."""

    marker: int
    doc_id: str
    chunk_id: str
    start: int
    end: int
    source: str | None = None
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one generation used; ``estimated`` when the endpoint reported none and they
    were counted locally."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Answer:
    """An answer to a question over a collection.

    ``mode`` is ``"generated"`` (a language model wrote it from the packed passages) or
    ``"extractive"`` (the sentences of the best passages that answer it). ``degraded``
    is true when generation was wanted but failed or was shed; ``reason`` says why.
    ``dropped_citations`` counts the markers the model wrote that named no packed
    passage (they are removed from ``text``). ``timings_ms`` has one entry per stage
    (``embed``, ``cache``, ``retrieve``, ``generate``).
    """

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]
    mode: Literal["generated", "extractive"]
    model: str | None = None
    cached: AnswerCached = None
    degraded: bool = False
    reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    dropped_citations: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the answer."""
        data = asdict(self)
        data["usage"]["total_tokens"] = self.usage.total_tokens
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """The answer whose :meth:`to_dict` form ``data`` is (fields it lacks take their
        defaults)."""
        usage = {k: v for k, v in data.get("usage", {}).items() if k != "total_tokens"}
        return cls(
            **{
                **data,
                "citations": [Citation(**c) for c in data["citations"]],
                "hits": [Hit(**h) for h in data["hits"]],
                "usage": Usage(**usage),
            }
        )
