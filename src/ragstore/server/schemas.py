"""Request bodies, validated at the edge (FastAPI answers 422 naming the field)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragstore.records import MAX_ID_LENGTH
from ragstore.search.hybrid import MAX_DEPTH, MAX_EF_SEARCH, MAX_K, MAX_NPROBE
from ragstore.server.tenancy import NAME_PATTERN

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class CollectionCreate(BaseModel):
    """``POST /v1/tenants/{tenant}/collections``: a text collection embedded by the
    server's model, or (``embedder: null`` and ``dim``) one that takes vectors."""

    model_config = _STRICT

    name: str = Field(pattern=NAME_PATTERN)
    embedder: Literal["sentence-transformers/all-MiniLM-L6-v2"] | None = (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    dim: int | None = Field(default=None, ge=1, le=65536)
    chunk_size: int = Field(default=256, ge=8, le=8192)
    chunk_overlap: int = Field(default=32, ge=0, le=4096)
    index: dict[str, Any] = Field(default_factory=dict)


class DocumentIn(BaseModel):
    """One document: text for a text collection, ``vector`` for a vector collection."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    text: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None
    source: str | None = None
    vector: list[float] | None = None

    def record(self) -> dict[str, Any]:
        """The record ``Collection.upsert`` takes."""
        return self.model_dump(exclude_none=True)


class UpsertRequest(BaseModel):
    """``POST .../documents``: a batch to insert or replace."""

    model_config = _STRICT

    documents: list[DocumentIn] = Field(min_length=1)


class DeleteRequest(BaseModel):
    """``POST .../delete``: exactly one of ``ids`` or ``filter``."""

    model_config = _STRICT

    ids: list[str] | None = None
    filter: dict[str, Any] | None = None


class CountRequest(BaseModel):
    """``POST .../count``: documents matching an optional filter."""

    model_config = _STRICT

    filter: dict[str, Any] | None = None


class SearchRequest(BaseModel):
    """``POST .../search``: the arguments of ``Collection.search``."""

    model_config = _STRICT

    query: str | None = None
    vector: list[float] | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Literal["hybrid", "dense", "keyword"] | None = None
    filter: dict[str, Any] | None = None
    fusion: Literal["rrf", "weighted"] = "weighted"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    rrf_k: int = Field(default=60, ge=1, le=10_000)
    candidates: int | None = Field(default=None, ge=1, le=MAX_DEPTH)
    group_by_doc: bool = False
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0)
    highlight: bool = False
    ef_search: int | None = Field(default=None, ge=1, le=MAX_EF_SEARCH)
    nprobe: int | None = Field(default=None, ge=1, le=MAX_NPROBE)
    explain: bool = False
    cache: bool = True
