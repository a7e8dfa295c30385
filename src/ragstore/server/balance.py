"""Spread new connections over a server's worker processes.

The workers share one listening socket and race to accept on it. A worker's event loop
accepts every connection waiting when it wakes, so a burst of new connections (eight
clients starting together) can all land on one worker while the other idles: with
keep-alive they then stay there. A worker that already holds a connection therefore
pauses briefly after accepting another, which lets an idle worker take the next one.
The pause blocks this worker's event loop, not its search threads (``time.sleep``
releases the GIL), and only when a connection is opened.
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ACCEPT_PAUSE_S = 0.001


class BalancedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, pausing after a connection it accepts while busy."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Register the connection; pause when this worker already had one."""
        super().connection_made(transport)
        if len(self.connections) > 1:
            time.sleep(ACCEPT_PAUSE_S)
