"""Payload indexes: metadata paths as columns and bitmaps, so a filter costs microseconds.

Each metadata path a filter uses becomes a column: the JSON value at that path for every
chunk, dictionary-encoded. A comparison is decided once per distinct value with
:func:`ragstore.filters.matches` itself, so the semantics are the filter language's, not a
second implementation of them; which values hold is kept per comparison.

Within a sealed segment each path also keeps, per distinct value, a compressed bitmap of
the positions holding it (``pyroaring``), built once: a chunk's metadata never changes (an
update replaces the chunk). A comparison that few positions satisfy is the union of its
values' bitmaps; one that many satisfy is read off the column as a boolean per position.
``$and``, ``$or`` and ``$not`` combine those (:mod:`ragstore.index.matching`), the
segment's deletions are taken out, and the result is kept for the next query with the
same filter (:data:`CACHED_FILTERS` of them): it stays right until the segment loses more
chunks, since nothing else about a sealed segment changes. Chunks not sealed yet, and the
keyword side, ask the columns directly for the chunk ids they hold.

Which paths are indexed: those named explicitly (:meth:`PayloadIndex.pin`, a collection's
``payload_indexes``), built at once and kept; and any path a filter uses, built on first
use, of which the :data:`MAX_AUTOMATIC` most recently used are kept. A path with more than
:data:`MAX_DISTINCT` distinct values is left to the store, which then evaluates the whole
filter.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from ragstore.filters import MISSING, And, Compare, Filter, Not, Or, lookup, matches
from ragstore.index.base import Ids
from ragstore.index.matching import Mask, Matching
from ragstore.index.segments import SealedSegment
from ragstore.store.base import Reader

__all__ = ["Filtered", "IdSet", "PayloadIndex", "Selection"]

MAX_DISTINCT = 65_536
"""Paths with more distinct values than this are filtered by the store instead."""
CACHED_FILTERS = 64
"""Filters whose matches in each sealed segment are kept for the next query."""
CACHED_COMPARISONS = 256
"""Comparisons per path whose verdict on each distinct value is kept."""
MAX_AUTOMATIC = 32
"""Columns built for paths that filters use, beyond the pinned ones, kept at most."""
SPARSE_SHARE = 0.25
"""Within a segment, a comparison matching at most this share is built as a bitmap of
positions, a broader one as a boolean per position."""

_MISSING_KEY = "\0missing"
_LAST_ID = 2**63 - 1


@dataclass
class _Column:
    """One metadata path: a code per chunk and the distinct values the codes stand for."""

    path: tuple[str, ...]
    codes: npt.NDArray[np.int32]
    values: list[object] = field(default_factory=list)
    code_of: dict[str, int] = field(default_factory=dict)
    _holds: OrderedDict[Compare, Mask] = field(default_factory=OrderedDict)
    _in_segments: weakref.WeakKeyDictionary[SealedSegment, _SegmentColumn] = field(
        default_factory=weakref.WeakKeyDictionary
    )

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

    def codes_of(self, held: Ids, ids: Ids) -> npt.NDArray[np.int32]:
        """The codes of chunk ids ``ids``, given the ids ``held`` (ascending) the codes
        line up with; ids not held (deleted before this process first read them) read as
        missing."""
        rows = np.minimum(np.searchsorted(held, ids), max(len(held) - 1, 0))
        codes = np.full(len(ids), self._code({}), dtype=np.int32)
        if len(held):
            known = held[rows] == ids
            codes[known] = self.codes[rows[known]]
        return codes

    def in_segment(self, segment: SealedSegment, held: Ids) -> _SegmentColumn:
        """This path within ``segment`` (made on first use and kept with the column);
        ``held`` are the chunk ids the codes line up with."""
        column = self._in_segments.get(segment)
        if column is None:
            column = self._in_segments[segment] = _SegmentColumn(self.codes_of(held, segment.ids))
        return column

    @property
    def nbytes(self) -> int:
        """Bytes held: the codes, here and in each segment."""
        return self.codes.nbytes + sum(c.nbytes for c in self._in_segments.values())

    def holds(self, compare: Compare) -> Mask:
        """Per distinct value: whether it satisfies ``compare`` (a comparison on this
        column's path)."""
        known = self._holds.get(compare)
        if known is not None:
            self._holds.move_to_end(compare)
            if len(known) == len(self.values):
                return known
        start = 0 if known is None else len(known)
        fresh = np.fromiter(
            (matches(compare, _rebuilt(self.path, v)) for v in self.values[start:]),
            dtype=bool,
            count=len(self.values) - start,
        )
        held = fresh if known is None else np.concatenate([known, fresh])
        self._holds[compare] = held
        if len(self._holds) > CACHED_COMPARISONS:
            self._holds.popitem(last=False)
        return held

    def _codes(self, metadata: list[dict[str, object]]) -> npt.NDArray[np.int32]:
        return np.fromiter((self._code(m) for m in metadata), dtype=np.int32, count=len(metadata))

    def _code(self, metadata: dict[str, object]) -> int:
        node = lookup(metadata, self.path)
        key = _MISSING_KEY if node is MISSING else json.dumps(node, sort_keys=True)
        code = self.code_of.get(key)
        if code is None:
            code = self.code_of[key] = len(self.values)
            self.values.append(node)
        return code


class _SegmentColumn:
    """One path within one sealed segment: a code per position, how many positions hold
    each code, and (built on first use) each code's bitmap of positions."""

    def __init__(self, codes: npt.NDArray[np.int32]) -> None:
        self.codes = codes
        self.counts = np.bincount(codes)
        self._bitmaps: list[BitMap] | None = None

    def select(self, holds: Mask, size: int) -> BitMap | Mask:
        """The positions whose value satisfies the comparison that ``holds`` decides."""
        here = holds[: len(self.counts)]  # values first seen after sealing are not here
        if int(self.counts[here].sum()) > SPARSE_SHARE * size:
            dense: Mask = here[self.codes]
            return dense
        bitmaps = self.value_bitmaps()
        return _union_of([bitmaps[c] for c in np.flatnonzero(here & (self.counts > 0))])

    @property
    def nbytes(self) -> int:
        """Bytes held: the codes, and the bitmaps once built."""
        bitmaps = sum(_bitmap_bytes(b) for b in self._bitmaps or ())
        return int(self.codes.nbytes + self.counts.nbytes + bitmaps)

    def value_bitmaps(self) -> list[BitMap]:
        """Each code's bitmap of the positions holding it (built on first use)."""
        if self._bitmaps is None:
            order = np.argsort(self.codes, kind="stable").astype(np.uint32)
            bounds = np.concatenate([[0], np.cumsum(self.counts)])
            self._bitmaps = [
                BitMap(order[bounds[code] : bounds[code + 1]]) for code in range(len(self.counts))
            ]
        return self._bitmaps


Columns = dict[tuple[str, ...], _Column]
"""A filter's paths and their columns."""


class PayloadIndex:
    """One collection's payload indexes, caught up with the store on each use."""

    def __init__(self, collection_id: int) -> None:
        self._collection_id = collection_id
        self._chunk_ids: Ids = np.empty(0, dtype=np.int64)
        self._columns: dict[tuple[str, ...], _Column] = {}
        self._last_chunk = 0
        self._cache: OrderedDict[Filter, weakref.WeakKeyDictionary[SealedSegment, Matching]]
        self._cache = OrderedDict()
        self._pinned: frozenset[tuple[str, ...]] = frozenset()
        self._recent: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._newest: int | None = None

    def allowed(self, reader: Reader, where: Filter, newest: int | None = None) -> Filtered:
        """What ``where`` lets through, as of ``reader``'s snapshot (deleted chunks may be
        among it). ``newest``, when given, is the newest chunk id the snapshot holds: the
        store is not read again while it is unchanged. Callers serialise access."""
        if newest is None or newest != self._newest:
            self._catch_up(reader)
            self._newest = newest
        paths = _paths(where)
        varied = any(self._column(reader, path).too_varied for path in paths)
        self._used(paths)
        if varied:
            return IdSet(reader.allowed_chunk_ids(self._collection_id, where))
        return Selection(self, where, {path: self._columns[path] for path in paths})

    def pin(
        self, reader: Reader, paths: Iterable[tuple[str, ...]], segments: Iterable[SealedSegment]
    ) -> None:
        """Index exactly ``paths`` explicitly: build their columns and their bitmaps in
        ``segments`` now, and keep them whatever filters use. Callers serialise access."""
        for path in self._pinned:  # no longer pinned: kept while filters use it
            self._recent[path] = None
        self._pinned = frozenset(paths)
        self._catch_up(reader)
        for path in self._pinned:
            column = self._column(reader, path)
            if not column.too_varied:
                for segment in segments:
                    column.in_segment(segment, self._chunk_ids).value_bitmaps()
        self._used(())

    def stats(self) -> list[dict[str, object]]:
        """Per indexed path: whether it is pinned, its distinct values, whether it is too
        varied to be indexed (the store filters it), and the bytes its columns hold."""
        listed: list[dict[str, object]] = []
        for path, column in self._columns.items():
            listed.append(
                {
                    "path": ".".join(path),
                    "pinned": path in self._pinned,
                    "values": len(column.values),
                    "too_varied": column.too_varied,
                    "bytes": column.nbytes,
                }
            )
        return sorted(listed, key=lambda entry: str(entry["path"]))

    def _used(self, paths: Iterable[tuple[str, ...]]) -> None:
        """Note ``paths`` as just used, and drop the least recently used automatic columns
        past :data:`MAX_AUTOMATIC` (never one of ``paths``)."""
        for path in paths:
            self._recent[path] = None
            self._recent.move_to_end(path)
        automatic = [path for path in self._recent if path not in self._pinned]
        for path in automatic[: max(0, len(automatic) - MAX_AUTOMATIC)]:
            del self._recent[path]
            self._columns.pop(path, None)

    # -- used by Selection

    def contains(self, where: Filter, columns: Columns, ids: Ids) -> Mask:
        """Per chunk id of ``ids`` (known to the columns): whether ``where`` holds, read
        from ``columns`` (its paths' columns)."""
        rows = np.searchsorted(self._chunk_ids, ids)
        known = rows < len(self._chunk_ids)
        known[known] = self._chunk_ids[rows[known]] == ids[known]
        found = np.zeros(len(ids), dtype=bool)
        found[known] = _rows_hold(where, columns, rows[known])
        return found

    def matching(self, where: Filter, columns: Columns, segment: SealedSegment) -> Matching:
        """The live positions of ``segment`` that ``where`` lets through (kept), read
        from ``columns`` (its paths' columns)."""
        kept = self._cache.get(where)
        if kept is None:
            kept = self._cache[where] = weakref.WeakKeyDictionary()
            if len(self._cache) > CACHED_FILTERS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(where)
        found = kept.get(segment)
        if found is None or found.deleted != segment.deleted:
            found = kept[segment] = self._matching(where, columns, segment)
        return found

    def _matching(self, where: Filter, columns: Columns, segment: SealedSegment) -> Matching:
        selected = self._select(where, columns, segment)
        if isinstance(selected, BitMap):
            if segment.deleted:
                selected = selected - BitMap(segment.dead_positions().astype(np.uint32))
            return Matching(segment.size, sparse=selected, deleted=segment.deleted)
        return Matching(segment.size, dense=selected & segment.live, deleted=segment.deleted)

    def _select(self, where: Filter, columns: Columns, segment: SealedSegment) -> BitMap | Mask:
        match where:
            case Compare():
                column = columns[where.path]
                here = column.in_segment(segment, self._chunk_ids)
                return here.select(column.holds(where), segment.size)
            case And(items):
                return _intersection([self._select(i, columns, segment) for i in items])
            case Or(items):
                parts = [self._select(i, columns, segment) for i in items]
                return _union(parts, segment.size)
            case Not(item):
                return ~_dense(self._select(item, columns, segment), segment.size)
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


class Selection:
    """What one filter lets through, from the payload indexes: asked per chunk id, or
    per sealed segment."""

    def __init__(self, index: PayloadIndex, where: Filter, columns: Columns) -> None:
        self._index = index
        self.where = where
        self._columns = columns  # its own: the index may drop a column meanwhile

    def contains(self, ids: Ids) -> Mask:
        """Per chunk id of ``ids``: whether the filter lets that chunk through."""
        return self._index.contains(self.where, self._columns, ids)

    def matching(self, segment: SealedSegment) -> Matching:
        """The live positions of ``segment`` the filter lets through."""
        return self._index.matching(self.where, self._columns, segment)


class IdSet:
    """What a filter lets through, given as the chunk ids it allows (the store's answer
    for a filter on a path too varied for a column)."""

    def __init__(self, ids: Ids) -> None:
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))

    def contains(self, ids: Ids) -> Mask:
        """Per id of ``ids``: whether it is one of the set's."""
        at = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        if not len(self.ids):
            return np.zeros(len(ids), dtype=bool)
        found: Mask = self.ids[at] == ids
        return found

    def matching(self, segment: SealedSegment) -> Matching:
        """The live positions of ``segment`` among the set's chunks."""
        return Matching.of_positions(segment.size, segment.positions(self.ids), segment.deleted)


Filtered = Selection | IdSet
"""What a filter lets through, asked per chunk id (``contains``) or per sealed segment
(``matching``)."""


def _union_of(bitmaps: list[BitMap]) -> BitMap:
    if len(bitmaps) > 1:
        return BitMap.union(*bitmaps)
    return BitMap(bitmaps[0]) if bitmaps else BitMap()


def _rows_hold(where: Filter, columns: Columns, rows: Ids) -> Mask:
    match where:
        case Compare():
            column = columns[where.path]
            held: Mask = column.holds(where)[column.codes[rows]]
            return held
        case And(items):
            both: Mask = np.logical_and.reduce([_rows_hold(i, columns, rows) for i in items])
            return both
        case Or(items):
            either: Mask = np.logical_or.reduce([_rows_hold(i, columns, rows) for i in items])
            return either
        case Not(item):
            return ~_rows_hold(item, columns, rows)
    raise AssertionError(f"unknown filter node {where!r}")


def _intersection(parts: list[BitMap | Mask]) -> BitMap | Mask:
    sparse = sorted((p for p in parts if isinstance(p, BitMap)), key=len)
    dense = [p for p in parts if not isinstance(p, BitMap)]
    if not sparse:
        mask: Mask = np.logical_and.reduce(dense)
        return mask
    result = BitMap.intersection(*sparse) if len(sparse) > 1 else sparse[0]
    if dense:
        positions = np.frombuffer(result.to_array(), dtype=np.uint32)
        keep = np.logical_and.reduce([d[positions] for d in dense])
        result = BitMap(positions[keep])
    return result


def _union(parts: list[BitMap | Mask], size: int) -> BitMap | Mask:
    sparse = [p for p in parts if isinstance(p, BitMap)]
    if len(sparse) == len(parts):
        return _union_of(sparse)
    mask: Mask = np.logical_or.reduce([_dense(p, size) for p in parts])
    return mask


def _dense(part: BitMap | Mask, size: int) -> Mask:
    if not isinstance(part, BitMap):
        return part
    mask = np.zeros(size, dtype=bool)
    mask[np.frombuffer(part.to_array(), dtype=np.uint32)] = True
    return mask


def _bitmap_bytes(bitmap: BitMap) -> int:
    stats = bitmap.get_statistics()
    return int(
        stats["n_bytes_array_containers"]
        + stats["n_bytes_run_containers"]
        + stats["n_bytes_bitset_containers"]
    )


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
