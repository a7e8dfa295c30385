"""Answers over a collection: retrieval, context packing, generation, citations.

``Collection.answer`` is the entry point; :mod:`ragstore.answer.service` runs the
stages, :mod:`~ragstore.answer.llm` talks to an OpenAI-compatible model,
:mod:`~ragstore.answer.context` packs the passages and maps citations, and
:mod:`~ragstore.answer.extractive` answers offline.
"""

from ragstore.answer.service import AnswerStream, Question, answer, default_llm, stream
from ragstore.answer.types import Answer, Citation, Usage

__all__ = [
    "Answer",
    "AnswerStream",
    "Citation",
    "Question",
    "Usage",
    "answer",
    "default_llm",
    "stream",
]
