"""A step's resilience policies around each call: breaker, rate limit, concurrency slot,
timeout, and retries with exponential backoff and full jitter.

Written here rather than on tenacity/stamina: their attempt loops catch ``BaseException``
(cancellation included) and re-raise it later, and this loop must also give the concurrency
slot back while it waits, take a server's ``Retry-After`` as a floor, and share an injected
clock with the breaker (decision 0008).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import anyio
import anyio.from_thread

from headrace.config import BreakerPolicy, Policies
from headrace.plugin import (
    BreakerOpen,
    Clock,
    RetriesExhausted,
    SystemClock,
    TransientError,
    cancellation_point,
)

from ._events import BreakerChanged, Event, RateLimited, RetryScheduled

T = TypeVar("T")
HALF_OPEN_POLL = 0.05  # seconds between checks while half-open probes are all taken


def wall_time(at: float | None = None) -> str:
    """An ISO time (now, or ``at`` from ``time.time()``) for dead-letter records."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds")


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1): uniform in
    [0, min(cap, base * 2**(attempt-1))] -- AWS's "full jitter", which spreads retries best."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return rng.uniform(0.0, ceiling)


def retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) and value >= 0 else None


class CircuitBreaker:
    """closed -> open after ``failures`` consecutive transient failures (or a failure rate over
    the last ``window`` calls); open -> half_open after ``reset_after``; half_open lets
    ``half_open_calls`` probes through: a success closes it, a failure opens it again.

    Only a probe decides a half-open breaker: ``enter`` hands each probe a ticket (the number of
    the opening it probes) for ``leave``. A call that began before the breaker opened and ends
    while it is half-open neither frees a probe place nor closes the breaker.
    """

    def __init__(self, policy: BreakerPolicy, clock: Clock,
                 on_change: Callable[[str], None] = lambda state: None) -> None:
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.state = "closed"
        self.consecutive = 0
        self.outcomes: deque[bool] = deque(maxlen=policy.window)  # True = failed
        self.opened_at = 0.0
        self.openings = 0  # times opened: a probe's ticket names the opening it probes
        self.probes = 0

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.on_change(state)

    def try_enter(self) -> float:
        """0.0 when a call may go ahead now (a probe when half-open); else seconds to wait."""
        if self.state == "open":
            remaining = self.opened_at + self.policy.reset_after - self.clock.now()
            if remaining > 0:
                return remaining
            self._set("half_open")
            self.probes = 0
        if self.state == "half_open":
            if self.probes >= self.policy.half_open_calls:
                return HALF_OPEN_POLL
            self.probes += 1
        return 0.0

    def leave(self, failed: bool | None, probe: int | None = None) -> None:
        """A call entered with ``enter`` ended: True failed (transient), False succeeded,
        None neither (cancelled, or a terminal error that says nothing about the service).
        ``probe`` is the ticket ``enter`` returned (None: the call was not a probe)."""
        is_probe = probe is not None and probe == self.openings and self.state == "half_open"
        if is_probe:
            self.probes = max(0, self.probes - 1)
        if failed is None:
            return
        if is_probe:
            if failed:
                self._open()
            else:
                self.consecutive = 0
                self.outcomes.clear()
                self._set("closed")
            return
        self.outcomes.append(failed)
        self.consecutive = self.consecutive + 1 if failed else 0
        if self.state == "closed" and (self.consecutive >= self.policy.failures
                                       or self._rate_exceeded()):
            self._open()

    def _rate_exceeded(self) -> bool:
        rate = self.policy.failure_rate
        if rate is None or len(self.outcomes) < self.policy.window:
            return False
        return sum(self.outcomes) / len(self.outcomes) >= rate

    def _open(self) -> None:
        self.opened_at = self.clock.now()
        self.openings += 1
        self.probes = 0
        self._set("open")

    async def enter(self) -> int | None:
        """Wait until a call may go ahead; ``BreakerOpen`` after ``max_wait`` seconds. Returns
        the probe ticket for ``leave`` when the call is a half-open probe, else None."""
        deadline = self.clock.now() + self.policy.max_wait
        while (wait := self.try_enter()) > 0:
            left = deadline - self.clock.now()
            if left <= 0:
                raise BreakerOpen(f"circuit breaker open for more than "
                                  f"{self.policy.max_wait:g} s")
            await self.clock.sleep(min(wait, left))
        # try_enter just returned 0.0 without an await since: half-open means a probe place
        return self.openings if self.state == "half_open" else None


class StepPolicy:
    """Applies one step's ``Policies`` to calls; per-key breakers and rate limiters."""

    def __init__(
        self,
        step_id: str,
        policies: Policies,
        *,
        concurrency: int | None = None,
        transient: tuple[type[BaseException], ...] = (),
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.step_id = step_id
        self.policies = policies
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.transient = (TransientError, TimeoutError, ConnectionError, *transient)
        self.slots = anyio.CapacityLimiter(concurrency) if concurrency else None
        self.emit: Callable[[Event], None] = lambda event: None
        self.retries = 0
        self._retries_lock = threading.Lock()  # counted on the loop and in worker threads
        self.in_flight = 0
        self.breakers: dict[str, CircuitBreaker] = {}
        self._limiters: dict[str, object] = {}

    @property
    def active(self) -> bool:
        """False when no policy would change a call: the engine then skips the wrapper."""
        p = self.policies
        return bool(p.timeout or p.retry.attempts > 1 or p.breaker or p.rate_limit)

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.transient):
            return True
        names = self.policies.retry.retry_on
        return bool(names) and any(cls.__name__ in names for cls in type(exc).__mro__)

    def breaker_for(self, key: str) -> CircuitBreaker | None:
        policy = self.policies.breaker
        if policy is None:
            return None
        breaker = self.breakers.get(key)
        if breaker is None:
            def changed(state: str) -> None:
                self.emit(BreakerChanged(self.step_id, key, state))

            breaker = self.breakers[key] = CircuitBreaker(policy, self.clock, changed)
        return breaker

    async def _rate_limit(self, key: str) -> None:
        policy = self.policies.rate_limit
        if policy is None:
            return
        from aiolimiter import AsyncLimiter

        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = AsyncLimiter(policy.rate, policy.per)
        assert isinstance(limiter, AsyncLimiter)
        if limiter.has_capacity():
            await limiter.acquire()
            return
        started = time.monotonic()
        await limiter.acquire()
        self.emit(RateLimited(self.step_id, key, time.monotonic() - started))

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        key: str | None = None,
        slots: anyio.CapacityLimiter | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails for good, or runs out of attempts. Each attempt
        holds one of ``slots`` (default: the policy's own); waiting for a backoff, a breaker or
        a rate limit holds none."""
        key = key or self.step_id
        retry = self.policies.retry
        breaker = self.breaker_for(key)
        started_at = time.time()  # formatted only if the call gives up
        limiter = slots or self.slots
        timeout = self.policies.timeout
        attempt = 0
        while True:
            attempt += 1
            probe: int | None = None
            if breaker is not None:
                try:
                    probe = await breaker.enter()
                except BreakerOpen as exc:
                    raise RetriesExhausted(exc, attempt - 1, wall_time(started_at),
                                           wall_time()) from exc
            failed: bool | None = None
            try:
                if self.policies.rate_limit is not None:
                    await self._rate_limit(key)
                # The attempt itself, inline: every coroutine frame between the caller and
                # the I/O is paid again at each of the call's suspensions.
                if limiter is not None:
                    await limiter.acquire()
                self.in_flight += 1
                try:
                    if timeout is None:
                        result = await fn()
                    else:
                        try:
                            with anyio.fail_after(timeout):
                                result = await fn()
                        except TimeoutError as exc:
                            if str(exc):
                                raise
                            # fail_after's own says nothing; the dead letter should.
                            raise TimeoutError(f"no result within the timeout of "
                                               f"{timeout:g} s") from None
                finally:
                    self.in_flight -= 1
                    if limiter is not None:
                        limiter.release()
                failed = False
                return result
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                failed = True
                if attempt >= retry.attempts:
                    raise RetriesExhausted(exc, attempt, wall_time(started_at),
                                           wall_time()) from exc
                delay = full_jitter(attempt, retry.base, retry.cap, self.rng)
                floor = retry_after(exc)
                if floor is not None:
                    delay = max(delay, floor)
                error_name = type(exc).__name__
            finally:
                if breaker is not None:
                    breaker.leave(failed, probe)
            with self._retries_lock:  # worker threads count too (retry_blocking)
                self.retries += 1
            self.emit(RetryScheduled(self.step_id, attempt, delay, error_name))
            await self.clock.sleep(delay)

    def retry_blocking(self, fn: Callable[..., T], arg: object, first_error: BaseException) -> T:
        """Retry ``fn(arg)``, which just failed with the transient ``first_error``, in the
        calling worker thread (sync per-record functions): backoff and ``Retry-After`` apply;
        timeout, breaker and rate limit need an async function. Raises ``RetriesExhausted``
        or the terminal error."""
        retry = self.policies.retry
        first_at = wall_time()
        error = first_error
        for attempt in range(1, retry.attempts):
            delay = full_jitter(attempt, retry.base, retry.cap, self.rng)
            delay = max(delay, retry_after(error) or 0.0)
            with self._retries_lock:
                self.retries += 1
            self._emit_from_thread(RetryScheduled(self.step_id, attempt, delay,
                                                  type(error).__name__))
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.1))  # short naps: a cancelled run does not wait long
                cancellation_point()
            try:
                return fn(arg)
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                error = exc
        raise RetriesExhausted(error, retry.attempts, first_at, wall_time()) from error

    def _emit_from_thread(self, event: Event) -> None:
        """Emit on the event loop's thread (observers are not thread-safe), or right here when
        this is the loop's thread (a sync function run inline)."""
        try:
            anyio.from_thread.run_sync(self.emit, event)
        except RuntimeError:  # not an anyio worker thread
            self.emit(event)
