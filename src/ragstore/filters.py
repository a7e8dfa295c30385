"""Metadata filters: one JSON language for the CLI, the Python API and HTTP.

A filter is a JSON object that selects documents by their metadata::

    {"lang": "en"}                                    equality shorthand ($eq)
    {"lang": "en", "year": 2005}                      several keys: all must hold (AND)
    {"year": {"$gte": 2000, "$lt": 2010}}             several operators: all must hold
    {"tags": {"$in": ["ai", "db"]}}                   membership
    {"author.name": "Ada"}                            dotted path: metadata["author"]["name"]
    {"$or": [{"lang": "en"}, {"$not": {"draft": true}}]}

Operators on a field: ``$eq $ne $in $nin $gt $gte $lt $lte $exists``.
Combinators: ``$and`` and ``$or`` (a non-empty list of filters), ``$not`` (one filter).
``None`` and ``{}`` match every document.

Semantics (:func:`compile_sql` and :func:`matches` implement exactly the same ones):

* Comparisons are typed. Booleans equal only booleans (``true`` is not ``1``); integers and
  floats compare numerically with each other; strings compare with strings by code point;
  numbers and strings never equal or order against each other; ``null`` equals only a JSON
  ``null``.
* When the field holds an array, a comparison holds if it holds for ANY scalar element
  (nested arrays and objects inside it are skipped). Several operators on one field are
  separate comparisons, each with this any-element rule.
* ``$ne`` is exactly ``NOT $eq`` and ``$nin`` exactly ``NOT $in``: a missing field matches
  them, and an array matches ``{"$ne": x}`` only if no element equals ``x``.
* A missing field, or a path that ends at an object, matches no positive comparison.
  Paths do not step into arrays (``"tags.0"`` is a key named ``0``, not an index).
* ``{"$exists": true}`` holds when the key is present, even if its value is ``null``.
* ``$not`` is plain negation.
* The metadata is read as SQLite's JSON functions read it: an integer outside the signed
  64-bit range compares as a float, and a string stops at its first NUL character.

Field names are dot-separated paths; a segment may not be empty nor hold ``"``, ``\\``,
control characters or lone surrogates (SQLite matches path keys against the raw JSON text,
so such keys could never match). The stored metadata must therefore be JSON written with
``ensure_ascii=False``. Filters nest at most 32 levels deep.

:func:`parse_filter` validates a filter into a small immutable AST (:data:`Filter`);
:func:`to_json` renders the canonical JSON form, with ``parse_filter(to_json(f)) == f``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeGuard

from ragstore.errors import InvalidFilter, InvalidInput
from ragstore.inputs import check_depth

__all__ = [
    "MAX_DEPTH",
    "MISSING",
    "And",
    "Compare",
    "Filter",
    "Not",
    "Or",
    "Scalar",
    "Value",
    "compile_sql",
    "lookup",
    "matches",
    "parse_filter",
    "to_json",
]

Scalar: TypeAlias = str | int | float | bool | None
Value: TypeAlias = Scalar | tuple[Scalar, ...]

MAX_DEPTH: Final = 32
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_BAD_PATH_CHAR: Final = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True, eq=False)
class Compare:
    """One comparison of the metadata value at ``path`` (``op`` is ``"$eq"``, ``"$in"``, ...).

    ``value`` is a scalar, or a tuple of scalars for ``$in``/``$nin``. Equality is typed
    like JSON (``True`` is not ``1``, ``1`` is not ``1.0``) so equal filters are equivalent.
    """

    path: tuple[str, ...]
    op: str
    value: Value

    def _key(self) -> tuple[object, ...]:
        return (self.path, self.op, _typed(self.value))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Compare) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, slots=True)
class And:
    """Every item holds."""

    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item holds."""

    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The item does not hold."""

    item: Filter


Filter: TypeAlias = Compare | And | Or | Not


def _typed(value: Value) -> object:
    if isinstance(value, tuple):
        return tuple(map(_typed, value))
    return (type(value), value)


# --------------------------------------------------------------------------- parsing


def parse_filter(obj: object) -> Filter | None:
    """Validate a JSON filter into a :data:`Filter`; ``None`` or ``{}`` means "match all".

    Keys of one object are read in sorted order, so equivalent spellings parse alike.
    Raises :class:`InvalidFilter` naming the bad operator or field (also in ``.field``).
    """
    if obj is None or (isinstance(obj, Mapping) and not obj):
        return None
    if not isinstance(obj, Mapping):
        raise InvalidFilter(f"a filter must be a JSON object, got {_json_name(obj)}")
    try:
        check_depth(obj, "filter")  # before anything below recurses into it
    except InvalidInput as bad:
        raise InvalidFilter(str(bad), field=bad.field) from None
    return _parse_object(obj, depth=1)


def _parse_object(obj: Mapping[Any, object], depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"filter is nested deeper than {MAX_DEPTH} levels")
    parts = [part for key in _sorted_keys(obj) for part in _parse_entry(key, obj[key], depth)]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _sorted_keys(obj: Mapping[Any, object]) -> list[str]:
    for key in obj:
        if not isinstance(key, str):
            raise InvalidFilter(f"filter keys must be strings, got {key!r}", field=str(key))
    return sorted(obj)


def _parse_entry(key: str, value: object, depth: int) -> list[Filter]:
    combinator = _COMBINATORS.get(key)
    if combinator is not None:
        return [combinator(value, depth)]
    if key.startswith("$"):
        raise InvalidFilter(f"unknown operator {key!r}", field=key)
    return _parse_field(key, value)


def _parse_and(value: object, depth: int) -> Filter:
    return And(_children("$and", value, depth))


def _parse_or(value: object, depth: int) -> Filter:
    return Or(_children("$or", value, depth))


def _parse_not(value: object, depth: int) -> Filter:
    return Not(_child("$not", value, depth))


def _children(op: str, value: object, depth: int) -> tuple[Filter, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidFilter(
            f"{op} needs a non-empty array of filter objects, got {_json_name(value)}", field=op
        )
    return tuple(_child(op, item, depth) for item in value)


def _child(op: str, item: object, depth: int) -> Filter:
    if not isinstance(item, Mapping) or not item:
        got = "an empty object" if isinstance(item, Mapping) else _json_name(item)
        raise InvalidFilter(f"{op} needs non-empty filter objects, got {got}", field=op)
    return _parse_object(item, depth + 1)


_COMBINATORS: Final[dict[str, Callable[[object, int], Filter]]] = {
    "$and": _parse_and,
    "$or": _parse_or,
    "$not": _parse_not,
}


def _parse_field(name: str, value: object) -> list[Filter]:
    path = _parse_path(name)
    if isinstance(value, Mapping):
        if not value:
            raise InvalidFilter(f"field {name!r} has an empty operator object", field=name)
        return [_parse_operator(name, path, op, value[op]) for op in _sorted_keys(value)]
    if isinstance(value, list | tuple):
        raise InvalidFilter(
            f"field {name!r}: an array is not an equality value (use $in)", field=name
        )
    return [Compare(path, "$eq", _check_scalar(value, name, "$eq"))]


def _parse_path(name: str) -> tuple[str, ...]:
    segments = tuple(name.split("."))
    if not all(segments):
        raise InvalidFilter(f"field name {name!r} has an empty path segment", field=name)
    bad = _BAD_PATH_CHAR.search(name)
    if bad is not None:
        raise InvalidFilter(
            f"field name {name!r} holds {bad.group()!r}, which a path cannot hold", field=name
        )
    return segments


def _parse_operator(name: str, path: tuple[str, ...], op: str, raw: object) -> Compare:
    check = _VALUE_CHECKS.get(op)
    if check is not None:
        return Compare(path, op, check(raw, name, op))
    if op.startswith("$"):
        raise InvalidFilter(f"unknown operator {op!r} on field {name!r}", field=op)
    raise InvalidFilter(
        f"field {name!r}: an object is not an equality value (operators start with $)",
        field=name,
    )


def _check_scalar(value: object, name: str, op: str) -> Scalar:
    if _is_scalar(value):
        return value
    raise InvalidFilter(
        f"{op} on field {name!r}: the value is {_scalar_problem(value)}", field=name
    )


def _is_scalar(value: object) -> TypeGuard[Scalar]:
    return _scalar_problem(value) is None


def _scalar_problem(value: object) -> str | None:
    """Why ``value`` is not a scalar a filter can hold, or ``None`` if it is one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT64_MIN <= value <= _INT64_MAX else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value}, not a finite number"
    if isinstance(value, str):
        return None if _SURROGATE.search(value) is None else "a string with a lone surrogate"
    return f"{_json_name(value)}, not a string, number, boolean or null"


def _check_orderable(value: object, name: str, op: str) -> Scalar:
    if value is None or isinstance(value, bool):
        raise InvalidFilter(
            f"{op} on field {name!r} needs a number or a string, got {_json_name(value)}",
            field=name,
        )
    return _check_scalar(value, name, op)


def _check_scalars(value: object, name: str, op: str) -> tuple[Scalar, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidFilter(
            f"{op} on field {name!r} needs a non-empty array of scalars, got {_json_name(value)}",
            field=name,
        )
    return tuple(_check_scalar(item, name, op) for item in value)


def _check_bool(value: object, name: str, op: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidFilter(
            f"{op} on field {name!r} needs true or false, got {_json_name(value)}", field=name
        )
    return value


_VALUE_CHECKS: Final[dict[str, Callable[[object, str, str], Value]]] = {
    "$eq": _check_scalar,
    "$ne": _check_scalar,
    "$in": _check_scalars,
    "$nin": _check_scalars,
    "$gt": _check_orderable,
    "$gte": _check_orderable,
    "$lt": _check_orderable,
    "$lte": _check_orderable,
    "$exists": _check_bool,
}

_JSON_NAMES: Final[dict[type, str]] = {
    dict: "an object",
    list: "an array",
    tuple: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_name(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- rendering


def to_json(flt: Filter) -> dict[str, object]:
    """Render the canonical JSON form of a parsed filter; ``parse_filter(to_json(f)) == f``.

    Every comparison is spelled with its operator and every conjunction as ``$and``, so the
    form (dumped with sorted keys) can serve as a cache key.
    """
    match flt:
        case Compare(path, op, value):
            return {".".join(path): {op: list(value) if isinstance(value, tuple) else value}}
        case And(items):
            return {"$and": [to_json(item) for item in items]}
        case Or(items):
            return {"$or": [to_json(item) for item in items]}
        case Not(item):
            return {"$not": to_json(item)}


# --------------------------------------------------------------------------- semantics

# Positive comparisons: SQL test on a json_each row (one "?" per value) and Python test.
_COMPARISONS: Final[dict[str, tuple[str, Callable[[Any, Any], Any]]]] = {
    "$eq": ("je.value IN ({})", operator.eq),
    "$in": ("je.value IN ({})", operator.eq),
    "$gt": ("je.value > {}", operator.gt),
    "$gte": ("je.value >= {}", operator.ge),
    "$lt": ("je.value < {}", operator.lt),
    "$lte": ("je.value <= {}", operator.le),
}
_NEGATIONS: Final = {"$ne": "$eq", "$nin": "$in"}

# Value kinds, and the json_each types each kind matches. Only numbers and text carry a
# value to compare; for the other kinds the type alone decides.
_SQL_TYPES: Final = {
    "null": "('null')",
    "true": "('true')",
    "false": "('false')",
    "number": "('integer', 'real')",
    "text": "('text')",
}
_VALUED_KINDS: Final = frozenset({"number", "text"})


def _kind(value: object) -> str:
    """The comparison kind of a scalar (a key of ``_SQL_TYPES``); ``""`` if not a scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else ""


def _positive(op: str) -> tuple[str, bool]:
    """The positive comparison behind ``op`` and whether ``op`` negates it."""
    return _NEGATIONS.get(op, op), op in _NEGATIONS


def _values(value: Value) -> tuple[Scalar, ...]:
    return value if isinstance(value, tuple) else (value,)


# --------------------------------------------------------------------------- SQL


def compile_sql(flt: Filter, json_column: str) -> tuple[str, list[object]]:
    """Compile ``flt`` to an SQLite boolean expression over a column of JSON text.

    ``json_column`` is a trusted identifier such as ``"d.metadata"``. Every path and value
    is bound as a ``?`` parameter, returned in order. The expression is never NULL, so
    ``NOT (expr)`` selects exactly the other rows.
    """
    return compile_tree(flt, lambda cmp: _compile_compare(cmp, json_column))


CompileCompare = Callable[[Compare], tuple[str, list[object]]]
"""One comparison as an SQL expression (never NULL) and its parameters."""


def compile_tree(flt: Filter, compare: CompileCompare) -> tuple[str, list[object]]:
    """Compile ``flt`` to a boolean SQL expression, each comparison by ``compare`` (the
    one part that differs between SQL dialects)."""
    match flt:
        case Compare():
            return compare(flt)
        case And(items):
            return _join("AND", [compile_tree(item, compare) for item in items])
        case Or(items):
            return _join("OR", [compile_tree(item, compare) for item in items])
        case Not(item):
            sql, params = compile_tree(item, compare)
            return f"(NOT {sql})", params


def _join(keyword: str, parts: Sequence[tuple[str, list[object]]]) -> tuple[str, list[object]]:
    """Join as a balanced tree: SQLite caps expression depth at 1000, long chains hit it."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    left_sql, left_params = _join(keyword, parts[:middle])
    right_sql, right_params = _join(keyword, parts[middle:])
    return f"({left_sql} {keyword} {right_sql})", [*left_params, *right_params]


def _compile_compare(cmp: Compare, column: str) -> tuple[str, list[object]]:
    path = "$" + "".join(f'."{segment}"' for segment in cmp.path)
    if cmp.op == "$exists":
        return f"(json_type({column}, ?) IS {'NOT ' if cmp.value else ''}NULL)", [path]
    op, negated = _positive(cmp.op)
    tests, params = _compile_tests(_COMPARISONS[op][0], _values(cmp.value))
    sql = (
        f"EXISTS (SELECT 1 FROM json_each({column}, ?) AS je"
        f" WHERE (je.key IS NULL OR typeof(je.key) = 'integer') AND ({tests}))"
    )
    return (f"(NOT {sql})" if negated else sql), [path, *params]


def _compile_tests(template: str, values: tuple[Scalar, ...]) -> tuple[str, list[object]]:
    """One test per kind of value, OR-ed: a json_each row of that type, then its value."""
    by_kind: dict[str, list[Scalar]] = {}
    for value in values:
        by_kind.setdefault(_kind(value), []).append(value)
    tests: list[str] = []
    params: list[object] = []
    for kind, group in by_kind.items():
        type_test = f"je.type IN {_SQL_TYPES[kind]}"
        if kind in _VALUED_KINDS:
            type_test += " AND " + template.format(", ".join("?" * len(group)))
            params.extend(group)
        tests.append(f"({type_test})")
    return " OR ".join(tests), params


# --------------------------------------------------------------------------- Python

MISSING: Final = object()
"""What :func:`lookup` returns for a path that leads nowhere."""


def matches(flt: Filter, metadata: Mapping[str, object]) -> bool:
    """Tell whether ``metadata`` satisfies ``flt``.

    The answer is the one :func:`compile_sql` gives over the metadata stored as JSON text.
    """
    match flt:
        case Compare():
            return _matches_compare(flt, metadata)
        case And(items):
            return all(matches(item, metadata) for item in items)
        case Or(items):
            return any(matches(item, metadata) for item in items)
        case Not(item):
            return not matches(item, metadata)


def _matches_compare(cmp: Compare, metadata: Mapping[str, object]) -> bool:
    node = lookup(metadata, cmp.path)
    if cmp.op == "$exists":
        return (node is not MISSING) == cmp.value
    op, negated = _positive(cmp.op)
    test = _COMPARISONS[op][1]
    hit = any(
        _kind(actual) == _kind(expected) and bool(test(actual, expected))
        for actual in _candidates(node)
        for expected in _values(cmp.value)
    )
    return hit != negated


def lookup(metadata: Mapping[str, object], path: tuple[str, ...]) -> object:
    """The value at ``path`` in ``metadata``, or :data:`MISSING`."""
    node: object = metadata
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return MISSING
        node = node[key]
    return node


def _candidates(node: object) -> list[object]:
    """The scalars a comparison looks at: the value itself, or an array's scalar elements."""
    items = node if isinstance(node, list | tuple) else (node,)
    return [_as_sqlite_reads(item) for item in items if _kind(item)]


def _as_sqlite_reads(value: object) -> object:
    """``value`` as SQLite's JSON functions hand it back from JSON text."""
    if isinstance(value, str):
        return value.partition("\0")[0]
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        return _int_as_real(value)
    return value


def _int_as_real(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
