"""The sink's asyncpg pool, with saturation as metrics.

Every ``acquire`` is timed: the seconds spent waiting go to ``pool_wait_seconds``, and an
acquire that had to wait (no idle connection, the pool at ``max``) counts in ``pool_waits``.
When the pool closes, the largest size and the most waiters seen go to the summary as
``pool_size_peak`` and ``pool_waiters_peak``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
from pydantic import Field, model_validator

from headrace.config import Duration
from headrace.plugin import Options, PluginContext

from ._driver import asyncpg_module

WAITED = 0.001  # seconds: an acquire slower than this waited for a connection


class PoolOptions(Options):
    min: int = Field(default=1, ge=0, le=1000, description="Connections kept open.")
    max: int = Field(default=4, ge=1, le=1000, description="Most connections at once.")
    timeout: Duration = Field(default=30.0, gt=0, le=3600,
                           description="Seconds to wait for a free connection (acquire).")

    @model_validator(mode="after")
    def _order(self) -> PoolOptions:
        if self.min > self.max:
            raise ValueError(f"pool.min ({self.min}) is more than pool.max ({self.max})")
        return self


class Pool:
    """An asyncpg pool; unopened until ``open``, unusable after ``close``."""

    def __init__(self, dsn: str, options: PoolOptions, context: PluginContext,
                 connect: dict[str, Any]) -> None:
        self.dsn = dsn
        self.options = options
        self.context = context
        self.connect = connect
        self._pool: Any = None
        self._closed = False
        self.waiters = 0
        self.peak_waiters = 0
        self.peak_size = 0

    async def open(self) -> None:
        if self._closed:
            raise RuntimeError("the pool was closed")
        asyncpg = asyncpg_module()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.options.min, max_size=self.options.max, **self.connect)

    async def acquire(self) -> Any:
        """A connection (release it with ``release``); TimeoutError after ``timeout``."""
        if self._pool is None:
            raise RuntimeError("the pool is not open")
        started = time.monotonic()
        self.waiters += 1
        self.peak_waiters = max(self.peak_waiters, self.waiters)
        try:
            conn = await self._pool.acquire(timeout=self.options.timeout)
        finally:
            self.waiters -= 1
            waited = time.monotonic() - started
            self.context.emit("pool_wait_seconds", waited)
            if waited > WAITED:
                self.context.emit("pool_waits")
        self.peak_size = max(self.peak_size, self._pool.get_size())
        return conn

    async def release(self, conn: Any, *, discard: bool = False) -> None:
        """Give ``conn`` back; ``discard`` closes it first (it may hold a broken session):
        the pool opens a new one when it is next needed."""
        asyncpg = asyncpg_module()
        # A connection that died while acquired was already handed back by asyncpg: its
        # proxy then refuses every call (InterfaceError), and there is nothing left to do.
        with anyio.CancelScope(shield=True), \
                contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError,
                                    asyncpg.InterfaceError):
            if discard:
                conn.terminate()
            await self._pool.release(conn, timeout=5)

    def stats(self) -> dict[str, int]:
        pool = self._pool
        return {"size": pool.get_size() if pool else 0,
                "idle": pool.get_idle_size() if pool else 0,
                "max": self.options.max, "waiters": self.waiters}

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is None:
            return
        self.context.emit("pool_size_peak", self.peak_size)
        self.context.emit("pool_waiters_peak", self.peak_waiters)
        with anyio.move_on_after(10, shield=True) as scope:
            await pool.close()
        if scope.cancelled_caught:
            pool.terminate()
