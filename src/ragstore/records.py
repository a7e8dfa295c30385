"""Validation of records handed to ``Collection.upsert``: every field checked at the edge,
every error naming the record and field (``records[3].metadata``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragstore.errors import DimensionMismatch, InvalidInput
from ragstore.index.base import Matrix
from ragstore.types import Document

_TEXT_FIELDS = frozenset({"id", "text", "title", "metadata", "source"})
_VECTOR_FIELDS = frozenset({"id", "vector", "text", "metadata", "source"})
MAX_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """A caller-supplied vector with its document fields."""

    document: Document
    vector: Matrix


def text_records(records: Iterable[Mapping[str, Any] | Document]) -> list[Document]:
    """Validate records for a collection that embeds text itself."""
    return [_text_record(i, record) for i, record in enumerate(records)]


def vector_records(records: Iterable[Mapping[str, Any]], dim: int) -> list[VectorRecord]:
    """Validate records that carry their own vectors (normalised here, for cosine)."""
    parsed = []
    for i, record in enumerate(records):
        where = f"records[{i}]"
        _check_fields(record, _VECTOR_FIELDS, where)
        if "vector" not in record:
            raise InvalidInput(f"{where}.vector is required", field=f"{where}.vector")
        doc = _document(record, where, text_required=False)
        parsed.append(VectorRecord(doc, unit_vector(record["vector"], dim, f"{where}.vector")))
    return parsed


def unit_vector(value: Any, dim: int, field: str) -> Matrix:
    """A finite, non-zero vector of length ``dim``, scaled to unit length."""
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} must be a list of numbers", field=field) from None
    if vector.ndim != 1:
        raise InvalidInput(f"{field} must be a flat list of numbers", field=field)
    if vector.shape[0] != dim:
        raise DimensionMismatch(dim, int(vector.shape[0]), field=field)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidInput(f"{field} must be finite and not all zeros", field=field)
    return vector / norm


def _text_record(i: int, record: Mapping[str, Any] | Document) -> Document:
    where = f"records[{i}]"
    if isinstance(record, Document):
        record = {
            "id": record.id,
            "text": record.text,
            "title": record.title,
            "metadata": record.metadata,
            "source": record.source,
        }
    _check_fields(record, _TEXT_FIELDS, where)
    return _document(record, where, text_required=True)


def _check_fields(record: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(record, Mapping):
        raise InvalidInput(f"{where} must be an object", field=where)
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise InvalidInput(
            f"{where} has unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})",
            field=f"{where}.{unknown[0]}",
        )


def _document(record: Mapping[str, Any], where: str, *, text_required: bool) -> Document:
    if text_required and "text" not in record:
        raise InvalidInput(f"{where}.text is required", field=f"{where}.text")
    return Document(
        id=_doc_id(record.get("id"), f"{where}.id"),
        text=_string(record.get("text", ""), f"{where}.text"),
        title=_string(record.get("title") or "", f"{where}.title"),
        metadata=_metadata(record.get("metadata") or {}, f"{where}.metadata"),
        source=_optional_string(record.get("source"), f"{where}.source"),
    )


def _doc_id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    doc_id = str(value)
    if not doc_id or len(doc_id) > MAX_ID_LENGTH:
        raise InvalidInput(f"{field} must be 1 to {MAX_ID_LENGTH} characters", field=field)
    return doc_id


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    return value


def _optional_string(value: Any, field: str) -> str | None:
    return None if value is None else _string(value, field)


def _metadata(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(f"{field} must be an object with string keys", field=field)
    try:
        return dict(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} is not plain JSON: {exc}", field=field) from None
