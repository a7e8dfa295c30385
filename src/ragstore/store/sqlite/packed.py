"""Many rows in one SQLite step: bulk inserts and reads that do not ping-pong the GIL.

Python's ``sqlite3`` releases the GIL around every step, that is for every row fetched
and for every row of an ``executemany``, and takes it back afterwards. With another
thread busy in Python (a search beside a write), each take-back waits for that thread to
yield, up to the 5 ms switch interval: 1,000 inserted rows took 548 ms instead of 30 ms
here. So the hot many-row statements are one step each: inserts carry many rows of
``VALUES``, and reads have SQLite concatenate each column with ``group_concat`` (with
every value's length, to split them again) into a single result row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ragstore.types import Ids

MAX_PARAMS = 9_000
"""Bound parameters per bulk statement (SQLite allows 32,766)."""
READ_ROWS = 8_192
"""Rows per packed read: bounds the one value SQLite builds per column."""


def insert(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> int:
    """Run ``head`` (``INSERT INTO t (a, b)``) for every row, as few statements as the
    parameter limit allows. Returns the rowid of the last row (0 when none); in a write
    transaction, the rows of one statement get consecutive rowids in order."""
    if not rows:
        return 0
    width = len(rows[0])
    per = max(MAX_PARAMS // width, 1)
    last = 0
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        values = ", ".join([f"({', '.join('?' * width)})"] * len(part))
        cursor = conn.execute(f"{head} VALUES {values}", [v for row in part for v in row])
        last = int(cursor.lastrowid or 0)
    return last


def read(conn: sqlite3.Connection, query: str, params: Sequence[Any], width: int) -> list[Column]:
    """The rows of ``query``, column by column, in one step.

    ``query`` selects ``width`` non-NULL columns named ``c0``, ``c1``, ... (its row order
    is kept); each value comes back as the bytes SQLite holds for it (digits for an
    integer, UTF-8 for text).
    """
    packed = ", ".join(
        f"group_concat(length(CAST(c{i} AS BLOB))), CAST(group_concat(c{i}, '') AS BLOB)"
        for i in range(width)
    )
    row = conn.execute(f"SELECT count(*), {packed} FROM ({query})", params).fetchone()
    count = int(row[0])
    return [Column(count, row[1 + 2 * i], row[2 + 2 * i]) for i in range(width)]


def read_after(
    conn: sqlite3.Connection, query: str, params: Sequence[Any], width: int, after: int
) -> Iterator[list[Column]]:
    """:func:`read` page by page: ``query`` takes ``params`` then a last-seen id and a
    limit (it ends ``WHERE ... c.id > ? ORDER BY c.id LIMIT ?``, ``c0`` being that id)."""
    while True:
        page = read(conn, query, (*params, after, READ_ROWS), width)
        if not len(page[0]):
            return
        yield page
        if len(page[0]) < READ_ROWS:
            return
        after = int(page[0].ints()[-1])


class Column:
    """One column of a packed read: ``count`` values laid end to end."""

    def __init__(self, count: int, lengths: str | None, data: bytes | None) -> None:
        self._count = count
        self._data = data or b""
        sizes = np.array(lengths.split(","), dtype=np.int64) if lengths else _NO_SIZES
        if len(sizes) != count:
            raise ValueError("a packed column held a NULL")  # group_concat skips NULLs
        self._ends = np.cumsum(sizes)

    def __len__(self) -> int:
        return self._count

    def values(self) -> list[bytes]:
        """Each value's bytes."""
        data, ends = self._data, self._ends.tolist()
        starts = [0, *ends[:-1]] if ends else []
        return [data[a:b] for a, b in zip(starts, ends, strict=True)]

    def texts(self) -> list[str]:
        """Each value as text."""
        return [value.decode() for value in self.values()]

    def ints(self) -> Ids:
        """Each value as an integer."""
        return np.array(self.values(), dtype=np.int64) if self._count else _NO_SIZES

    def joined(self) -> bytes:
        """All values end to end (e.g. equal-sized float32 vectors)."""
        return self._data


_NO_SIZES: Ids = np.empty(0, dtype=np.int64)
