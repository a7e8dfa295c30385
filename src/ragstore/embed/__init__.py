"""Embedders: the protocol, a registry by name, and the local default model."""

from ragstore.config import DEFAULT_EMBEDDER
from ragstore.embed.base import Embedder, Vectors, get_embedder, register_embedder


def _minilm() -> Embedder:
    from ragstore.embed.local import MiniLMEmbedder

    return MiniLMEmbedder()


register_embedder(DEFAULT_EMBEDDER, _minilm)

__all__ = ["Embedder", "Vectors", "get_embedder", "register_embedder"]
