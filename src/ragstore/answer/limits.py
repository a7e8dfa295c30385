"""Client-side limits on the calls to a language model: a rate limiter and a circuit breaker.

:class:`RateLimiter` keeps requests per minute and tokens per minute under their settings
with token buckets that refill continuously and hold one second's worth (at least one
request), so a minute's allowance is spread over the minute rather than spent in a burst
(providers enforce per-minute limits over shorter periods too). A call books its room
before it is sent and then waits its turn, so callers are served in order of booking; a
call whose turn is further away than it may wait books nothing and is shed. Without a
file the buckets live in the process; with one they live in a small SQLite database that
the worker processes of one server share, each booking one ``BEGIN IMMEDIATE``
transaction.

:class:`CircuitBreaker` stops calling an endpoint that keeps failing: after ``failures``
consecutive failed calls it opens and refuses calls at once; ``reset_s`` later it lets one
trial call through (half-open), whose success closes it and whose failure opens it again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragstore.errors import InvalidConfig, LLMError

_SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, level REAL, at REAL)"
_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``per_minute`` units refill continuously; it holds at most one
    second's worth (at least one unit). A booking waits until the bucket holds its cost
    (or is full, for a cost above the capacity), then takes the whole cost, so the level
    may fall below zero and later bookings wait longer."""

    key: str
    per_minute: float

    @property
    def rate(self) -> float:
        """Units per second."""
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        """Most units the bucket holds."""
        return max(1.0, self.rate)

    def refilled(self, level: float, at: float, now: float) -> float:
        """The level at ``now`` of a bucket that held ``level`` at ``at``."""
        return min(self.capacity, level + max(0.0, now - at) * self.rate)

    def wait(self, level: float, cost: float) -> float:
        """Seconds until a bucket at ``level`` has room for ``cost``."""
        return max(0.0, (min(cost, self.capacity) - level) / self.rate)


class RateLimiter:
    """Requests per minute and tokens per minute for one endpoint and model (``key``).

    ``path`` is a file shared by the processes that share the limits; ``None`` keeps
    them in this process (shared by every limiter of the same key in it).
    """

    def __init__(
        self,
        key: str,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        path: Path | None = None,
    ) -> None:
        self._requests = Bucket(f"{key}|requests", requests_per_minute or 0.0)
        self._tokens = Bucket(f"{key}|tokens", tokens_per_minute or 0.0)
        self._limits_requests = requests_per_minute is not None
        self._limits_tokens = tokens_per_minute is not None
        self._store: _Levels = _SqliteLevels(path) if path is not None else _MEMORY

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self._limits_requests or self._limits_tokens

    def reserve(self, tokens: int, max_wait: float) -> float:
        """Book room for one request of ``tokens`` tokens; the seconds to wait before
        sending it.

        Raises:
            LLMError: ``reason="shed"`` when the room comes later than ``max_wait``
                seconds from now (nothing is booked; ``retry_after`` says when it comes).
        """
        costs = [(self._requests, 1.0)] if self._limits_requests else []
        if self._limits_tokens:
            costs.append((self._tokens, float(tokens)))
        if not costs:
            return 0.0
        return self._store.book(costs, max_wait)

    def close(self) -> None:
        """Close the shared file, if any."""
        self._store.close()


class _Levels:
    """Bucket levels in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float]] = {}

    def book(self, costs: list[tuple[Bucket, float]], max_wait: float) -> float:
        """Take ``costs`` from their buckets unless that means waiting over ``max_wait``;
        the seconds to wait."""
        with self._lock:
            now = time.monotonic()
            stored = {bucket.key: self._levels.get(bucket.key) for bucket, _ in costs}
            wait, updates = _booking(costs, stored, now, max_wait)
            self._levels.update(updates)
            return wait

    def close(self) -> None:
        """Nothing to close."""


class _SqliteLevels(_Levels):
    """Bucket levels in a SQLite file shared by processes (wall-clock times)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidConfig(
                f"the limiter file {path} cannot be used: {exc}", field="RAGSTORE_LLM_LIMITER_PATH"
            ) from None

    def book(self, costs: list[tuple[Bucket, float]], max_wait: float) -> float:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                stored = {bucket.key: self._read(bucket.key) for bucket, _ in costs}
                wait, updates = _booking(costs, stored, now, max_wait)
                self._db.executemany(
                    "INSERT OR REPLACE INTO buckets (key, level, at) VALUES (?, ?, ?)",
                    [(key, level, at) for key, (level, at) in updates.items()],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return wait

    def _read(self, key: str) -> tuple[float, float] | None:
        row = self._db.execute("SELECT level, at FROM buckets WHERE key = ?", (key,)).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


_MEMORY = _Levels()


def _level(bucket: Bucket, stored: tuple[float, float] | None, now: float) -> float:
    """A bucket's level at ``now``; full when never used."""
    return bucket.capacity if stored is None else bucket.refilled(*stored, now)


def _wait_of(
    costs: list[tuple[Bucket, float]], stored: dict[str, tuple[float, float] | None], now: float
) -> float:
    """Seconds until every bucket has room for its cost (levels as read before booking)."""
    return max(bucket.wait(_level(bucket, stored[bucket.key], now), cost) for bucket, cost in costs)


def _booking(
    costs: list[tuple[Bucket, float]],
    stored: dict[str, tuple[float, float] | None],
    now: float,
    max_wait: float,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """The seconds until there is room for ``costs`` and the levels after taking them
    at ``now``; :class:`LLMError` ``shed`` when the room comes later than ``max_wait``."""
    wait = _wait_of(costs, stored, now)
    if wait > max_wait:
        raise LLMError(
            f"the rate limiter has no room for {wait:.1f} s, more than the {max_wait:.1f} s "
            "a call may wait",
            reason="shed",
            retry_after=wait,
        )
    levels = {
        bucket.key: (_level(bucket, stored[bucket.key], now) - cost, now) for bucket, cost in costs
    }
    return wait, levels


BreakerListener = Callable[[str], None]
"""Told each new state of a breaker: ``"closed"``, ``"open"`` or ``"half_open"``."""


class CircuitBreaker:
    """Closed, open or half-open; see the module docstring.

    Call :meth:`before` before a call (it raises while open), then one of
    :meth:`succeeded`, :meth:`failed` or :meth:`abandoned` (the call was not made).
    """

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._lock = threading.Lock()
        self._state = "closed"
        self._failed = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        return self._state

    def before(self, on_change: BreakerListener) -> None:
        """Let a call through, or raise :class:`LLMError` ``breaker_open``."""
        with self._lock:
            changed = self._may_try()
            state = self._state
            refused = self._state == "open" or (self._state == "half_open" and self._trial)
            if not refused and self._state == "half_open":
                self._trial = True
            wait = max(0.0, self._opened_at + self.reset_s - time.monotonic())
        if changed:
            on_change(state)
        if refused:
            raise LLMError(
                f"the endpoint failed {self.failures} calls in a row; it is not called "
                f"for {self.reset_s:g} s after a failure",
                reason="breaker_open",
                retry_after=wait,
            )

    def succeeded(self, on_change: BreakerListener) -> None:
        """The call got an answer: close."""
        with self._lock:
            self._failed, self._trial = 0, False
            changed = self._state != "closed"
            self._state = "closed"
        if changed:
            on_change("closed")

    def failed(self, on_change: BreakerListener) -> None:
        """The call failed: count it, and open after too many or after a failed trial."""
        with self._lock:
            self._failed += 1
            opens = self._state == "half_open" or (
                self._state == "closed" and self._failed >= self.failures
            )
            self._trial = False
            if opens:
                self._state, self._opened_at = "open", time.monotonic()
        if opens:
            on_change("open")

    def abandoned(self) -> None:
        """The call let through was not made (it was shed): free the trial."""
        with self._lock:
            self._trial = False

    def _may_try(self) -> bool:
        """Half-open once ``reset_s`` passed since opening; whether the state changed."""
        if self._state == "open" and time.monotonic() - self._opened_at >= self.reset_s:
            self._state, self._trial = "half_open", False
            return True
        return False


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(key: str, failures: int, reset_s: float) -> CircuitBreaker:
    """The breaker of ``key`` (an endpoint and model) in this process."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(key)
        if breaker is None or (breaker.failures, breaker.reset_s) != (failures, reset_s):
            breaker = _BREAKERS[key] = CircuitBreaker(failures, reset_s)
        return breaker
