"""Maintenance that yields the CPU to searches.

Snapshots and re-index builds run on a thread of their own at the lowest CPU priority
(Linux: nice 19, which the threads it starts inherit: the hashing and syncing threads,
FAISS's and torch's thread teams). Where nothing else wants a core they run at full
speed; where searches do, the searches go first: on two cores, search p99 during a
snapshot drops from about 5x idle to about 1.1x (``benchmarks/ops.py``). The price is
that such work crawls while every core is busy with searches.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

LOWEST_PRIORITY = 19
"""The nice value maintenance threads run at."""


def at_low_priority(work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread at the lowest CPU priority, wait for it, and return
    what it returns or raise what it raises. Elsewhere than on Linux (where a nice
    value is a process's, not a thread's) it runs on this thread as it is."""
    if not sys.platform.startswith("linux"):
        return work()
    outcome: Future[T] = Future()

    def run() -> None:
        # On Linux a nice value belongs to the thread: this one only, and its children.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        try:
            outcome.set_result(work())
        except BaseException as exc:
            outcome.set_exception(exc)

    # A daemon: an interrupted caller exits without waiting; what is left behind is
    # what a killed process leaves (an unfinished snapshot, a rolled-back write).
    threading.Thread(target=run, name="ragstore-maintenance", daemon=True).start()
    return outcome.result()
