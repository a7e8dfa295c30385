"""Bounded thread pools for CPU-bound work, so the event loop never blocks on it.

A pool runs at most ``workers`` calls at once and lets at most ``queue`` more wait.
When both are taken, :meth:`WorkPool.run` refuses at once with 429 and
``Retry-After`` instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ragstore.server.errors import ApiError

T = TypeVar("T")


class WorkPool:
    """A thread pool with an admission limit."""

    def __init__(
        self,
        name: str,
        workers: int,
        queue: int,
        retry_after_s: int,
        on_reject: Callable[[str], None] = lambda _: None,
        on_depth: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.name = name
        self.capacity = workers + queue
        self.workers = workers
        self._retry_after = str(retry_after_s)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"ragstore-{name}")
        self._lock = threading.Lock()
        self._admitted = 0
        self._on_reject = on_reject
        self._on_depth = on_depth
        on_depth(0)

    @property
    def waiting(self) -> int:
        """Calls admitted but not yet running."""
        return max(self._admitted - self.workers, 0)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the pool and await its result; 429 when the pool is full. It
        runs in a copy of the caller's context, so its log lines name the request."""
        self._admit()
        try:
            future = self._executor.submit(contextvars.copy_context().run, fn)
        except RuntimeError:  # shutting down
            self._release()
            raise ApiError(503, "server is shutting down", headers={"Retry-After": "1"}) from None
        # released when the call ends, not when the caller stops waiting for it
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1
            self._on_depth(self._admitted)

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.capacity:
                self._on_reject(self.name)
                raise ApiError(
                    429,
                    f"server busy: {self.name} queue is full, retry later",
                    headers={"Retry-After": self._retry_after},
                )
            self._admitted += 1
            self._on_depth(self._admitted)

    def shutdown(self) -> None:
        """Finish what is running and queued, then stop the threads."""
        self._executor.shutdown(wait=True)
