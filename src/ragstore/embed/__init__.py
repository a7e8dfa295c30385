"""Embedders: the protocol, a registry by name, and the local default model."""

import os

from ragstore.config import DEFAULT_EMBEDDER
from ragstore.embed.base import Embedder, Vectors, get_embedder, register_embedder

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


register_embedder(DEFAULT_EMBEDDER, load_default)

__all__ = [
    "QUERY_PRECISION_ENV",
    "Embedder",
    "Vectors",
    "get_embedder",
    "load_default",
    "register_embedder",
]
