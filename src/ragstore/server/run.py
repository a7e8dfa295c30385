"""Start the server: check the keys and the address, configure logs, run uvicorn.

Without keys the server runs only on a loopback address, and says so at start-up.
SIGTERM or SIGINT stop it gracefully: no new connections, in-flight requests finish
(up to ``graceful_timeout_s``), the running ingest job stops after its current
batch, and the store is closed.

With ``workers`` above 1, uvicorn starts that many worker processes on one listening
socket, each with its own interpreter (so its own GIL), store connection and copy of
the vector indexes in memory; it restarts one that dies, and passes SIGTERM on to all
of them. They share a temporary run folder: the ingest job board and the Prometheus
multiprocess files. A worker reads its settings from the environment.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from ragstore.answer.llm import LIMITER_PATH_VAR
from ragstore.errors import InvalidConfig
from ragstore.server.app import create_app
from ragstore.server.auth import load_keys
from ragstore.server.logs import configure
from ragstore.server.settings import ServerSettings, is_loopback

log = logging.getLogger("ragstore.server")

SETTINGS_ENV = "RAGSTORE_SERVER_SETTINGS"
RUN_DIR_ENV = "RAGSTORE_SERVER_RUN_DIR"


def serve(settings: ServerSettings) -> None:
    """Run the server until it is told to stop."""
    keys = load_keys(settings.keys_file, settings.keys_json)
    if not keys and not is_loopback(settings.host):
        raise InvalidConfig(
            f"refusing to serve on {settings.host} without API keys: give --keys FILE "
            "(or RAGSTORE_KEYS), or listen on a loopback address",
            field="keys",
        )
    _check_address(settings.host, settings.port)
    configure()
    if not keys:
        log.warning(
            "authentication is OFF: no API keys configured; every caller on this machine "
            "is an admin of every tenant (allowed on loopback %s only)",
            settings.host,
        )
    else:
        log.info("authentication on", extra={"keys": len(keys)})
    # loop and (for one worker) http stay "auto": uvicorn takes uvloop and httptools
    # (installed with ragstore[server]; about 20% more cached answers per second than
    # asyncio and h11); several workers use httptools through BalancedHttpProtocol.
    # No access log: the request middleware writes one JSON line per request.
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.graceful_timeout_s),
        "lifespan": "on",
    }
    if settings.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings, keys), **options)).run()
        return
    with tempfile.TemporaryDirectory(prefix="ragstore-serve-") as run_dir:
        metrics_dir = Path(run_dir, "metrics")
        metrics_dir.mkdir()
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        os.environ[RUN_DIR_ENV] = run_dir
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # the language model's rate limiter is shared by the workers through one file
        os.environ.setdefault(LIMITER_PATH_VAR, str(Path(run_dir, "llm-limits.sqlite")))
        extra = {"workers": settings.workers, "run_dir": run_dir}
        log.info("starting worker processes", extra=extra)
        options["http"] = "ragstore.server.balance:BalancedHttpProtocol"  # see there
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers, **options)


def _check_address(host: str, port: int) -> None:
    """Fail with one clear error, before the store is opened, when the address cannot be
    listened on (a port in use, an address this machine does not have)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidConfig(f"cannot listen on {host}:{port}: {reason}", field="port") from None


def worker_app() -> FastAPI:
    """The app one worker process serves, from the settings :func:`serve` left in the
    environment."""
    settings = ServerSettings.model_validate_json(os.environ[SETTINGS_ENV])
    keys = load_keys(settings.keys_file, settings.keys_json)
    configure()
    return create_app(settings, keys, Path(os.environ[RUN_DIR_ENV]))
