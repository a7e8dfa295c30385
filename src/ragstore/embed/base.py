"""The embedder seam: anything that turns text into unit-length vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    ``name`` and ``version`` are recorded with each collection; a collection refuses an
    embedder whose name, version or dimension differs from the one it was built with.
    """

    @property
    def name(self) -> str:
        """Registered name, e.g. ``sentence-transformers/all-MiniLM-L6-v2``."""
        ...

    @property
    def version(self) -> str:
        """Version of the weights, so a changed model is never mixed with the old one."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    @property
    def max_tokens(self) -> int:
        """Most content tokens one input may hold before the model truncates it."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Char span of each model token of ``text`` (no special tokens)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages; returns an array of shape ``(len(texts), dim)``."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """Embed one query; returns an array of shape ``(dim,)``."""
        ...


EmbedderFactory = Callable[[], Embedder]
"""Builds the embedder of one exact name."""
SchemeFactory = Callable[[str], Embedder]
"""Builds the embedder of a name ``scheme:rest`` from ``rest``."""

FOLDER_SCHEME = "sentence-transformers"
"""The scheme a bare folder path is read with: ``/models/e5`` is
``sentence-transformers:/models/e5``."""

_REGISTRY: dict[str, EmbedderFactory] = {}
_SCHEMES: dict[str, SchemeFactory] = {}
_LOADED: dict[str, Embedder] = {}


def register_embedder(name: str, factory: EmbedderFactory) -> None:
    """Make ``name`` resolvable by :func:`get_embedder` (collections store only the name).

    An exact name wins over a scheme: registering ``openai:my-model`` overrides the
    ``openai`` scheme for that one name.
    """
    _REGISTRY[name] = factory
    _LOADED.pop(name, None)


def register_embedder_scheme(scheme: str, factory: SchemeFactory) -> None:
    """Make every name ``scheme:rest`` resolvable: :func:`get_embedder` calls
    ``factory(rest)``. The embedder's ``name`` must resolve back to an equal embedder,
    since a collection records it and reopens with it."""
    if not scheme or ":" in scheme:
        from ragstore.errors import InvalidConfig

        raise InvalidConfig(f"a scheme is a non-empty name without ':', not {scheme!r}")
    _SCHEMES[scheme] = factory
    for name in [n for n in _LOADED if n.partition(":")[0] == scheme]:
        del _LOADED[name]


def get_embedder(name: str) -> Embedder:
    """Return the process-wide instance of the embedder named ``name``.

    ``name`` is looked up as an exact registered name first, then by its scheme (the
    part before the first ``:``); a bare path to a folder is read as
    ``sentence-transformers:<folder>``.

    Raises:
        InvalidConfig: a name that neither is registered nor has a registered scheme.
    """
    name = _folder_name(name)
    if name not in _LOADED:
        _LOADED[name] = _factory_for(name)()
    return _LOADED[name]


def is_known(name: str) -> bool:
    """Whether :func:`get_embedder` can resolve ``name`` to a factory: a registered
    name, a name of a registered scheme, or a folder (loading it may still fail)."""
    name = _folder_name(name)
    scheme, colon, _ = name.partition(":")
    return name in _REGISTRY or bool(colon and scheme in _SCHEMES)


def _factory_for(name: str) -> EmbedderFactory:
    exact = _REGISTRY.get(name)
    if exact is not None:
        return exact
    scheme, colon, rest = name.partition(":")
    build = _SCHEMES.get(scheme) if colon else None
    if build is None:
        from ragstore.errors import InvalidConfig

        known = ", ".join(sorted(_REGISTRY)) or "none"
        schemes = ", ".join(f"{s}:" for s in sorted(_SCHEMES)) or "none"
        raise InvalidConfig(
            f"unknown embedder {name!r} (names: {known}; schemes: {schemes}; "
            "or a folder holding a sentence-transformers model)",
            field="embedder",
        )
    return lambda: build(rest)


def _folder_name(name: str) -> str:
    """``sentence-transformers:<absolute folder>`` for a folder whose name is neither
    registered nor of a registered scheme; any other name as it is."""
    scheme, colon, _ = name.partition(":")
    registered = name in _REGISTRY or bool(colon and scheme in _SCHEMES)
    if registered or not Path(name).expanduser().is_dir():
        return name
    return f"{FOLDER_SCHEME}:{Path(name).expanduser().resolve()}"
