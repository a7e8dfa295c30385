"""Collection configuration: one validated value object, stored with the collection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragstore.errors import InvalidConfig

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


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


class IndexConfig(BaseModel):
    """Which vector index serves the collection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["flat"] = "flat"
    metric: Literal["cosine"] = "cosine"


class CollectionConfig(BaseModel):
    """Everything that fixes how a collection embeds, chunks and indexes.

    ``embedder`` is the registered embedder name, or ``None`` for a collection that
    takes caller-supplied vectors. ``embedder_version`` is recorded when the collection
    is created, so a changed model is refused rather than silently mixed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedder: str | None = DEFAULT_EMBEDDER
    embedder_version: str | None = None
    dim: int = Field(gt=0, le=65536)
    chunking: ChunkingConfig = ChunkingConfig()
    index: IndexConfig = IndexConfig()

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CollectionConfig:
        """Validate a plain dict, raising :class:`InvalidConfig` naming the bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    def to_json(self) -> str:
        """Canonical JSON form, as stored in the collection row."""
        return self.model_dump_json()


def _config_error(exc: ValidationError) -> InvalidConfig:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    where = f"{field}: " if field else ""
    return InvalidConfig(f"invalid collection config: {where}{first['msg']}", field=field)
