"""ragstore over HTTP: ``ragstore serve`` (FastAPI on uvicorn).

Modules: ``app`` (the application and its middleware), ``routes`` (the ``/v1`` verbs),
``auth`` (API keys), ``tenancy`` (tenants' collection namespaces), ``work`` (bounded
pools), ``jobs`` (ingest jobs), ``metrics``, ``logs``, ``errors`` (the one mapping of
errors to HTTP statuses), ``settings`` and ``run``.

Needs the ``server`` extra: ``pip install 'ragstore[server]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the HTTP server needs fastapi, uvicorn and prometheus-client: "
        "pip install 'ragstore[server]'"
    ) from exc

import importlib
from typing import TYPE_CHECKING, Any

from ragstore.server.settings import Limits, ServerSettings

if TYPE_CHECKING:
    from ragstore.server.app import create_app
    from ragstore.server.run import serve

__all__ = ["Limits", "ServerSettings", "create_app", "serve"]

_LAZY = {"create_app": "ragstore.server.app", "serve": "ragstore.server.run"}


def __getattr__(name: str) -> Any:
    """``create_app`` and ``serve``, imported on first use: importing the package must
    not import ``auth``, or ``python -m ragstore.server.auth`` (the key tool) would run
    a second copy of it and warn."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
