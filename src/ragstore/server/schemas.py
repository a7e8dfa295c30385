"""Request bodies, validated at the edge (FastAPI answers 422 naming the field).

Integers are strict (``"k": true`` is not ``k=1``, as in the Python API); floats take
integers but not booleans or strings. Every string must be valid Unicode: a lone
surrogate (``"\\ud800"`` in the JSON) is refused here, naming the field, before it can
reach the store, a log line or an error message. JSON-valued fields (``filter``,
``metadata``, ``index``) are checked by the routes, against the server's depth limits
(``ragstore.server.runtime.check_json_field``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, ValidationInfo
from pydantic_core import PydanticCustomError

from ragstore.answer.service import DEFAULT_K as DEFAULT_ANSWER_K
from ragstore.errors import InvalidInput
from ragstore.inputs import check_text
from ragstore.records import MAX_ID_LENGTH
from ragstore.search.hybrid import MAX_DEPTH, MAX_EF_SEARCH, MAX_K, MAX_NPROBE
from ragstore.server.tenancy import NAME_PATTERN

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _unicode(value: str, info: ValidationInfo) -> str:
    """``value`` when it is valid Unicode; a validation error of the field otherwise."""
    try:
        return check_text(value, info.field_name or "value")
    except InvalidInput as exc:
        raise PydanticCustomError("string_unicode", "{reason}", {"reason": str(exc)}) from None


Text = Annotated[str, AfterValidator(_unicode)]
"""A string that must be valid Unicode (no lone surrogates)."""


class CollectionCreate(BaseModel):
    """``POST /v1/tenants/{tenant}/collections``: a text collection embedded by the
    server's model, or (``embedder: null`` and ``dim``) one that takes vectors."""

    model_config = _STRICT

    name: str = Field(pattern=NAME_PATTERN)
    embedder: Literal["sentence-transformers/all-MiniLM-L6-v2"] | None = (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    dim: int | None = Field(default=None, ge=1, le=65536, strict=True)
    chunk_size: int = Field(default=256, ge=8, le=8192, strict=True)
    chunk_overlap: int = Field(default=32, ge=0, le=4096, strict=True)
    index: dict[str, Any] = Field(default_factory=dict)


class AliasSet(BaseModel):
    """``PUT /v1/tenants/{tenant}/aliases/{alias}``: the tenant's collection it names."""

    model_config = _STRICT

    collection: str = Field(pattern=NAME_PATTERN)


class ReindexRequest(BaseModel):
    """``POST .../collections/{collection}/reindex``: build the tenant's new collection
    ``target`` from this one with other chunking or index settings; with ``switch``,
    then point that alias at it (``drop_old`` then deletes the source)."""

    model_config = _STRICT

    target: str = Field(pattern=NAME_PATTERN)
    chunk_size: int | None = Field(default=None, ge=1, le=100_000, strict=True)
    chunk_overlap: int | None = Field(default=None, ge=0, le=100_000, strict=True)
    index: dict[str, Any] | None = None
    switch: str | None = Field(default=None, pattern=NAME_PATTERN)
    drop_old: bool = Field(default=False, strict=True)


class DocumentIn(BaseModel):
    """One document: text for a text collection, ``vector`` for a vector collection."""

    model_config = _STRICT

    id: Text = Field(min_length=1, max_length=MAX_ID_LENGTH)
    text: Text | None = None
    title: Text | None = None
    metadata: dict[str, Any] | None = None
    source: Text | None = None
    vector: list[StrictFloat] | None = None

    def record(self) -> dict[str, Any]:
        """The record ``Collection.upsert`` takes."""
        return self.model_dump(exclude_none=True)


class UpsertRequest(BaseModel):
    """``POST .../documents``: a batch to insert or replace."""

    model_config = _STRICT

    documents: list[DocumentIn] = Field(min_length=1)


class DeleteRequest(BaseModel):
    """``POST .../delete``: exactly one of ``ids``, ``filter`` or ``all: true``.

    A match-all delete must say so: ``{"filter": {}}`` is refused, ``{"all": true}``
    deletes every document of the collection.
    """

    model_config = _STRICT

    ids: list[Text] | None = None
    filter: dict[str, Any] | None = None
    all: bool = Field(default=False, strict=True)


class SnapshotRequest(BaseModel):
    """``POST /v1/snapshots``: the whole store, or some collections (store names,
    ``tenant.name``), keeping the newest ``keep`` snapshots."""

    model_config = _STRICT

    collections: list[Text] | None = Field(default=None, min_length=1, max_length=1000)
    keep: int | None = Field(default=None, ge=1, le=10_000, strict=True)


class DoctorRequest(BaseModel):
    """``POST /v1/doctor``: every collection, or some (store names, ``tenant.name``);
    ``repair`` first fixes what is safe to fix."""

    model_config = _STRICT

    collections: list[Text] | None = Field(default=None, min_length=1, max_length=1000)
    repair: bool = Field(default=False, strict=True)


Included = Literal["text", "metadata", "vectors"]
_DEFAULT_INCLUDE: tuple[Included, ...] = ("text", "metadata")


class GetRequest(BaseModel):
    """``POST .../get``: the arguments of ``Collection.get``: documents by ``ids``, or a
    listing page of those matching ``filter``; ``include`` chooses the fields."""

    model_config = _STRICT

    ids: list[Text] | None = Field(default=None, max_length=10_000)
    filter: dict[str, Any] | None = None
    limit: int = Field(default=100, ge=1, le=1000, strict=True)
    cursor: str | None = Field(default=None, max_length=8192)
    include: list[Included] = Field(default_factory=lambda: list(_DEFAULT_INCLUDE))


class CountRequest(BaseModel):
    """``POST .../count``: documents matching an optional filter."""

    model_config = _STRICT

    filter: dict[str, Any] | None = None


class SearchRequest(BaseModel):
    """``POST .../search``: the arguments of ``Collection.search``."""

    model_config = _STRICT

    query: Text | None = None
    vector: list[StrictFloat] | None = None
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)
    mode: Literal["hybrid", "dense", "keyword"] | None = None
    filter: dict[str, Any] | None = None
    fusion: Literal["rrf", "weighted"] = "weighted"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, strict=True)
    rrf_k: int = Field(default=60, ge=1, le=10_000, strict=True)
    candidates: int | None = Field(default=None, ge=1, le=MAX_DEPTH, strict=True)
    group_by_doc: bool = False
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    highlight: bool = False
    ef_search: int | None = Field(default=None, ge=1, le=MAX_EF_SEARCH, strict=True)
    nprobe: int | None = Field(default=None, ge=1, le=MAX_NPROBE, strict=True)
    min_score: float | None = Field(default=None, strict=True)
    explain: bool = False
    cache: bool = True


class AnswerRequest(BaseModel):
    """``POST .../answer``: the arguments of ``Collection.answer``; with ``stream``, the
    answer comes as Server-Sent Events (see docs/answers.md)."""

    model_config = _STRICT

    question: Text = Field(min_length=1)
    k: int = Field(default=DEFAULT_ANSWER_K, ge=1, le=MAX_K, strict=True)
    mode: Literal["hybrid", "dense", "keyword"] | None = None
    filter: dict[str, Any] | None = None
    min_score: float | None = Field(default=None, strict=True)
    cache: bool = Field(default=True, strict=True)
    extractive: bool = Field(default=False, strict=True)
    stream: bool = Field(default=False, strict=True)


MAX_BATCH_SEARCHES = 100


class BatchSearchRequest(BaseModel):
    """``POST .../search/batch``: several searches, each as ``POST .../search`` takes it."""

    model_config = _STRICT

    searches: list[SearchRequest] = Field(min_length=1, max_length=MAX_BATCH_SEARCHES)
