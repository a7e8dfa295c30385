"""Start the server: check the keys and the address, configure logs, run uvicorn.

Without keys the server runs only on a loopback address, and says so at start-up.
SIGTERM or SIGINT stop it gracefully: no new connections, in-flight requests finish
(up to ``graceful_timeout_s``), the running ingest job stops after its current
batch, and the store is closed.
"""

from __future__ import annotations

import logging

import uvicorn

from ragstore.errors import InvalidConfig
from ragstore.server.app import create_app
from ragstore.server.auth import load_keys
from ragstore.server.logs import configure
from ragstore.server.settings import ServerSettings, is_loopback

log = logging.getLogger("ragstore.server")


def serve(settings: ServerSettings) -> None:
    """Run the server until it is told to stop."""
    keys = load_keys(settings.keys_file, settings.keys_json)
    if not keys and not is_loopback(settings.host):
        raise InvalidConfig(
            f"refusing to serve on {settings.host} without API keys: give --keys FILE "
            "(or RAGSTORE_KEYS), or listen on a loopback address",
            field="keys",
        )
    configure()
    if not keys:
        log.warning(
            "authentication is OFF: no API keys configured; every caller on this machine "
            "is an admin of every tenant (allowed on loopback %s only)",
            settings.host,
        )
    else:
        log.info("authentication on", extra={"keys": len(keys)})
    app = create_app(settings, keys)
    # http and loop stay "auto": uvicorn takes httptools and uvloop (installed with
    # ragstore[server]; about 20% more cached answers per second than h11 and asyncio).
    # No access log: the request middleware writes one JSON line per request.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        lifespan="on",
    )
    uvicorn.Server(config).run()
