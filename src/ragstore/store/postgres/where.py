"""The filter language (:mod:`ragstore.filters`) as PostgreSQL boolean expressions.

Each comparison becomes one ``jsonb_path_exists`` call in ``strict`` mode over the
documents' ``metadata`` JSONB column. Strict mode makes a path step only into objects
(``"tags.0"`` is a key named ``0``, never an index), and its comparisons are typed the
way :func:`ragstore.filters.matches` wants: a string never equals a number, ``true`` is
not ``1``, ``null`` equals only ``null``. A field holding an array matches when any of
its scalar elements does. The operands travel as a bound ``vars`` object, the path as a
bound ``jsonpath``: nothing the user wrote is formatted into the SQL text.

Two things set JSONB apart from the SQLite reads the filter language is defined by, and
are evened out where the metadata is written (:func:`stored_json`): a JSON number is an
exact decimal in JSONB, so every float is stored as its exact binary value (and filter
floats are sent so too), integers past 64 bits as the float SQLite reads them as; and
JSONB cannot hold NUL, so strings are cut at their first NUL, as SQLite reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

from ragstore.errors import InvalidInput
from ragstore.filters import Compare, Filter, Scalar, compile_tree

__all__ = ["compile_where", "stored_json"]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INFINITY: Final = "1e400"
"""Stands in for an infinite float: past every finite float, which is all a filter holds."""

_ORDERINGS: Final = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NEGATIONS: Final = {"$ne": "$eq", "$nin": "$in"}


# --------------------------------------------------------------------------- writing


def stored_json(metadata: Mapping[str, object]) -> str | None:
    """The metadata as JSON text for the ``metadata`` JSONB column, or ``None`` when
    the plain JSON text can be stored as it is (no float, no integer past 64 bits, no
    NUL anywhere)."""
    if _is_plain(metadata):
        return None
    return _normal(metadata)


def _is_plain(value: object) -> bool:
    if isinstance(value, str):
        return "\0" not in value
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, Mapping):
        return all("\0" not in key and _is_plain(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    return False


def _normal(value: object) -> str:
    """JSON text of ``value`` as the filters must see it (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return _exact_number(value)
    if isinstance(value, str):
        return json.dumps(value.partition("\0")[0], ensure_ascii=False)
    if isinstance(value, Mapping):
        members = (
            f"{json.dumps(key, ensure_ascii=False)}:{_normal(item)}"
            for key, item in value.items()
            if "\0" not in key  # no filter path can name such a key
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_normal(item) for item in value) + "]"
    raise InvalidInput(f"metadata cannot hold {type(value).__name__}", field="metadata")


def _exact_number(value: int | float) -> str:
    """A number as the exact decimal of what SQLite reads it as."""
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return str(value)
        value = _int_as_real(value)
    if math.isnan(value):
        raise InvalidInput("metadata cannot hold NaN", field="metadata")
    if math.isinf(value):
        return _INFINITY if value > 0 else "-" + _INFINITY
    return str(Decimal(value))


def _int_as_real(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


# --------------------------------------------------------------------------- reading


def compile_where(flt: Filter, column: str) -> tuple[str, list[object]]:
    """Compile ``flt`` to a PostgreSQL boolean expression over the JSONB ``column`` (a
    trusted identifier such as ``"d.metadata"``), with its ``%s`` parameters in order.

    The expression is never NULL, so ``NOT (expr)`` selects exactly the other rows.
    """
    return compile_tree(flt, lambda cmp: _compare(cmp, column))


def _compare(cmp: Compare, column: str) -> tuple[str, list[object]]:
    path = "strict $" + "".join(f'."{key}"' for key in cmp.path)
    if cmp.op == "$exists":
        sql = f"COALESCE(jsonb_path_exists({column}, %s::jsonpath, '{{}}'::jsonb, true), false)"
        return (sql if cmp.value else f"(NOT {sql})"), [path]
    op = _NEGATIONS.get(cmp.op, cmp.op)
    test, variables = _test(op, cmp.value)
    params: list[object] = []
    if test is None:  # nothing can match (a NUL in every string asked for)
        sql = "false"
    else:
        query = (
            f'{path} ? ((@.type() != "array" && ({test})) || '
            f'(@.type() == "array" && exists (@[*] ? ({test}))))'
        )
        sql = f"COALESCE(jsonb_path_exists({column}, %s::jsonpath, %s::jsonb, true), false)"
        params = [query, variables]
    return (f"(NOT {sql})" if cmp.op in _NEGATIONS else sql), params


def _test(op: str, value: Scalar | tuple[Scalar, ...]) -> tuple[str | None, str]:
    """The jsonpath predicate on one candidate ``@`` and the JSON text of its variables."""
    if op in _ORDERINGS:
        assert isinstance(value, int | float | str) and not isinstance(value, bool)
        return _ordering(_ORDERINGS[op], value)
    values = value if isinstance(value, tuple) else (value,)
    return _membership(values)


def _ordering(symbol: str, value: int | float | str) -> tuple[str | None, str]:
    if isinstance(value, str) and "\0" in value:
        # Stored strings hold no NUL: against "p\0q" they order exactly as against "p",
        # save that none equals it (t < "p\0q" iff t <= "p"; t > "p\0q" iff t > "p").
        value = value.partition("\0")[0]
        symbol = ">" if symbol.startswith(">") else "<="
    operand = _exact_number(value) if not isinstance(value, str) else _string(value)
    return f"@ {symbol} $v", '{"v":' + operand + "}"


def _membership(values: Sequence[Scalar]) -> tuple[str | None, str]:
    tests: list[str] = []
    numbers = [
        _exact_number(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    strings = [_string(v) for v in values if isinstance(v, str) and "\0" not in v]
    if numbers:
        tests.append("@ == $n[*]")
    if strings:
        tests.append("@ == $s[*]")
    for literal in ("null", "true", "false"):
        if any(json.dumps(v) == literal for v in values if v is None or isinstance(v, bool)):
            tests.append(f"@ == {literal}")
    variables = '{"n":[' + ",".join(numbers) + '],"s":[' + ",".join(strings) + "]}"
    return (" || ".join(tests) or None), variables


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)
