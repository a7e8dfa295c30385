"""In-memory metadata columns that answer a filter for the dense side in milliseconds.

Evaluating a filter in SQL reads and parses every document's metadata JSON on every
query. Here each metadata path a filter uses becomes a column, one entry per chunk: the
JSON value at that path, dictionary-encoded. A comparison is decided once per distinct
value with :func:`ragstore.filters.matches` itself (so the semantics are the filter
language's, not a second implementation of them) and spread to all chunks with one
array lookup. Columns are built on first use and extended as new chunks arrive.

A chunk's metadata never changes: updating a document replaces its chunks with new ones.
Deleted chunks stay in the columns; the vector segments no longer hold them, so they can
never be returned. A path with more than :data:`MAX_DISTINCT` distinct values is left to
the store, which then evaluates the whole filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ragstore.filters import MISSING, And, Compare, Filter, Not, Or, lookup, matches
from ragstore.index.base import AllowedMask, Ids, id_mask
from ragstore.store.base import Reader

MAX_DISTINCT = 65_536
"""Paths with more distinct values than this are filtered by the store instead."""

Mask = npt.NDArray[np.bool_]
_MISSING_KEY = "\0missing"


@dataclass
class _Column:
    """One metadata path: a code per chunk and the distinct values the codes stand for."""

    path: tuple[str, ...]
    codes: npt.NDArray[np.int32]
    values: list[object] = field(default_factory=list)
    code_of: dict[str, int] = field(default_factory=dict)

    @property
    def too_varied(self) -> bool:
        """Whether the path has too many distinct values to be worth a column."""
        return len(self.values) > MAX_DISTINCT

    def extend(self, metadata: list[dict[str, object]]) -> None:
        """Append one code per new chunk."""
        self.codes = np.concatenate([self.codes, self._codes(metadata)])

    def fill(self, held: Ids, ids: Ids, metadata: list[dict[str, object]]) -> None:
        """Codes for every chunk id ``held`` (ascending), from the metadata of the live
        chunks ``ids`` among them; chunks deleted since they were held read as missing
        (they are never returned, but the codes must line up with ``held``)."""
        self.codes = np.full(len(held), self._code({}), dtype=np.int32)
        self.codes[np.searchsorted(held, ids)] = self._codes(metadata)

    def _codes(self, metadata: list[dict[str, object]]) -> npt.NDArray[np.int32]:
        return np.fromiter((self._code(m) for m in metadata), dtype=np.int32, count=len(metadata))

    def mask(self, compare: Compare) -> Mask:
        """Which chunks satisfy ``compare`` (a comparison on this column's path)."""
        holds = np.fromiter(
            (matches(compare, _rebuilt(self.path, value)) for value in self.values),
            dtype=bool,
            count=len(self.values),
        )
        return holds[self.codes]

    def _code(self, metadata: dict[str, object]) -> int:
        node = lookup(metadata, self.path)
        key = _MISSING_KEY if node is MISSING else json.dumps(node, sort_keys=True)
        code = self.code_of.get(key)
        if code is None:
            code = self.code_of[key] = len(self.values)
            self.values.append(node)
        return code


class PayloadIndex:
    """One collection's metadata columns, caught up with the store on each use."""

    def __init__(self, collection_id: int) -> None:
        self._collection_id = collection_id
        self._chunk_ids: Ids = np.empty(0, dtype=np.int64)
        self._columns: dict[tuple[str, ...], _Column] = {}
        self._last_chunk = 0

    def allowed(self, reader: Reader, where: Filter) -> AllowedMask:
        """The chunks whose documents match ``where``, as of ``reader``'s snapshot (deleted
        chunks may be among them). Callers serialise access."""
        self._catch_up(reader)
        if any(self._column(reader, path).too_varied for path in _paths(where)):
            return id_mask(reader.allowed_chunk_ids(self._collection_id, where))
        mask = np.zeros(self._last_chunk + 1, dtype=bool)
        mask[self._chunk_ids] = self._mask(where)
        return mask

    def _mask(self, where: Filter) -> Mask:
        match where:
            case Compare():
                return self._columns[where.path].mask(where)
            case And(items):
                mask: Mask = np.logical_and.reduce([self._mask(item) for item in items])
                return mask
            case Or(items):
                mask = np.logical_or.reduce([self._mask(item) for item in items])
                return mask
            case Not(item):
                return ~self._mask(item)
        raise AssertionError(f"unknown filter node {where!r}")

    def _column(self, reader: Reader, path: tuple[str, ...]) -> _Column:
        column = self._columns.get(path)
        if column is None:
            self._catch_up(reader)
            column = _Column(path, np.empty(0, dtype=np.int32))
            ids, metadata = reader.chunk_metadata(self._collection_id, 0, self._last_chunk)
            column.fill(self._chunk_ids, ids, metadata)
            self._columns[path] = column
        return column

    def _catch_up(self, reader: Reader) -> None:
        ids, metadata = reader.chunk_metadata(self._collection_id, self._last_chunk, _LAST_ID)
        if not len(ids):
            return
        self._chunk_ids = np.concatenate([self._chunk_ids, ids])
        for column in self._columns.values():
            if not column.too_varied:  # never used again: the store answers for its path
                column.extend(metadata)
        self._last_chunk = int(ids[-1])


_LAST_ID = 2**63 - 1


def _rebuilt(path: tuple[str, ...], value: object) -> dict[str, object]:
    """The smallest metadata holding ``value`` at ``path`` (nothing, for absent)."""
    if value is MISSING:
        return {}
    node: object = value
    for key in reversed(path):
        node = {key: node}
    assert isinstance(node, dict)
    return node


def _paths(where: Filter) -> set[tuple[str, ...]]:
    match where:
        case Compare():
            return {where.path}
        case And(items) | Or(items):
            return set().union(*(_paths(item) for item in items))
        case Not(item):
            return _paths(item)
    raise AssertionError(f"unknown filter node {where!r}")
