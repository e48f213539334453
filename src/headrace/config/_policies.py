"""Resilience policies a step can carry: timeout, retry, breaker, rate limit.

Each may be set on a step or, as a default for every step, under ``runtime:``. Durations are
seconds, as a number or with a unit: ``250ms``, ``5s``, ``2m``, ``1h``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h)?\s*$")
_RATE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]*)\s*(ms|s|sec|second|min|minute|m|h|hour)\s*$"
)
_RATE_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0,
               "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_duration(value: Any) -> Any:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``3`` -> seconds; other values go on to validation."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 500ms, 5s, 2m, 1h, or seconds)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_byte_size(value: Any) -> Any:
    """``"10MB"``, ``"64KiB"``, ``4096`` -> bytes (binary units); other values go on."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size (e.g. 512KB, 10MB, 1GB, or bytes)")
        return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])
    return value


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Policy):
    """Retry transient failures with exponential backoff and full jitter."""

    attempts: int = Field(default=3, ge=1, le=100, description="Calls in all, the first included.")
    base: Duration = Field(default=0.1, gt=0, le=3600,
                           description="Backoff ceiling of the first retry, in seconds.")
    cap: Duration = Field(default=30.0, gt=0, le=86400,
                          description="Largest backoff ceiling, in seconds.")
    retry_on: tuple[str, ...] = Field(
        default=(), description="More exception class names to treat as transient."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryPolicy:
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap}) must be >= base ({self.base})")
        return self


class BreakerPolicy(_Policy):
    """A circuit breaker: after too many failures, calls wait instead of failing."""

    failures: int = Field(default=5, ge=1, le=10_000,
                          description="Consecutive failures that open the breaker.")
    failure_rate: float | None = Field(
        default=None, gt=0, le=1,
        description="Also open when this share of the last `window` calls failed.",
    )
    window: int = Field(default=20, ge=1, le=10_000, description="Calls the failure rate spans.")
    reset_after: Duration = Field(default=30.0, gt=0, le=86400,
                                  description="Seconds open before probe calls are let through.")
    half_open_calls: int = Field(default=1, ge=1, le=1000,
                                 description="Probe calls allowed at once while half-open.")
    max_wait: Duration = Field(
        default=300.0, ge=0, le=86400,
        description="Longest a call waits for an open breaker before it fails.",
    )


def parse_rate(value: Any) -> Any:
    """``"50/s"``, ``"600/min"``, ``"5/2s"`` -> ``{rate, per}``."""
    if isinstance(value, str):
        match = _RATE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a rate (e.g. 50/s, 600/min, 5/2s)")
        count, multiple, unit = match.groups()
        return {"rate": float(count), "per": float(multiple or 1) * _RATE_UNITS[unit]}
    return value


class RateLimitPolicy(_Policy):
    rate: float = Field(gt=0, le=1_000_000, description="Calls allowed per `per` seconds.")
    per: Duration = Field(default=1.0, gt=0, le=86400, description="The period, in seconds.")


RateLimit = Annotated[RateLimitPolicy, BeforeValidator(parse_rate)]


def _retry_shorthand(value: Any) -> Any:
    """``retry: 5`` means five attempts; ``retry: false`` means one."""
    if value is False:
        return {"attempts": 1}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"attempts": value}
    return value


def _breaker_shorthand(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


Retry = Annotated[RetryPolicy, BeforeValidator(_retry_shorthand)]
Breaker = Annotated[BreakerPolicy | None, BeforeValidator(_breaker_shorthand)]


class Policies(_Policy):
    """The effective policies of one step, its own settings over the runtime defaults."""

    timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy | None = None
    rate_limit: RateLimitPolicy | None = None
