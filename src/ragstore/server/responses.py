"""The JSON response every route returns: compact, UTF-8, numpy values as numbers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse


class JSON(JSONResponse):
    """A JSON response that also renders numpy scalars and arrays (found in plans)."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; non-finite floats become ``null``."""
        text = json.dumps(
            _finite(content), ensure_ascii=False, allow_nan=False, default=_plain,
            separators=(",", ":"),
        )  # fmt: skip
        return text.encode("utf-8")


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
