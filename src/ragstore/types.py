"""Value types shared across ragstore: documents, chunks, hits and reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Metadata = dict[str, Any]
Ids = npt.NDArray[np.int64]
"""Chunk ids."""
Scores = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]
"""Vectors, one per row."""


@dataclass(frozen=True, slots=True)
class Document:
    """A source document as loaded or upserted, before chunking.

    ``source`` is where it came from (a file path for files, ``None`` for records).
    """

    id: str
    text: str
    title: str = ""
    metadata: Metadata = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk of a document's text: ``text == document.text[start:end]``."""

    start: int
    end: int
    text: str


INCLUDABLE = ("text", "metadata", "vectors")
"""What a ``get`` may return of each document beyond its id and bookkeeping fields."""
DEFAULT_INCLUDE = ("text", "metadata")


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as the store holds it.

    ``text`` and ``metadata`` are ``None`` when a ``get`` did not include them;
    ``vectors`` holds the document's chunk vectors (one row per chunk, in text order)
    when it did include them, and is ``None`` otherwise.
    """

    id: str
    text: str | None
    title: str
    metadata: Metadata | None
    source: str | None
    content_hash: str
    updated_at: float
    chunk_count: int
    vectors: Matrix | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the document (vectors as lists of numbers)."""
        out = asdict(replace(self, vectors=None))
        out["vectors"] = None if self.vectors is None else self.vectors.tolist()
        return out


class DocumentPage(list[StoredDocument]):
    """Documents returned by one ``get``: a list, with ``next_cursor`` to pass back as
    ``cursor`` for the next page of a listing (``None`` at its end, and for documents
    asked for by id)."""

    def __init__(self, documents: Iterable[StoredDocument] = (), next_cursor: str | None = None):
        super().__init__(documents)
        self.next_cursor = next_cursor


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a chunk, the document it belongs to, and its score.

    ``score`` is the score of the search mode that ran (higher is better): cosine
    similarity for ``dense``, BM25 for ``keyword``, the fused score for ``hybrid``.
    ``dense_*`` and ``keyword_*`` explain it: each side's score and 1-based rank, or
    ``None`` where that side did not retrieve the chunk. ``start``/``end`` locate
    ``text`` in the document's text. ``highlight`` is ``text`` with the words that
    match the query marked ``**like this**``, when the search asked for it.
    ``cached`` is ``"exact"`` or ``"semantic"`` when the hit was served from the query
    cache (its scores are those of the search that filled the cache), else ``None``.
    """

    doc_id: str
    chunk_id: str
    score: float
    text: str
    source: str | None
    metadata: Metadata
    start: int
    end: int
    dense_score: float | None = None
    dense_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    highlight: str | None = None
    cached: Literal["exact", "semantic"] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the hit."""
        return asdict(self)


@dataclass(slots=True)
class IngestReport:
    """What one ingest or upsert did.

    ``errors`` name each file or record skipped for a problem; ``warnings`` what the
    libraries reading files said about them (nothing was left out for those);
    ``files_unsupported`` the files in ingested folders passed over for their type.
    """

    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_deleted: int = 0
    documents_skipped: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files_unsupported: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the report."""
        return asdict(self)
