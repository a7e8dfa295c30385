"""Run the real server in a subprocess (``ragstore serve`` on a free loopback port)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from conftest import RAGSTORE_BIN

import ragstore
import ragstore.errors
from ragstore.server.auth import hash_key

READY_TIMEOUT_S = 120.0


ERROR_KEYS = {"type", "message", "field"}
"""What every error body holds; a ragstore error adds ``class`` (and a dimension
mismatch ``expected`` and ``got``)."""


def check_error_body(error: dict[str, Any]) -> None:
    """``error`` has the one shape every failure uses."""
    assert ERROR_KEYS <= set(error) <= ERROR_KEYS | {"class", "expected", "got"}, error
    if "class" in error:
        named = getattr(ragstore.errors, error["class"], None)
        assert isinstance(named, type) and issubclass(named, ragstore.RagstoreError), error


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_keys(path: Path, keys: Mapping[str, Mapping[str, Any]]) -> Path:
    """A key file admitting ``keys`` (key -> entry without the hash)."""
    entries = [{"sha256": hash_key(key), **entry} for key, entry in keys.items()]
    path.write_text(json.dumps({"keys": entries}), encoding="utf-8")
    return path


class Server:
    """``ragstore serve`` in a subprocess, with its log captured to a file."""

    def __init__(
        self,
        store: str | Path,
        log: Path,
        *,
        keys: Path | None = None,
        limits: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        workers: int = 1,
    ) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        args = [RAGSTORE_BIN, "--store", str(store), "serve", "--host", host]
        args += ["--port", str(self.port)]
        if keys is not None:
            args += ["--keys", str(keys)]
        if limits:
            args += ["--limits", json.dumps(limits)]
        if workers != 1:
            args += ["--workers", str(workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_KEYS")}
        self._log = log.open("wb")
        # a session of its own, so that kill() reaches worker processes too
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Server:
        """Block until ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.logs()}")

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for this server, sending ``key`` as a bearer token."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def logs(self) -> str:
        """Everything the server has written so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the process to exit; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Stop it and its worker processes hard (used only when a test failed)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far (other output skipped)."""
        lines = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):  # a line being written
                    lines.append(json.loads(line))
        return lines

    def pid_of(self, request_id: str) -> int | None:
        """The worker process that served the request with this ``X-Request-ID``."""
        for line in self.log_lines():
            if line.get("request_id") == request_id and line.get("msg") == "request":
                return int(line["pid"])
        return None


@contextlib.contextmanager
def serving(root: Path, keys: Mapping[str, Mapping[str, Any]], **options: Any) -> Iterator[Server]:
    """A ready server on the store ``root/store`` admitting ``keys``; it must stop
    cleanly when the block ends."""
    running = Server(
        root / "store", root / "server.log", keys=write_keys(root / "keys.json", keys), **options
    )
    try:
        yield running.wait_ready()
    finally:
        assert running.terminate() in (0, -signal.SIGTERM), running.logs()


ADMIN_KEYS = {"k-admin": {"id": "admin", "role": "admin", "tenants": ["*"]}}


@contextlib.contextmanager
def remote_admin_store(root: Path) -> Iterator[ragstore.RemoteStore]:
    """A store on a real server on ``root/store``, opened through ``ragstore.connect``
    with a key that is admin of every tenant."""
    with (
        serving(root, ADMIN_KEYS) as server,
        ragstore.connect(server.url, api_key="k-admin") as store,
    ):
        yield store
