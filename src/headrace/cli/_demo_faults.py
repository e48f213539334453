"""Fault injection for ``headrace demo-api``: the configuration (from CLI flags), per-request
overrides (``?fault_<kind>=...`` query parameters), the seeded dice, and a per-client
token-bucket rate limiter. No aiohttp here; ``_demo_api`` applies the decisions."""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from enum import StrEnum

MAX_SLEEP = 300.0  # no injected wait (latency, timeout) lasts longer than this


class LatencyDist(StrEnum):
    fixed = "fixed"
    uniform = "uniform"
    lognormal = "lognormal"


class RetryAfterFormat(StrEnum):
    seconds = "seconds"
    http_date = "http-date"


# Kinds decided by a probability, in the order they are tried; the first hit wins. The first
# four fail the request before its handler runs (a POST body is never accepted); the last three
# let the handler do its work and then spoil the answer: ``ack_loss`` drops it (the client
# cannot tell a lost acknowledgement from a lost request), the others shape it.
RATE_KINDS = ("timeout", "reset", "429", "error", "ack_loss", "slow_body", "malformed")


def parse_duration(text: str) -> float:
    """'20ms', '1.5s', '250us' or a bare number of seconds -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|m)?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 20ms, 1.5s)")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def parse_rate_limit(text: str) -> float:
    """'50/s', '600/m' -> requests per second."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*/\s*(s|sec|m|min)\s*", text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (try 50/s or 600/m)")
    per = 1.0 if match.group(2) in ("s", "sec") else 60.0
    return float(match.group(1)) / per


def parse_probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a rate is between 0 and 1, got {text!r}")
    return value


@dataclass(frozen=True)
class FaultConfig:
    """What misbehaviour to inject; every rate is a probability per request (0 = never)."""

    latency: float = 0.0
    latency_dist: LatencyDist = LatencyDist.fixed
    rates: Mapping[str, float] = field(default_factory=dict)
    retry_after: float = 1.0
    retry_after_format: RetryAfterFormat = RetryAfterFormat.seconds
    timeout_max: float = MAX_SLEEP
    slow_body_pause: float = 0.05
    rate_limit: float | None = None  # requests per second per client address

    def rate(self, kind: str) -> float:
        return self.rates.get(kind, 0.0)

    def with_overrides(self, query: Mapping[str, str]) -> FaultConfig:
        """This config with the request's ``fault_*`` query parameters applied."""
        if not any(key.startswith("fault_") for key in query):
            return self
        rates = dict(self.rates)
        changes: dict[str, object] = {}
        for key, value in query.items():
            if not key.startswith("fault_"):
                continue
            kind = key.removeprefix("fault_")
            if kind in RATE_KINDS:
                rates[kind] = parse_probability(value)
            elif kind == "latency":
                changes["latency"] = parse_duration(value)
            elif kind == "latency_dist":
                changes["latency_dist"] = LatencyDist(value)
            elif kind == "retry_after":
                changes["retry_after"] = parse_duration(value)
            elif kind == "retry_after_format":
                changes["retry_after_format"] = RetryAfterFormat(value)
            else:
                raise ValueError(f"unknown fault parameter {key!r}")
        return replace(self, rates=rates, **changes)  # type: ignore[arg-type]


class Dice:
    """The seeded random source behind every fault decision (reproducible with ``--seed``)."""

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed)

    def pick(self, config: FaultConfig) -> str | None:
        """The fault kind to inject on this request, or None."""
        for kind in RATE_KINDS:
            rate = config.rate(kind)
            if rate > 0 and self._random.random() < rate:
                return kind
        return None

    def latency(self, config: FaultConfig) -> float:
        base = config.latency
        if base <= 0:
            return 0.0
        if config.latency_dist is LatencyDist.uniform:
            delay = self._random.uniform(0, 2 * base)
        elif config.latency_dist is LatencyDist.lognormal:
            delay = base * math.exp(self._random.gauss(0.0, 0.5))  # median = base
        else:
            delay = base
        return min(delay, MAX_SLEEP)

    def error_status(self) -> int:
        return self._random.choice((500, 502, 503))


def retry_after_value(seconds: float, fmt: RetryAfterFormat,
                      now: Callable[[], float] = time.time) -> str:
    """A ``Retry-After`` header value: whole seconds (rounded up) or an HTTP-date."""
    whole = max(0, math.ceil(seconds))
    if fmt is RetryAfterFormat.http_date:
        return formatdate(now() + whole, usegmt=True)
    return str(whole)


class RateLimiter:
    """A token bucket per client key: ``rate`` requests per second, bursts up to one second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        """0.0 when allowed; otherwise the seconds until a request would be allowed."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
