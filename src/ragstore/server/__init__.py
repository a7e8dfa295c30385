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

from ragstore.server.app import create_app
from ragstore.server.run import serve
from ragstore.server.settings import Limits, ServerSettings

__all__ = ["Limits", "ServerSettings", "create_app", "serve"]
