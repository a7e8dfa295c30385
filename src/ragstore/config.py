"""Collection configuration: one validated value object, stored with the collection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragstore.errors import InvalidConfig, InvalidInput
from ragstore.filters import Compare, parse_filter

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
MAX_PAYLOAD_INDEXES = 64
"""Metadata paths a collection may declare payload indexes on."""


class ChunkingConfig(BaseModel):
    """How documents are cut into chunks, in model tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(default=256, ge=8, le=8192)
    chunk_overlap: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap_below_half(self) -> ChunkingConfig:
        if self.chunk_overlap >= self.chunk_size // 2:
            raise ValueError("chunk_overlap must be less than half of chunk_size")
        return self


IndexKind = Literal["flat", "hnsw", "ivf", "ivfpq", "sq8", "binary", "pgvector"]

DEFAULT_RERANK = 32
"""Candidates re-ranked per hit by the compressed kinds, unless configured."""
BINARY_RERANK = 100
"""The same for ``binary``, whose Hamming ranking is coarser: see ``benchmarks/README.md``
(the ``binary`` re-rank frontier) for the recall each depth reached."""


class IndexConfig(BaseModel):
    """Which vector index serves the collection, and how its segments are managed.

    New vectors land in an exact growing segment; past ``seal_threshold`` vectors it is
    sealed into a segment of ``kind``. ``hnsw`` uses ``m``, ``ef_construction`` and
    ``ef_search``; ``ivf`` and ``ivfpq`` use ``nlist`` (``None``: about 2·sqrt(n)) and
    ``nprobe``; ``ivfpq`` also ``pq_m`` sub-quantizers of ``nbits`` bits. ``binary`` keeps
    one bit per dimension and searches by Hamming distance. The compressed kinds
    (``ivfpq``, ``sq8``, ``binary``) re-rank ``rerank * k`` candidates with the exact
    vectors; ``rerank`` left unset means each kind's default (:meth:`rerank_for`).

    ``pgvector`` (PostgreSQL stores only) holds nothing in memory: both sides of a search
    run in the database, dense on a pgvector HNSW index (``m``, ``ef_construction``,
    ``ef_search``), keyword as PostgreSQL full-text search.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndexKind = "flat"
    metric: Literal["cosine"] = "cosine"
    m: int = Field(default=32, ge=4, le=128)
    ef_construction: int = Field(default=100, ge=8, le=4096)
    ef_search: int = Field(default=64, ge=1, le=4096)
    nlist: int | None = Field(default=None, ge=1, le=1 << 20)
    nprobe: int = Field(default=32, ge=1, le=1 << 20)
    pq_m: int = Field(default=48, ge=1, le=1024)
    nbits: int = Field(default=8, ge=4, le=12)
    rerank: int | None = Field(default=None, ge=1, le=100)
    seal_threshold: int = Field(default=20_000, ge=1)
    max_segments: int = Field(default=8, ge=1)
    max_segment_vectors: int = Field(default=4_000_000, ge=1)
    deleted_threshold: float = Field(default=0.2, gt=0, le=1)

    def rerank_for(self, kind: IndexKind) -> int:
        """Candidates per hit that a segment of ``kind`` re-ranks: ``rerank`` when set,
        else :data:`BINARY_RERANK` for ``binary`` and :data:`DEFAULT_RERANK` for the rest."""
        if self.rerank is not None:
            return self.rerank
        return BINARY_RERANK if kind == "binary" else DEFAULT_RERANK


class CollectionConfig(BaseModel):
    """Everything that fixes how a collection embeds, chunks and indexes.

    ``embedder`` is the embedder's name as :func:`ragstore.embed.get_embedder` resolves
    it (a registered name, or ``scheme:rest`` such as ``openai:text-embedding-3-small``;
    see docs/embedders.md), or ``None`` for a collection that takes caller-supplied
    vectors. ``embedder_version`` and ``dim`` are recorded when the collection is
    created, so a changed model is refused rather than silently mixed. Where a remote
    service is reached and with which key is never recorded.

    ``payload_indexes`` are the metadata paths (filter field names, such as
    ``author.name``) indexed explicitly: built at once and always kept, beside the ones
    built for the paths filters use (see :mod:`ragstore.index.payload`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedder: str | None = DEFAULT_EMBEDDER
    embedder_version: str | None = None
    dim: int = Field(gt=0, le=65536)
    chunking: ChunkingConfig = ChunkingConfig()
    index: IndexConfig = IndexConfig()
    payload_indexes: tuple[str, ...] = Field(default=(), max_length=MAX_PAYLOAD_INDEXES)

    @field_validator("payload_indexes")
    @classmethod
    def _valid_unique_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            check_payload_path(path)
        if len(set(paths)) < len(paths):
            repeated = next(p for p in paths if paths.count(p) > 1)
            raise ValueError(f"payload index path {repeated!r} is listed twice")
        return paths

    @model_validator(mode="after")
    def _pq_divides_dim(self) -> CollectionConfig:
        if self.index.kind == "ivfpq" and self.dim % self.index.pq_m:
            raise ValueError(f"index.pq_m ({self.index.pq_m}) must divide dim ({self.dim})")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CollectionConfig:
        """Validate a plain dict, raising :class:`InvalidConfig` naming the bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, "collection config") from None

    def to_json(self) -> str:
        """Canonical JSON form, as stored in the collection row. Without payload indexes
        it leaves their field out, so such a config reads as it did before they existed
        (and keys the query cache as it did)."""
        return self.model_dump_json(exclude=None if self.payload_indexes else {"payload_indexes"})


def check_payload_path(path: object, field: str = "payload_indexes") -> tuple[str, ...]:
    """``path``, a filter field name such as ``author.name``, as its segments;
    :class:`InvalidInput` naming ``field`` when a filter could not name it."""
    if not isinstance(path, str):
        raise InvalidInput(
            f"a payload index path is a string, not {type(path).__name__}", field=field
        )
    if path.startswith("$"):  # filters read such a key as an operator
        raise InvalidInput(f"payload index path {path!r} is an operator, not a field", field=field)
    try:
        parsed = parse_filter({path: {"$exists": True}})
    except InvalidInput as bad:
        raise InvalidInput(f"payload index path {path!r}: {bad}", field=field) from None
    assert isinstance(parsed, Compare)
    return parsed.path


def config_error(exc: ValidationError, what: str) -> InvalidConfig:
    """A pydantic validation error as :class:`InvalidConfig`, naming the first bad field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    where = f"{field}: " if field else ""
    return InvalidConfig(f"invalid {what}: {where}{first['msg']}", field=field)
