"""How a call tells the engine it failed: transient (try again) or for good.

The engine retries a call that raised a transient error, per the step's ``retry`` policy: a
``TransientError`` (and its ``Retry`` signal), ``TimeoutError``, ``ConnectionError``, a class a
step lists in ``Step.transient_errors``, or one named in ``retry.retry_on``. Every other error
is terminal: the record goes to the dead-letter output at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class TransientError(Exception):
    """A failure that may pass (a 503, a dropped connection). ``retry_after`` is a floor, in
    seconds, for the wait before the next attempt (from a server's ``Retry-After``)."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Retry(TransientError):
    """Raised by a step to ask for another attempt after at least ``delay`` seconds."""

    def __init__(self, delay: float = 0.0, reason: str = "retry requested") -> None:
        super().__init__(reason, retry_after=delay)


class RetriesExhausted(Exception):
    """A call kept failing with transient errors until its attempts ran out (or its breaker
    stayed open past ``max_wait``). ``error`` is the last failure."""

    def __init__(self, error: BaseException, attempts: int, first_at: str, last_at: str) -> None:
        super().__init__(f"gave up after {attempts} attempt{'s' * (attempts != 1)}: "
                         f"{type(error).__name__}: {error}")
        self.error = error
        self.attempts = attempts
        self.first_at = first_at  # wall-clock ISO times, for the dead-letter record
        self.last_at = last_at


class BreakerOpen(TransientError):
    """The circuit breaker for this call's key stayed open longer than ``max_wait``."""


class CallPolicy(Protocol):
    """The step's timeout, retry, breaker and rate limit, for plugins that apply them per
    record (an HTTP call per record) rather than letting the engine apply them per batch."""

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, key: str | None = None, slots: Any = None
    ) -> T:
        """Run ``fn`` under the policies, per ``key`` (e.g. a host; default: the step), each
        attempt holding one of ``slots`` (an ``anyio.CapacityLimiter``) if given; raise
        ``RetriesExhausted`` or the terminal error."""
        ...

    def is_transient(self, exc: BaseException) -> bool:
        """Whether the retry policy would try ``exc``'s call again."""
        ...

    def retry_blocking(self, fn: Callable[..., T], arg: object, first_error: BaseException) -> T:
        """In a worker thread: retry ``fn(arg)`` after it failed with a transient error."""
        ...
