"""Embedders: the protocol, a registry by name and scheme, and the built-in kinds.

Built in: the default model (``sentence-transformers/all-MiniLM-L6-v2``) and the schemes
``sentence-transformers:`` (a local model by folder or cached id), ``openai:`` (an
OpenAI-compatible endpoint) and ``ollama:`` (an Ollama server). Each scheme's module is
imported only when a name of it is first resolved.
"""

import importlib
import os
from typing import cast

from ragstore.config import DEFAULT_EMBEDDER
from ragstore.embed.base import (
    Embedder,
    SchemeFactory,
    Vectors,
    get_embedder,
    is_known,
    register_embedder,
    register_embedder_scheme,
)

QUERY_PRECISION_ENV = "RAGSTORE_QUERY_PRECISION"
"""``fp32`` or ``int8`` (the default): how the default model embeds queries."""


def load_default() -> Embedder:
    """A new instance of the default model, embedding queries at the precision
    ``$RAGSTORE_QUERY_PRECISION`` names (``int8`` when unset)."""
    from ragstore.embed.local import MiniLMEmbedder
    from ragstore.embed.onnx_query import PRECISIONS
    from ragstore.errors import InvalidConfig

    precision = os.environ.get(QUERY_PRECISION_ENV) or "int8"
    for known in PRECISIONS:
        if precision == known:
            return MiniLMEmbedder(query_precision=known)
    raise InvalidConfig(
        f"{QUERY_PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, not {precision!r}",
        field=QUERY_PRECISION_ENV,
    )


def _from_module(module: str) -> SchemeFactory:
    """A scheme factory calling ``from_name`` of ``module``, imported on first use."""

    def build(rest: str) -> Embedder:
        return cast(Embedder, importlib.import_module(module).from_name(rest))

    return build


register_embedder(DEFAULT_EMBEDDER, load_default)
for _scheme, _module in {
    "sentence-transformers": "ragstore.embed.sentence_transformers",
    "openai": "ragstore.embed.openai",
    "ollama": "ragstore.embed.ollama",
}.items():
    register_embedder_scheme(_scheme, _from_module(_module))

__all__ = [
    "QUERY_PRECISION_ENV",
    "Embedder",
    "Vectors",
    "get_embedder",
    "is_known",
    "load_default",
    "register_embedder",
    "register_embedder_scheme",
]
