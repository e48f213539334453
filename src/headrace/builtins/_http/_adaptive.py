"""Per-host concurrency: a fixed limit, or one that adapts (AIMD).

Adaptive: the limit starts at ``ceiling // 4`` (at least 1), grows by one after each window of
``limit`` successes, and halves on a 429/503 or a timeout -- at most once per window, so a
burst of failures from one overload halves it once. A ``Retry-After`` pauses the whole host
until then: no request to it goes out sooner (the retry policy waits too, per request).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import anyio

from headrace.plugin import TransientError

_OVERLOAD = frozenset({429, 503})


class Slots:
    """A counting limit whose size can change (AIMD). Unlike ``anyio.CapacityLimiter``,
    taking a free place does not yield to the loop: two of them per request cost a
    measurable share of a fast API's throughput. Asyncio only (as the engine runs)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    async def acquire(self) -> None:
        if self.used < self._limit and not self._waiters:
            self.used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the place came just as this was cancelled: pass it on
            else:
                waiter.cancel()  # left in the queue; _wake skips it
            raise

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


class AdaptiveLimit:
    def __init__(self, ceiling: int, *, adaptive: bool = False) -> None:
        self.ceiling = ceiling
        self.adaptive = adaptive
        start = max(1, ceiling // 4) if adaptive else ceiling
        self.slots = Slots(start)
        self._successes = 0
        self._last_decrease = 0.0
        self._latency = 0.0  # smoothed seconds per request: the decrease window
        self.paused_until = 0.0

    @property
    def limit(self) -> int:
        return self.slots.limit

    async def acquire(self) -> None:
        """Take one of the host's slots once its ``Retry-After`` pause is over: waiting holds
        no slot, and the caller's timeout (which starts after this) does not run meanwhile."""
        if not self.adaptive:
            await self.slots.acquire()
            return
        while True:
            await self.wait_if_paused()
            await self.slots.acquire()
            if self.paused_until <= time.monotonic():
                return
            self.slots.release()  # a 429 paused the host while this waited for the slot

    def release(self) -> None:
        self.slots.release()

    async def wait_if_paused(self) -> None:
        """Hold back while the host's ``Retry-After`` runs (only when adaptive)."""
        left = self.paused_until - time.monotonic()
        while left > 0:  # the pause may grow while we sleep
            await anyio.sleep(left)
            left = self.paused_until - time.monotonic()

    def observe(self, error: BaseException | None, elapsed: float) -> None:
        """Feed one attempt's outcome: None for a success."""
        if not self.adaptive:
            return
        self._latency = elapsed if not self._latency else 0.8 * self._latency + 0.2 * elapsed
        if error is None:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.ceiling:
                self._successes = 0
                self.slots.limit = self.limit + 1
            return
        status = getattr(error, "status", None)
        overloaded = status in _OVERLOAD or isinstance(error, TimeoutError)
        if not overloaded:
            return
        retry_after = getattr(error, "retry_after", None)
        now = time.monotonic()
        if isinstance(error, TransientError) and retry_after:
            self.paused_until = max(self.paused_until, now + retry_after)
        if now - self._last_decrease < max(self._latency, 0.05):
            return
        self._last_decrease = now
        self._successes = 0
        self.slots.limit = self.limit // 2
