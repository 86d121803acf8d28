"""Client-side pacing for requests per minute and tokens per minute.

Why: an account has per-minute request and token limits. Sending as fast as the concurrency
bound allows just collects 429s, and each 429 the SDK gives up on costs a conversation an
attempt. Pacing on our side keeps a large run under the limits instead.

The limiter is a sliding-window log: at most `requests_per_minute` calls and
`tokens_per_minute` tokens start within any `period` seconds, measured by the client. A call
reserves its estimated tokens up front (characters / 4 plus the expected answer, since
tiktoken cannot be downloaded here) and `settle()` replaces the estimate with the real usage
afterwards. `pause()` holds every caller back after a 429 until the server's Retry-After
has passed. Waiters are served first come, first served.

Concurrency: safe for any number of coroutines of one event loop; if it is used from a new
loop (a later `asyncio.run`) it takes a fresh lock and keeps its window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Reservation:
    """One admitted call: when it started and the tokens it is counted for."""

    started_at: float
    tokens: int
    in_window: bool = True


class RateLimiter:
    """Sliding-window limiter for requests and tokens per `period` (default one minute)."""

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._window: deque[Reservation] = deque()
        self._window_tokens = 0
        self._paused_until = 0.0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.waited_seconds = 0.0  # total time callers spent waiting here (for run metadata)

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
        return self._lock

    def _prune(self, now: float) -> None:
        while self._window and self._window[0].started_at <= now - self.period:
            expired = self._window.popleft()
            expired.in_window = False
            self._window_tokens -= expired.tokens

    def _wait_time(self, now: float, tokens: int) -> float:
        """Seconds until a call of `tokens` may start (0 when it may start now)."""
        wait = max(0.0, self._paused_until - now)
        window = self._window
        rpm = self.requests_per_minute
        if rpm is not None and len(window) >= rpm:
            wait = max(wait, window[len(window) - rpm].started_at + self.period - now)
        tpm = self.tokens_per_minute
        if tpm is not None and self._window_tokens + tokens > tpm:
            # A call larger than the whole budget waits for an empty window rather than forever.
            allowed = max(0, tpm - tokens)
            remaining = self._window_tokens
            for entry in window:
                remaining -= entry.tokens
                if remaining <= allowed:
                    wait = max(wait, entry.started_at + self.period - now)
                    break
        return wait

    async def acquire(self, tokens: int = 0) -> Reservation:
        """Wait until a call of about `tokens` tokens fits the limits, then count it."""
        tokens = max(0, int(tokens))
        async with self._get_lock():
            while True:
                now = self._clock()
                self._prune(now)
                wait = self._wait_time(now, tokens)
                if wait <= 0:
                    break
                self.waited_seconds += wait
                await self._sleep(wait)
            reservation = Reservation(now, tokens)
            self._window.append(reservation)
            self._window_tokens += tokens
            return reservation

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace a reservation's estimate by the tokens the server reported."""
        actual_tokens = max(0, int(actual_tokens))
        if reservation.in_window:
            self._window_tokens += actual_tokens - reservation.tokens
        reservation.tokens = actual_tokens

    def remaining_pause(self) -> float:
        """Seconds left of the current Retry-After pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every new call back for `seconds` (a server Retry-After), never shortening one."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


__all__ = ["RateLimiter", "Reservation"]
