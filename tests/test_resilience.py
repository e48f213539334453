"""Resilience policies in-process: retries, breakers, timeouts and their config, on a fake clock.

Time-based behaviour runs on ``FakeClock``: virtual time that jumps forward instantly and
records every sleep. Jitter comes from a seeded ``random.Random``. Only the timeout, rate-limit
and thread-retry tests use the real clock (waits of milliseconds), and every wait is bounded.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from headrace.config import BreakerPolicy, Policies, RateLimitPolicy, RetryPolicy, load_pipeline
from headrace.engine import BreakerChanged, Event, RateLimited, RetryScheduled, build_plan
from headrace.engine._resilience import (
    HALF_OPEN_POLL,
    CircuitBreaker,
    StepPolicy,
    SystemClock,
    full_jitter,
)
from headrace.errors import ConfigError
from headrace.plugin import (
    Batch,
    BreakerOpen,
    RetriesExhausted,
    Retry,
    Step,
    StepOutput,
    TransientError,
)
from headrace.testing import FakeClock

T = TypeVar("T")
BOUND = 5.0  # real seconds any test may wait for something that should happen at once


class MaxRandom(random.Random):
    """Jitter that always picks the top of its range: the sleeps are the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


def make_policy(
    *,
    attempts: int = 3,
    base: float = 1.0,
    cap: float = 8.0,
    retry_on: tuple[str, ...] = (),
    timeout: float | None = None,
    breaker: BreakerPolicy | None = None,
    rate_limit: RateLimitPolicy | None = None,
    transient: tuple[type[BaseException], ...] = (),
    concurrency: int | None = None,
    clock: Any = None,
    rng: random.Random | None = None,
) -> tuple[StepPolicy, list[Event]]:
    policies = Policies(
        timeout=timeout,
        retry=RetryPolicy(attempts=attempts, base=base, cap=cap, retry_on=retry_on),
        breaker=breaker,
        rate_limit=rate_limit,
    )
    policy = StepPolicy("enrich", policies, concurrency=concurrency, transient=transient,
                        clock=clock if clock is not None else FakeClock(),
                        rng=rng if rng is not None else random.Random(1234))
    events: list[Event] = []
    policy.emit = events.append
    return policy, events


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on a fresh event loop, failing if it takes more than a few real seconds."""

    async def bounded() -> T:
        with anyio.fail_after(BOUND):
            return await fn()

    return anyio.run(bounded)


async def until(predicate: Callable[[], bool]) -> None:
    """Let other tasks run until ``predicate()`` holds (bounded by ``run``'s deadline)."""
    while not predicate():
        await anyio.lowlevel.checkpoint()


class Flaky:
    """An async callable that raises ``errors`` one per call, in order, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.calls <= len(self.errors):
            raise self.errors[self.calls - 1]
        return "ok"


def always(make: Callable[[int], BaseException]) -> tuple[Callable[[], Awaitable[str]],
                                                          list[BaseException]]:
    """An async callable that fails on every call with ``make(call number)``."""
    raised: list[BaseException] = []

    async def fn() -> str:
        await anyio.lowlevel.checkpoint()
        raised.append(make(len(raised) + 1))
        raise raised[-1]

    return fn, raised


def states(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.key, e.state) for e in events if isinstance(e, BreakerChanged)]


# -- retry: backoff ---------------------------------------------------------------------------

CEILINGS = [1.0, 2.0, 4.0, 8.0, 8.0]  # base 1 s doubling, capped at 8 s


def test_backoff_ceilings_double_up_to_the_cap() -> None:
    """The n-th backoff's ceiling is base * 2**(n-1), capped at cap."""
    clock = FakeClock()
    policy, events = make_policy(attempts=6, base=1.0, cap=8.0, clock=clock, rng=MaxRandom())
    fn, _ = always(lambda n: TransientError(f"503 #{n}"))
    with pytest.raises(RetriesExhausted):
        run(lambda: policy.call(fn))
    assert clock.sleeps == CEILINGS
    assert [(e.attempt, e.delay, e.reason) for e in events if isinstance(e, RetryScheduled)] \
        == [(n, c, "TransientError") for n, c in enumerate(CEILINGS, start=1)]
    assert policy.retries == 5


def test_backoff_is_full_jitter_within_each_ceiling() -> None:
    """Each backoff is uniform in [0, ceiling]: seeded, all different, none above its ceiling."""
    clock = FakeClock()
    policy, _ = make_policy(attempts=6, base=1.0, cap=8.0, clock=clock, rng=random.Random(7))
    fn, _ = always(lambda n: ConnectionError(f"reset #{n}"))
    with pytest.raises(RetriesExhausted):
        run(lambda: policy.call(fn))
    replay = random.Random(7)
    assert clock.sleeps == [replay.uniform(0.0, c) for c in CEILINGS]
    assert all(0.0 <= s <= c for s, c in zip(clock.sleeps, CEILINGS, strict=True))
    assert len(set(clock.sleeps)) == len(clock.sleeps)


@pytest.mark.parametrize("attempt", [1, 2, 10, 61, 1000], ids=lambda n: f"attempt-{n}")
def test_full_jitter_never_exceeds_the_cap(attempt: int) -> None:
    """full_jitter stays in [0, cap] for any attempt number (no overflow for huge ones)."""
    rng = random.Random(attempt)
    ceiling = min(30.0, 0.1 * 2.0 ** min(attempt - 1, 60))
    samples = [full_jitter(attempt, 0.1, 30.0, rng) for _ in range(200)]
    assert all(0.0 <= s <= ceiling for s in samples)
    assert max(samples) > ceiling / 2  # spread over the range, not stuck near 0


# -- retry: Retry-After, terminal errors, attempts ---------------------------------------------

@pytest.mark.parametrize(
    "error",
    [TransientError("429 Too Many Requests", retry_after=7), Retry(delay=7)],
    ids=["transient-retry-after", "retry-signal"],
)
def test_retry_after_is_a_floor_for_the_next_attempt(error: BaseException) -> None:
    """A server's Retry-After (or a Retry(delay=...) signal) makes the wait at least that."""
    clock = FakeClock()
    policy, events = make_policy(base=0.1, cap=1.0, clock=clock, rng=MaxRandom())
    fn = Flaky(error)
    assert run(lambda: policy.call(fn)) == "ok"
    assert clock.sleeps == [7.0]
    assert fn.calls == 2
    retried = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.delay, e.reason) for e in retried] == [(7.0, type(error).__name__)]


def test_retry_after_below_the_jitter_does_not_shorten_it() -> None:
    """A floor under the drawn backoff leaves the backoff as it is."""
    clock = FakeClock()
    policy, _ = make_policy(base=4.0, cap=4.0, clock=clock, rng=MaxRandom())
    assert run(lambda: policy.call(Flaky(TransientError("503", retry_after=0.5)))) == "ok"
    assert clock.sleeps == [4.0]


def test_terminal_error_is_raised_unchanged_after_one_call() -> None:
    """A ValueError is not retried: one call, no sleep, the very same exception object."""
    clock = FakeClock()
    policy, events = make_policy(attempts=5, clock=clock)
    error = ValueError("bad record")
    fn = Flaky(error)
    with pytest.raises(ValueError) as info:
        run(lambda: policy.call(fn))
    assert info.value is error
    assert fn.calls == 1
    assert clock.sleeps == []
    assert policy.retries == 0
    assert events == []


def test_attempts_are_capped() -> None:
    """After `attempts` transient failures the call gives up with RetriesExhausted."""
    clock = FakeClock()
    policy, _ = make_policy(attempts=4, clock=clock)
    fn, raised = always(lambda n: ConnectionError(f"refused #{n}"))
    with pytest.raises(RetriesExhausted) as info:
        run(lambda: policy.call(fn))
    exc = info.value
    assert len(raised) == 4
    assert len(clock.sleeps) == 3
    assert exc.attempts == 4
    assert exc.error is raised[-1]
    assert exc.__cause__ is raised[-1]
    assert "gave up after 4 attempts: ConnectionError: refused #4" in str(exc)
    first, last = datetime.fromisoformat(exc.first_at), datetime.fromisoformat(exc.last_at)
    assert first.tzinfo is not None
    assert first <= last


def test_a_single_attempt_gives_up_without_sleeping() -> None:
    """attempts: 1 (``retry: false``) turns the first transient failure into RetriesExhausted."""
    clock = FakeClock()
    policy, _ = make_policy(attempts=1, clock=clock)
    with pytest.raises(RetriesExhausted) as info:
        run(lambda: policy.call(Flaky(TimeoutError())))
    assert info.value.attempts == 1
    assert clock.sleeps == []


class QuotaExceeded(Exception):
    pass


class DailyQuotaExceeded(QuotaExceeded):
    pass


class FlakyBackend(Exception):
    pass


@pytest.mark.parametrize(
    ("retry_on", "error", "transient"),
    [
        ((), QuotaExceeded(), False),
        (("QuotaExceeded",), QuotaExceeded(), True),
        (("QuotaExceeded",), DailyQuotaExceeded(), True),
        (("DailyQuotaExceeded",), QuotaExceeded(), False),
        (("QuotaExceeded",), ValueError(), False),
    ],
    ids=["unnamed-is-terminal", "named", "subclass-of-named", "base-of-named", "other"],
)
def test_retry_on_names_make_errors_transient(
    retry_on: tuple[str, ...], error: Exception, transient: bool
) -> None:
    """retry.retry_on names exception classes (or their bases) to retry."""
    policy, _ = make_policy(retry_on=retry_on)
    assert policy.is_transient(error) is transient
    fn = Flaky(error)
    if transient:
        assert run(lambda: policy.call(fn)) == "ok"
        assert fn.calls == 2
    else:
        with pytest.raises(type(error)):
            run(lambda: policy.call(fn))
        assert fn.calls == 1


def test_step_transient_errors_are_retried() -> None:
    """Classes a step lists in transient_errors (the `transient=` parameter) are retried."""
    policy, _ = make_policy(transient=(FlakyBackend,))
    fn = Flaky(FlakyBackend("try later"), FlakyBackend("try later"))
    assert run(lambda: policy.call(fn)) == "ok"
    assert fn.calls == 3
    assert policy.retries == 2
    plain, _ = make_policy()
    assert not plain.is_transient(FlakyBackend())


@pytest.mark.parametrize(
    "error",
    [TransientError(), Retry(), TimeoutError(), ConnectionError(), ConnectionResetError(),
     BreakerOpen()],
    ids=lambda e: type(e).__name__,
)
def test_built_in_transient_errors(error: BaseException) -> None:
    """TransientError (Retry, BreakerOpen), TimeoutError and ConnectionError are transient."""
    policy, _ = make_policy()
    assert policy.is_transient(error)


class FlakyStep(Step):
    """A step plugin that names its own transient error (used by import path below)."""

    transient_errors: ClassVar[tuple[type[BaseException], ...]] = (FlakyBackend,)

    def process(self, batch: Batch) -> StepOutput:
        return StepOutput(batch)


def test_plan_gives_steps_their_transient_errors(write) -> None:
    """build_plan hands Step.transient_errors to the step's policy."""
    write("in.csv", "id\n1\n")
    path = write("p.yaml", """
        version: 1
        name: t
        source: {use: csv, path: in.csv}
        steps:
          - {use: "tests.test_resilience:FlakyStep", retry: 2}
        sink: {use: jsonl, path: out.jsonl}
        """)
    planned = build_plan(load_pipeline(path, environ={})).steps[0]
    assert planned.policy.is_transient(FlakyBackend())
    assert not planned.policy.is_transient(ValueError())


# -- retry: slots and the in-flight bound -------------------------------------------------------

def test_a_call_waiting_for_its_backoff_holds_no_slot() -> None:
    """While call A sleeps in its backoff, call B takes the only slot and completes."""
    clock = FakeClock()
    clock.gate = anyio.Event()
    policy, _ = make_policy(clock=clock)
    slots = anyio.CapacityLimiter(1)
    a = Flaky(ConnectionError("reset"))
    results: dict[str, str] = {}

    async def call(name: str, fn: Callable[[], Awaitable[str]]) -> None:
        results[name] = await policy.call(fn, slots=slots)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "a", a)
            await until(lambda: len(clock.sleeps) == 1)  # A failed once, is in its backoff
            assert slots.borrowed_tokens == 0
            tg.start_soon(call, "b", Flaky())
            await until(lambda: "b" in results)  # B got the slot while A waits
            assert "a" not in results
            assert clock.gate is not None
            clock.gate.set()
        assert results == {"a": "ok", "b": "ok"}
        assert a.calls == 2
        assert slots.borrowed_tokens == 0

    run(main)


@pytest.mark.parametrize("own_slots", [True, False], ids=["policy-slots", "given-slots"])
def test_calls_in_flight_never_exceed_the_slots_under_retries(own_slots: bool) -> None:
    """40 concurrent calls, each failing transiently 3 times: never more than 3 in flight."""
    policy, _ = make_policy(attempts=5, base=0.01, cap=0.05,
                            concurrency=3 if own_slots else None)
    slots = None if own_slots else anyio.CapacityLimiter(3)
    failures: dict[int, int] = {}
    now = peak = 0

    async def work(i: int) -> int:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        try:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            failures[i] = failures.get(i, 0) + 1
            if failures[i] <= 3:
                raise TransientError("busy")
            return i
        finally:
            now -= 1

    async def main() -> list[int]:
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await policy.call(lambda: work(i), slots=slots))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
        return results

    assert sorted(run(main)) == list(range(40))
    assert peak == 3  # the bound was reached, never passed
    assert policy.retries == 120
    assert policy.in_flight == 0


# -- breaker: the state machine on its own -----------------------------------------------------

def make_breaker(clock: FakeClock, **fields: Any) -> tuple[CircuitBreaker, list[str]]:
    changes: list[str] = []
    policy = BreakerPolicy(**{"failures": 3, "reset_after": 10.0, **fields})
    return CircuitBreaker(policy, clock, changes.append), changes


def test_breaker_opens_after_consecutive_failures() -> None:
    """closed -> open after `failures` transient failures in a row; a success resets the run."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=3)
    for failed in (True, True, False, True, True):
        assert breaker.try_enter() == 0.0
        breaker.leave(failed)
    assert breaker.state == "closed"
    assert breaker.try_enter() == 0.0
    breaker.leave(True)
    assert breaker.state == "open"
    assert changes == ["open"]
    assert breaker.try_enter() == pytest.approx(10.0)


def test_breaker_opens_on_failure_rate_over_a_full_window() -> None:
    """With failure_rate 0.5 over 4 calls, alternating failures open it once the window fills."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=100, failure_rate=0.5, window=4)
    for failed in (True, False, True):
        breaker.try_enter()
        breaker.leave(failed)
    assert breaker.state == "closed"  # 2 of 3, but the window is not full yet
    breaker.try_enter()
    breaker.leave(False)
    assert breaker.state == "open"  # 2 of the last 4
    assert changes == ["open"]


def test_breaker_failure_rate_below_threshold_stays_closed() -> None:
    """One failure in four is under a 0.5 failure rate: the breaker stays closed."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=100, failure_rate=0.5, window=4)
    for failed in (True, False, False, False, True, False, False, False):
        breaker.try_enter()
        breaker.leave(failed)
    assert breaker.state == "closed"
    assert changes == []


def test_breaker_half_opens_after_reset_after() -> None:
    """open -> half_open once reset_after has passed on the clock, not before."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=1, reset_after=10.0)
    breaker.try_enter()
    breaker.leave(True)
    clock.advance(9.5)
    assert breaker.try_enter() == pytest.approx(0.5)
    assert breaker.state == "open"
    clock.advance(0.5)
    assert breaker.try_enter() == 0.0  # this caller is the probe
    assert breaker.state == "half_open"
    assert changes == ["open", "half_open"]


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_at_most_half_open_calls_probes(probes: int) -> None:
    """While half-open, only half_open_calls callers get through at once; the rest poll."""
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failures=1, half_open_calls=probes)
    breaker.try_enter()
    breaker.leave(True)
    clock.advance(10.0)
    assert [breaker.try_enter() for _ in range(probes)] == [0.0] * probes
    assert breaker.try_enter() == HALF_OPEN_POLL
    breaker.leave(None, breaker.openings)  # a probe that ended without a verdict frees its place
    assert breaker.try_enter() == 0.0
    assert breaker.try_enter() == HALF_OPEN_POLL
    assert breaker.state == "half_open"


def test_only_probes_free_probe_places_or_decide() -> None:
    """A call that was no probe (it began before the opening), or probed an earlier opening,
    ends during half-open: the probe count and the state stay as they are."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=1, half_open_calls=1)
    breaker.try_enter()
    breaker.leave(True)
    clock.advance(10.0)
    assert breaker.try_enter() == 0.0
    earlier = breaker.openings
    breaker.leave(True, earlier)  # the probe fails: open again
    clock.advance(10.0)
    assert breaker.try_enter() == 0.0  # the probe of the second opening
    for failed in (None, False, True):
        breaker.leave(failed)  # not a probe
        breaker.leave(failed, earlier)  # a probe of the first opening
    assert breaker.state == "half_open"
    assert breaker.probes == 1
    assert breaker.try_enter() == HALF_OPEN_POLL
    breaker.leave(False, breaker.openings)
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


@pytest.mark.parametrize(
    ("failed", "after", "changes"),
    [(False, "closed", ["open", "half_open", "closed"]),
     (True, "open", ["open", "half_open", "open"])],
    ids=["probe-success-closes", "probe-failure-reopens"],
)
def test_probe_outcome_closes_or_reopens(failed: bool, after: str, changes: list[str]) -> None:
    """A probe's success closes the breaker; its failure opens it again for reset_after."""
    clock = FakeClock()
    breaker, seen = make_breaker(clock, failures=1, reset_after=10.0)
    breaker.try_enter()
    breaker.leave(True)
    clock.advance(10.0)
    assert breaker.try_enter() == 0.0
    breaker.leave(failed, breaker.openings)
    assert breaker.state == after
    assert seen == changes
    if failed:
        assert breaker.try_enter() == pytest.approx(10.0)  # a fresh reset_after from now
    else:
        assert breaker.consecutive == 0
        assert breaker.try_enter() == 0.0


def test_terminal_errors_do_not_count_towards_the_breaker() -> None:
    """leave(None) -- a terminal error or a cancellation -- neither counts nor resets."""
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failures=2)
    breaker.try_enter()
    breaker.leave(True)
    for _ in range(10):
        breaker.try_enter()
        breaker.leave(None)
    assert breaker.consecutive == 1
    assert breaker.state == "closed"
    breaker.try_enter()
    breaker.leave(True)
    assert changes == ["open"]


# -- breaker: through StepPolicy.call ------------------------------------------------------------

def breaker_policy(clock: FakeClock, **fields: Any) -> tuple[StepPolicy, list[Event]]:
    """One attempt per call, so each failing call is one breaker failure."""
    breaker = BreakerPolicy(**{"failures": 2, "reset_after": 10.0, **fields})
    return make_policy(attempts=1, breaker=breaker, clock=clock)


async def open_breaker(policy: StepPolicy, key: str | None = None) -> None:
    assert policy.policies.breaker is not None
    for _ in range(policy.policies.breaker.failures):
        with pytest.raises(RetriesExhausted):
            await policy.call(Flaky(ConnectionError("down")), key=key)


def test_open_breaker_makes_calls_wait_then_probe() -> None:
    """A call to an open breaker waits (backpressure) for reset_after, then runs as the probe
    and closes it; nothing fails."""
    clock = FakeClock()
    policy, events = breaker_policy(clock)

    async def main() -> str:
        await open_breaker(policy)
        opened = clock.now()
        fn = Flaky()
        result = await policy.call(fn)
        assert fn.calls == 1
        assert clock.now() - opened >= 10.0
        return result

    assert run(main) == "ok"
    assert clock.sleeps == [10.0]
    assert states(events) == [("enrich", "open"), ("enrich", "half_open"), ("enrich", "closed")]


def test_probe_failure_reopens_through_call() -> None:
    """A failing probe opens the breaker again: BreakerChanged open, half_open, open."""
    clock = FakeClock()
    policy, events = breaker_policy(clock)

    async def main() -> None:
        await open_breaker(policy)
        with pytest.raises(RetriesExhausted):
            await policy.call(Flaky(ConnectionError("still down")))

    run(main)
    assert states(events) == [("enrich", "open"), ("enrich", "half_open"), ("enrich", "open")]
    assert policy.breakers["enrich"].state == "open"


def test_half_open_probes_are_limited_and_the_others_wait() -> None:
    """With half_open_calls 1, a second call waits while the probe runs, then goes ahead."""
    clock = FakeClock()
    policy, events = breaker_policy(clock, half_open_calls=1)
    release = anyio.Event()
    started: list[str] = []

    async def probe() -> str:
        started.append("probe")
        await release.wait()
        return "probe"

    async def second() -> str:
        started.append("second")
        return "second"

    async def main() -> None:
        await open_breaker(policy)
        clock.advance(10.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(policy.call, probe)
            await until(lambda: started == ["probe"])
            tg.start_soon(policy.call, second)
            polls = len(clock.sleeps)
            await until(lambda: len(clock.sleeps) >= polls + 5)  # the second call is polling
            assert started == ["probe"]
            assert set(clock.sleeps[polls:]) == {HALF_OPEN_POLL}
            release.set()
        assert started == ["probe", "second"]

    run(main)
    assert states(events)[-2:] == [("enrich", "half_open"), ("enrich", "closed")]


def test_a_call_from_before_the_opening_is_not_a_probe() -> None:
    """A call that started while closed and ends during half-open does not free a probe place:
    half_open_calls stays the bound on probes."""
    clock = FakeClock()
    policy, _ = breaker_policy(clock, failures=1, half_open_calls=1)
    stale_done, probe_done = anyio.Event(), anyio.Event()
    started: list[str] = []

    async def stale() -> str:
        started.append("stale")
        await stale_done.wait()
        raise ValueError("terminal: says nothing about the service")

    async def probe() -> str:
        started.append("probe")
        await probe_done.wait()
        return "probe"

    async def extra() -> str:
        started.append("extra")
        return "extra"

    async def call_ignoring(fn: Callable[[], Awaitable[str]]) -> None:
        with pytest.raises(ValueError):
            await policy.call(fn)
        started.append("stale ended")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_ignoring, stale)
            await until(lambda: started == ["stale"])
            await open_breaker(policy)
            clock.advance(10.0)
            tg.start_soon(policy.call, probe)
            await until(lambda: started == ["stale", "probe"])
            stale_done.set()
            await until(lambda: "stale ended" in started)
            tg.start_soon(policy.call, extra)
            polls = len(clock.sleeps)
            await until(lambda: len(clock.sleeps) >= polls + 5 or "extra" in started)
            # extra waits: the probe is still running
            assert started == ["stale", "probe", "stale ended"]
            probe_done.set()
        assert started == ["stale", "probe", "stale ended", "extra"]

    run(main)


def test_terminal_errors_never_open_the_breaker_through_call() -> None:
    """Ten ValueErrors in a row leave a failures: 1 breaker closed."""
    clock = FakeClock()
    policy, events = breaker_policy(clock, failures=1)

    async def main() -> None:
        for _ in range(10):
            with pytest.raises(ValueError):
                await policy.call(Flaky(ValueError("bad")))

    run(main)
    assert policy.breakers["enrich"].state == "closed"
    assert states(events) == []


def test_breaker_open_past_max_wait_gives_up_with_breaker_open() -> None:
    """A call that waits max_wait for an open breaker fails as RetriesExhausted(BreakerOpen),
    without being attempted."""
    clock = FakeClock()
    policy, _ = breaker_policy(clock, failures=1, reset_after=100.0, max_wait=5.0)
    fn = Flaky()

    async def main() -> None:
        await open_breaker(policy)
        with pytest.raises(RetriesExhausted) as info:
            await policy.call(fn)
        assert isinstance(info.value.error, BreakerOpen)
        assert info.value.attempts == 0

    run(main)
    assert fn.calls == 0
    assert clock.sleeps == [5.0]


def test_breakers_are_per_key() -> None:
    """An open breaker for one key (a host) does not hold back calls for another."""
    clock = FakeClock()
    policy, events = breaker_policy(clock, failures=1)

    async def main() -> str:
        await open_breaker(policy, key="api.example.com")
        return await policy.call(Flaky(), key="other.example.com")

    assert run(main) == "ok"
    assert clock.sleeps == []
    assert states(events) == [("api.example.com", "open")]
    assert policy.breakers["api.example.com"].state == "open"
    assert policy.breakers["other.example.com"].state == "closed"


def test_retries_and_breaker_together() -> None:
    """Retries of one call count towards its breaker; the opened breaker delays the retry
    until reset_after, and the retry then probes and succeeds."""
    clock = FakeClock()
    breaker = BreakerPolicy(failures=2, reset_after=10.0)
    policy, events = make_policy(attempts=5, base=1.0, cap=1.0, breaker=breaker, clock=clock,
                                 rng=MaxRandom())
    fn = Flaky(ConnectionError("a"), ConnectionError("b"))
    assert run(lambda: policy.call(fn)) == "ok"
    assert fn.calls == 3
    # backoff 1 s, backoff 1 s, then the rest of reset_after on the open breaker
    assert clock.sleeps == [1.0, 1.0, pytest.approx(9.0)]
    assert [s for _, s in states(events)] == ["open", "half_open", "closed"]


# -- rate limits ------------------------------------------------------------------------------

def test_rate_limits_are_per_key() -> None:
    """A key that used up its rate waits; another key does not; a wait emits RateLimited."""
    policy, events = make_policy(rate_limit=RateLimitPolicy(rate=1, per=3600))

    async def main() -> None:
        assert await policy.call(Flaky(), key="a") == "ok"
        assert await policy.call(Flaky(), key="b") == "ok"
        with anyio.move_on_after(0.05) as scope:
            await policy.call(Flaky(), key="a")  # its next token is an hour away
        assert scope.cancelled_caught

    run(main)
    assert not [e for e in events if isinstance(e, RateLimited)]


def test_rate_limited_call_emits_its_wait() -> None:
    """A call that had to wait for its rate limit reports the wait as a RateLimited event."""
    policy, events = make_policy(rate_limit=RateLimitPolicy(rate=1, per=0.02))

    async def main() -> None:
        for _ in range(3):
            assert await policy.call(Flaky(), key="host") == "ok"

    run(main)
    waits = [e for e in events if isinstance(e, RateLimited)]
    assert waits
    assert all(e.key == "host" and e.step_id == "enrich" and e.seconds >= 0 for e in waits)


# -- timeouts and cancellation (real clock, tiny values) -----------------------------------------

def test_a_hanging_call_is_timed_out_retried_then_given_up() -> None:
    """timeout: each attempt that hangs ends in TimeoutError; after `attempts`, RetriesExhausted."""
    policy, events = make_policy(timeout=0.05, attempts=3, base=0.001, cap=0.001,
                                 clock=SystemClock())
    calls = 0

    async def hang() -> str:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(RetriesExhausted) as info:
        run(lambda: policy.call(hang))
    assert calls == 3
    assert info.value.attempts == 3
    assert isinstance(info.value.error, TimeoutError)
    assert [e.reason for e in events if isinstance(e, RetryScheduled)] == ["TimeoutError"] * 2
    assert policy.in_flight == 0


def test_timeout_does_not_count_the_wait_for_a_slot() -> None:
    """The timeout covers the call, not the time spent waiting for a concurrency slot."""
    policy, _ = make_policy(timeout=0.05, attempts=1, clock=SystemClock())
    slots = anyio.CapacityLimiter(1)

    async def main() -> str:
        async with anyio.create_task_group() as tg:
            await slots.acquire()
            result: list[str] = []

            async def call() -> None:
                result.append(await policy.call(Flaky(), slots=slots))

            tg.start_soon(call)
            await anyio.sleep(0.1)  # longer than the timeout
            slots.release()
        return result[0]

    assert run(main) == "ok"


@pytest.mark.parametrize("clock_kind", ["system", "fake-blocked"])
def test_cancellation_during_backoff_propagates(clock_kind: str) -> None:
    """Cancelling the caller's scope while a call sleeps in its backoff ends the call at once:
    the cancellation is not swallowed, no further attempt runs, no slot stays taken."""
    clock: Any = SystemClock() if clock_kind == "system" else FakeClock()
    if isinstance(clock, FakeClock):
        clock.gate = anyio.Event()  # never set: the backoff lasts until cancelled
    breaker = BreakerPolicy(failures=5)
    policy, events = make_policy(attempts=3, clock=clock, breaker=breaker)
    slots = anyio.CapacityLimiter(1)
    fn = Flaky(Retry(delay=3600))  # an hour's backoff on the real clock
    after_call: list[str] = []

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            await policy.call(fn, slots=slots)
            after_call.append("returned")  # must never run

    async def main() -> None:
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, scope)
            await until(lambda: any(isinstance(e, RetryScheduled) for e in events))
            for _ in range(3):
                await anyio.lowlevel.checkpoint()  # well inside the sleep now
            scope.cancel()
        assert scope.cancelled_caught

    run(main)
    assert fn.calls == 1
    assert after_call == []
    assert slots.borrowed_tokens == 0
    assert policy.in_flight == 0
    assert policy.breakers["enrich"].consecutive == 1  # the one real failure, nothing more


def test_cancellation_during_an_attempt_propagates_and_frees_the_probe() -> None:
    """Cancelling a half-open probe mid-call frees its probe place without a verdict."""
    clock = FakeClock()
    policy, events = breaker_policy(clock, failures=1)
    entered = anyio.Event()

    async def hang() -> str:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def main() -> None:
        await open_breaker(policy)
        clock.advance(10.0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(policy.call, hang)
                await entered.wait()
                scope.cancel()
        breaker = policy.breakers["enrich"]
        assert breaker.state == "half_open"
        assert breaker.probes == 0
        assert await policy.call(Flaky()) == "ok"

    run(main)
    assert policy.in_flight == 0
    assert [s for _, s in states(events)] == ["open", "half_open", "closed"]


# -- retry_blocking: sync per-record functions ---------------------------------------------------

def counter_fn(errors: list[BaseException]) -> tuple[Callable[[object], str], list[object]]:
    seen: list[object] = []

    def fn(arg: object) -> str:
        seen.append(arg)
        if len(seen) <= len(errors):
            raise errors[len(seen) - 1]
        return f"done {arg}"

    return fn, seen


def test_retry_blocking_retries_in_the_thread() -> None:
    """After a transient failure, retry_blocking calls again with backoff until it succeeds."""
    policy, _ = make_policy(attempts=4, base=0.001, cap=0.001)
    fn, seen = counter_fn([ConnectionError("second failure")])
    assert policy.retry_blocking(fn, "r1", ConnectionError("first failure")) == "done r1"
    assert seen == ["r1", "r1"]
    assert policy.retries == 2


@pytest.mark.parametrize("where", ["worker-thread", "loop-thread"])
def test_retry_blocking_reports_each_retry_as_an_event(where: str) -> None:
    """Retries in a worker thread (or inline on the loop) emit RetryScheduled on the loop's
    thread, so the retries metric agrees with the summary."""
    policy, events = make_policy(attempts=4, base=0.001, cap=0.001)
    threads: list[int] = []
    policy.emit = lambda event: (threads.append(threading.get_ident()), events.append(event))
    fn, _ = counter_fn([TimeoutError(), ConnectionError()])

    async def main() -> str:
        if where == "worker-thread":
            return await anyio.to_thread.run_sync(
                policy.retry_blocking, fn, "r", ConnectionError())
        return policy.retry_blocking(fn, "r", ConnectionError())

    loop_thread = threading.get_ident()
    assert run(main) == "done r"
    assert [(e.attempt, e.reason) for e in events if isinstance(e, RetryScheduled)] == [
        (1, "ConnectionError"), (2, "TimeoutError"), (3, "ConnectionError")]
    assert set(threads) == {loop_thread}
    assert policy.retries == 3


def test_retry_blocking_stops_at_a_terminal_error_and_caps_attempts() -> None:
    """A terminal error on a retry is raised as is; transient ones stop after `attempts`."""
    policy, _ = make_policy(attempts=3, base=0.001, cap=0.001)
    bad = ValueError("bad")
    fn, seen = counter_fn([bad])
    with pytest.raises(ValueError) as info:
        policy.retry_blocking(fn, 1, TimeoutError())
    assert info.value is bad
    assert len(seen) == 1
    fn, seen = counter_fn([ConnectionError(str(n)) for n in range(10)])
    with pytest.raises(RetriesExhausted) as exhausted:
        policy.retry_blocking(fn, 2, ConnectionError("first"))
    assert exhausted.value.attempts == 3
    assert len(seen) == 2  # the first attempt was the caller's own
    assert str(exhausted.value.error) == "1"


# -- config ---------------------------------------------------------------------------------------

PIPELINE = """
version: 1
name: policies
source: {{use: csv, path: in.csv}}
steps:
  - use: filter
    where: "a > 1"
{step}
  - {{use: select, id: plain, columns: [a]}}
sink: {{use: jsonl, path: out.jsonl}}
{runtime}
"""


def load(write, step: str = "", runtime: str = "") -> Any:  # type: ignore[no-untyped-def]
    step = "\n".join("    " + line for line in step.splitlines())
    path = write("p.yaml", PIPELINE.format(step=step, runtime=runtime))
    return load_pipeline(path, environ={}).config


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("timeout: 0", ["steps[0].timeout", "greater than 0"]),
        ("timeout: 100d", ["steps[0].timeout", "not a duration"]),
        ("retry: {attempts: 0}", ["steps[0].retry.attempts", "greater than or equal to 1"]),
        ("retry: {attempts: 1000}", ["steps[0].retry.attempts", "less than or equal to 100"]),
        ("retry: {base: 5s, cap: 1s}", ["cap (1.0) must be >= base (5.0)"]),
        ("concurrency: 1000000000", ["steps[0].concurrency", "less than or equal to 256"]),
        ("rate_limit: fast", ["steps[0].rate_limit", "not a rate (e.g. 50/s, 600/min"]),
        ("rate_limit: 0/s", ["steps[0].rate_limit.rate", "greater than 0"]),
        ("breaker: {failures: 0}", ["steps[0].breaker.failures", "greater than or equal to 1"]),
        ("breaker: {failure_rate: 1.5}", ["steps[0].breaker.failure_rate",
                                          "less than or equal to 1"]),
        ("breaker: {half_open_calls: 0}", ["half_open_calls", "greater than or equal to 1"]),
        ("retry: {attempts: 2, retries: 3}", ["retries"]),
    ],
    ids=["timeout-zero", "timeout-unit", "attempts-zero", "attempts-huge", "cap-below-base",
         "concurrency-huge", "rate-word", "rate-zero", "breaker-failures-zero",
         "failure-rate-above-1", "no-probes", "unknown-retry-key"],
)
def test_absurd_policy_settings_are_rejected_with_the_range(write, setting: str,
                                                            needles: list[str]) -> None:
    """Out-of-range settings are config errors naming file:line, the key and the allowed range."""
    with pytest.raises(ConfigError) as info:
        load(write, setting)
    message = info.value.one_line()
    assert "p.yaml:7" in message
    for needle in needles:
        assert needle in message


def test_runtime_settings_are_checked_too(write) -> None:
    """A runtime default out of range is rejected like a step's own setting."""
    with pytest.raises(ConfigError, match=r"runtime\.timeout.*greater than 0"):
        load(write, runtime="runtime: {timeout: 0ms}")


@pytest.mark.parametrize(
    ("setting", "key", "expected"),
    [
        ("retry: 5", "retry", RetryPolicy(attempts=5)),
        ("retry: false", "retry", RetryPolicy(attempts=1)),
        ("retry: {attempts: 4, base: 250ms, cap: 2m, retry_on: [QuotaExceeded]}", "retry",
         RetryPolicy(attempts=4, base=0.25, cap=120.0, retry_on=("QuotaExceeded",))),
        ("breaker: true", "breaker", BreakerPolicy()),
        ("breaker: {failures: 3, reset_after: 1m, max_wait: 0}", "breaker",
         BreakerPolicy(failures=3, reset_after=60.0, max_wait=0.0)),
        ("rate_limit: 600/min", "rate_limit", RateLimitPolicy(rate=600, per=60.0)),
        ("rate_limit: 50/s", "rate_limit", RateLimitPolicy(rate=50, per=1.0)),
        ("rate_limit: 5/2s", "rate_limit", RateLimitPolicy(rate=5, per=2.0)),
        ("rate_limit: {rate: 10, per: 500ms}", "rate_limit", RateLimitPolicy(rate=10, per=0.5)),
        ("timeout: 250ms", "timeout", 0.25),
        ("timeout: 2m", "timeout", 120.0),
        ("timeout: 1.5", "timeout", 1.5),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_policy_shorthands_parse(write, setting: str, key: str, expected: Any) -> None:
    """Shorthands and units become the full policy models."""
    config = load(write, setting)
    policies = config.steps[0].policies(config.runtime)
    value = getattr(policies, key)
    if isinstance(expected, float):
        assert math.isclose(value, expected)
    else:
        assert value == expected


def test_runtime_defaults_apply_where_a_step_sets_nothing(write) -> None:
    """runtime: policies are every step's defaults; a step's own key replaces the default whole,
    and `breaker: false` turns a runtime breaker off for that step."""
    runtime = """
runtime:
  timeout: 2s
  retry: {attempts: 6, base: 1s}
  breaker: {failures: 7}
  rate_limit: 100/s
"""
    config = load(write, "retry: 2\nbreaker: false\ntimeout: 500ms", runtime)
    own = config.steps[0].policies(config.runtime)
    plain = config.steps[1].policies(config.runtime)
    assert plain == Policies(timeout=2.0, retry=RetryPolicy(attempts=6, base=1.0),
                             breaker=BreakerPolicy(failures=7),
                             rate_limit=RateLimitPolicy(rate=100, per=1.0))
    assert own.timeout == 0.5
    assert own.retry == RetryPolicy(attempts=2)  # base back to its default: no field merge
    assert own.breaker is None
    assert own.rate_limit == RateLimitPolicy(rate=100, per=1.0)


def test_default_policies_are_three_attempts_and_nothing_else(write) -> None:
    """Without settings: 3 attempts (0.1 s base, 30 s cap), no timeout, breaker or rate limit."""
    config = load(write)
    policies = config.steps[1].policies(config.runtime)
    assert policies == Policies()
    assert policies.retry == RetryPolicy(attempts=3, base=0.1, cap=30.0)
    assert StepPolicy("s", policies).active  # the engine wraps calls by default
    no_retry = load(write, "retry: false")
    assert not StepPolicy("s", no_retry.steps[0].policies(no_retry.runtime)).active
