"""Maintenance work runs on a thread of the lowest CPU priority, and its threads too."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from ragstore.engine.background import LOWEST_PRIORITY, at_low_priority
from ragstore.errors import StoreError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_work_runs_at_the_lowest_priority_and_its_threads_inherit_it() -> None:
    caller = _nice_of_this_thread()
    seen: dict[str, int] = {}

    def work() -> str:
        seen["thread"] = threading.get_native_id()
        seen["nice"] = _nice_of_this_thread()
        child = threading.Thread(target=lambda: seen.update(child=_nice_of_this_thread()))
        child.start()
        child.join()
        return "done"

    assert at_low_priority(work) == "done"
    assert seen["nice"] == seen["child"] == LOWEST_PRIORITY
    assert seen["thread"] != threading.get_native_id()
    assert _nice_of_this_thread() == caller  # the caller keeps its own


def test_an_error_of_the_work_reaches_the_caller() -> None:
    def work() -> None:
        raise StoreError("disk full")

    with pytest.raises(StoreError, match="disk full"):
        at_low_priority(work)
