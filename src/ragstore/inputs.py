"""The one validation of text and JSON at every edge (Python API, CLI, HTTP, files).

Two things break a store, a log line or an HTTP answer long after the input came in:
text that is not valid Unicode (a lone surrogate from a JSON escape like ``"\\ud800"``
or from a command-line argument that was not UTF-8) and JSON nested so deep that
parsing or walking it exhausts the recursion limit. Both are refused here, naming the
field, before anything is parsed, stored or echoed back.

Error messages never quote the bad text itself: a message holding a lone surrogate
could not be printed or encoded either.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from ragstore.errors import InvalidInput
from ragstore.types import INCLUDABLE

MAX_JSON_DEPTH = 100
"""Deepest nesting of objects and lists accepted in any JSON input (filters, metadata,
records, request bodies); a filter or metadata object never needs more."""


def check_text(value: str, field: str) -> str:
    """``value`` unchanged when it is valid Unicode; :class:`InvalidInput` naming
    ``field`` (and the position) when it holds a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{field} is not valid Unicode (unpaired surrogate at character {exc.start})",
            field=field,
        ) from None
    return value


def parse_json(raw: str | bytes, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON text from outside: NaN and infinities are refused (they are not
    JSON), the depth is bounded before anything walks the value, and every string and
    key must be valid Unicode. Any failure is an :class:`InvalidInput` naming ``field``.

    The parser itself is safe at any depth: past the recursion limit it raises
    ``RecursionError``, answered here like any other malformed JSON.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{field} is not valid JSON: {exc}", field=field) from None
    check_json(value, field, max_depth=max_depth)
    return value


def check_json(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Check a parsed (or caller-built) JSON value without recursion: nesting at most
    ``max_depth``, string keys, valid Unicode in keys and strings, finite numbers.

    The error names the path of the bad part, as in ``filter.tags.$in[2]``.
    """
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{path} must be a finite number", field=path)
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise InvalidInput(f"{field} is nested deeper than {max_depth} levels", field=field)
            stack.extend(_children(item, path, depth + 1))


def check_depth(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """:class:`InvalidInput` naming ``field`` when objects and lists nest deeper than
    ``max_depth`` in ``value``; walked level by level, without recursion."""
    level = [value]
    for _ in range(max_depth + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list | tuple)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise InvalidInput(f"{field} is nested deeper than {max_depth} levels", field=field)


def _children(item: dict[Any, Any] | list[Any] | tuple[Any, ...], path: str, depth: int) -> Any:
    if not isinstance(item, dict):
        return ((child, f"{path}[{i}]", depth) for i, child in enumerate(item))
    for key in item:
        if not isinstance(key, str):
            raise InvalidInput(f"{path} must have string keys", field=path)
        check_text(key, f"{path} key")
    return ((child, f"{path}.{key}", depth) for key, child in item.items())


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def encode_cursor(doc_id: str) -> str:
    """An opaque cursor that resumes after ``doc_id``."""
    return base64.urlsafe_b64encode(doc_id.encode("utf-8")).decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The document id a cursor resumes after; InvalidInput naming ``cursor`` when
    malformed."""
    try:
        raw = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("cursor is not one a listing returned", field="cursor") from None


def included(include: Any) -> frozenset[str]:
    """The fields a ``get`` should return, checked against :data:`INCLUDABLE`."""
    if isinstance(include, str) or not isinstance(include, list | tuple | set | frozenset):
        raise InvalidInput(f"include must be a list of {', '.join(INCLUDABLE)}", field="include")
    for i, name in enumerate(include):
        if name not in INCLUDABLE:
            message = f"include names {name!r}; it may name {', '.join(INCLUDABLE)}"
            raise InvalidInput(message, field=f"include[{i}]")
    return frozenset(include)
