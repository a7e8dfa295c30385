"""The JSON response every route returns: compact, UTF-8, numpy values as numbers.

Serialised by pydantic-core (Rust, installed with FastAPI), several times faster than
``json.dumps`` on a page of hits; non-finite floats become ``null``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic_core import to_json

from ragstore.types import Hit

_HIT_FIELDS = tuple(f.name for f in dataclasses.fields(Hit))


class JSON(JSONResponse):
    """A JSON response that also renders numpy scalars and arrays (found in plans)."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; non-finite floats become ``null``."""
        return json_bytes(content)


def json_bytes(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON, as every response writes it."""
    return to_json(content, inf_nan_mode="null", fallback=_plain)


def hit_dict(hit: Hit) -> dict[str, Any]:
    """The JSON form of a hit: ``Hit.to_dict`` without its deep copy (``asdict``), which
    costs more than the rest of a cached search."""
    return {name: getattr(hit, name) for name in _HIT_FIELDS}


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
