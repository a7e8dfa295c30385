"""Validation of records handed to ``Collection.upsert``: every field checked at the edge,
every error naming the record and field (``records[3].metadata``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragstore.errors import DimensionMismatch, InvalidInput
from ragstore.inputs import check_json, check_text
from ragstore.types import Document, Matrix

_TEXT_FIELDS = frozenset({"id", "text", "title", "metadata", "source"})
_VECTOR_FIELDS = frozenset({"id", "vector", "text", "metadata", "source"})
MAX_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """A caller-supplied vector with its document fields (``metadata_json``: the
    document's metadata as stored, made once)."""

    document: Document
    vector: Matrix
    metadata_json: str


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
        vector = unit_vector(record["vector"], dim, f"{where}.vector")
        parsed.append(VectorRecord(doc, vector, metadata_json(doc.metadata)))
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
    norm = math.sqrt(float(vector @ vector))  # np.linalg.norm costs more than the search
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidInput(f"{field} must be finite and not all zeros", field=field)
    if abs(norm - 1.0) < _UNIT_TOLERANCE:  # already unit length, as embedders return
        return vector
    unit: Matrix = vector / np.float32(norm)
    return unit


_UNIT_TOLERANCE = 1e-6


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


def vector_batch(
    ids: Sequence[Any], vectors: Any, metadata: Sequence[Any] | None, dim: int
) -> list[VectorRecord]:
    """Validate a bulk upsert (ids, an ``(n, dim)`` array, metadata per row); the vectors
    are checked and normalised as one array."""
    if metadata is not None and len(metadata) != len(ids):
        raise InvalidInput("metadata must have one entry per id", field="metadata")
    matrix = _unit_rows(vectors, len(ids), dim)
    parsed = []
    for i, doc_id in enumerate(ids):
        given = metadata[i] if metadata else None
        meta, stored = _checked_metadata(given, f"metadata[{i}]") if given else ({}, "{}")
        document = Document(id=_doc_id(doc_id, f"ids[{i}]"), text="", metadata=meta)
        parsed.append(VectorRecord(document, matrix[i], stored))
    return parsed


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """The canonical JSON of validated metadata, as stored and hashed (sorted keys)."""
    return _CANONICAL_JSON.encode(metadata)


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
"""``json.dumps`` with these options, without building an encoder per call."""
_STRICT_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)
"""The same, refusing NaN and infinities: what validation accepts."""
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _unit_rows(vectors: Any, count: int, dim: int) -> Matrix:
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput("vectors must be an array of numbers", field="vectors") from None
    if matrix.ndim != 2 or len(matrix) != count:
        raise InvalidInput("vectors must be an array with one row per id", field="vectors")
    if matrix.shape[1] != dim:
        raise DimensionMismatch(dim, int(matrix.shape[1]), field="vectors")
    norms = np.linalg.norm(matrix, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        field = f"vectors[{bad[0]}]"
        raise InvalidInput(f"{field} must be finite and not all zeros", field=field)
    unit: Matrix = matrix / norms[:, None]
    return unit


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
    return doc_id(str(value), field)


def doc_id(value: str, field: str) -> str:
    """A document id as given: 1 to ``MAX_ID_LENGTH`` characters of valid Unicode."""
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{field} must be 1 to {MAX_ID_LENGTH} characters", field=field)
    return check_text(value, field)


def check_delete_target(ids: object, where: object, all: bool) -> None:
    """A delete names exactly one of ``ids``, ``where`` or ``all=True``."""
    if sum((ids is not None, where is not None, bool(all))) != 1:
        raise InvalidInput("give exactly one of ids, where or all=True", field="ids")


def doc_ids(ids: str | Iterable[str], field: str = "ids") -> list[str]:
    """Document ids as a list: a single string is one id (never its characters)."""
    if isinstance(ids, str):
        return [doc_id(ids, field)]
    if isinstance(ids, Mapping) or not isinstance(ids, Iterable):
        raise InvalidInput(f"{field} must be an id or a list of ids", field=field)
    listed = list(ids)
    for i, value in enumerate(listed):
        if not isinstance(value, str):
            raise InvalidInput(f"{field}[{i}] must be a string", field=f"{field}[{i}]")
        doc_id(value, f"{field}[{i}]")
    return listed


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    return check_text(value, field)


def _optional_string(value: Any, field: str) -> str | None:
    return None if value is None else _string(value, field)


def _metadata(value: Any, field: str) -> dict[str, Any]:
    return _checked_metadata(value, field)[0]


def _checked_metadata(value: Any, field: str) -> tuple[dict[str, Any], str]:
    """A plain-JSON copy of a metadata object, and its canonical JSON."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(f"{field} must be an object with string keys", field=field)
    check_json(dict(value), field)
    try:
        stored = _STRICT_JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} is not plain JSON: {exc}", field=field) from None
    if all(type(v) in _SCALARS for v in value.values()):
        return dict(value), stored  # flat and plain already: the copy is the round trip
    return dict(json.loads(stored)), stored
