"""Shared fixtures: the real embedding model (loaded once), and stores on every backend:
a directory on disk, and a database on a real PostgreSQL server started for the session.

``RAGSTORE_TEST_BACKENDS=sqlite`` (comma-separated) runs the backend-parametrized tests
on fewer backends, for a quicker local run; CI runs them all."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pg_server import PgServer

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


BACKENDS = os.environ.get("RAGSTORE_TEST_BACKENDS", "sqlite,postgres").split(",")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL server with pgvector for the whole session (each test that uses it
    makes a database of its own)."""
    os.environ.setdefault("RAGSTORE_INDEX_DIR", str(tmp_path_factory.mktemp("pg-indexes")))
    with PgServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend a test runs on."""
    return str(request.param)


def fresh_location(backend: str, directory: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where a fresh, empty store is on ``backend``: a directory under ``directory``, or
    a new database on the session's PostgreSQL server."""
    if backend == "sqlite":
        return directory / "store"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where a fresh, empty store is: a directory, or a new PostgreSQL database."""
    return fresh_location(backend, tmp_path, request)


@pytest.fixture
def store(store_location: str | Path) -> Iterator[ragstore.Store]:
    """A fresh store on each backend."""
    with ragstore.open(store_location) as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[ragstore.Store]:
    """A fresh embedded store, for tests of SQLite itself."""
    with ragstore.open(tmp_path / "store") as opened:
        yield opened


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded random unit vectors."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
