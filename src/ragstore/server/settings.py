"""The server's settings: where the store is, where to listen, and every limit."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ragstore.search.hybrid import MAX_K


class Limits(BaseModel):
    """What one request may ask for, and how much work may wait.

    Exceeding a size limit (body, batch, text) answers 413; a value out of range
    (``k``, filter depth) answers 422; a full work queue answers 429 with
    ``Retry-After``. Every error body names the field. Answers run on a pool of their
    own (``answer_workers``): they mostly wait for the language model, and must not
    hold the search workers while they do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_batch: int = Field(default=1000, ge=1)
    max_text_chars: int = Field(default=100_000, ge=1)
    max_query_chars: int = Field(default=2_000, ge=1)
    max_k: int = Field(default=MAX_K, ge=1, le=MAX_K)
    max_filter_depth: int = Field(default=8, ge=1, le=32)
    max_metadata_depth: int = Field(default=32, ge=1, le=100)
    sync_max_documents: int = Field(default=32, ge=1)
    search_workers: int = Field(default=2, ge=1)
    search_queue: int = Field(default=32, ge=0)
    write_workers: int = Field(default=1, ge=1)
    write_queue: int = Field(default=4, ge=0)
    answer_workers: int = Field(default=8, ge=1)
    answer_queue: int = Field(default=32, ge=0)
    max_pending_jobs: int = Field(default=8, ge=1)
    jobs_kept: int = Field(default=1000, ge=1)
    retry_after_s: int = Field(default=1, ge=1)


class ServerSettings(BaseModel):
    """How ``ragstore serve`` runs: the store, the address, the keys, the limits, and
    how many worker processes serve (each has its own GIL and its own copy of the
    vector indexes in memory)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store_path: str | Path = Path("./ragstore-data")
    """A directory, or a ``postgresql://`` URL."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    keys_file: Path | None = None
    keys_json: str | None = None
    limits: Limits = Limits()
    graceful_timeout_s: float = Field(default=30.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)
    snapshot_dir: Path | None = None
    """Where ``POST /v1/snapshots`` writes snapshots (``None``: the route is off)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
