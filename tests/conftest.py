"""Shared fixtures: the real embedding model (loaded once) and stores on disk."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ragstore
from ragstore.config import DEFAULT_EMBEDDER
from ragstore.embed import Embedder, get_embedder

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = REPO / "examples" / "sample-docs"
RAGSTORE_BIN = str(Path(sys.executable).with_name("ragstore"))


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once per test session."""
    return get_embedder(DEFAULT_EMBEDDER)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ragstore.Store]:
    """A fresh store in a temporary directory."""
    with ragstore.open(tmp_path / "store") as opened:
        yield opened


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded random unit vectors."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
