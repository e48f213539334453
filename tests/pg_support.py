"""Helpers for tests against the real PostgreSQL server: reachability (skip on a laptop
without one, fail in CI), unique table names dropped afterwards, and a TCP proxy that takes
the database "down" and "up" for one client without touching the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DSN = os.environ.get("HEADRACE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
HOST, PORT = "127.0.0.1", 5432


def _run(coro: Any) -> Any:
    """Run ``coro`` on a loop of its own, in a thread (the caller may be inside a loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def query(sql: str, *args: Any, dsn: str = DSN) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own; rows as tuples."""
    import asyncpg

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return _run(go())


def require_postgres() -> None:
    """Skip (with the reason) when the server does not answer; in CI (CI=true) fail."""
    try:
        import asyncpg  # noqa: F401

        query("SELECT 1")
    except Exception as exc:
        reason = f"PostgreSQL is not reachable at {DSN}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class Tables:
    """Unique table names for one test; every one handed out is dropped at the end."""

    def __init__(self) -> None:
        self.prefix = f"hr_{uuid.uuid4().hex[:10]}"
        self.names: list[str] = []

    def name(self, what: str) -> str:
        made = f"{self.prefix}_{what}"
        self.names.append(made)
        return made

    def drop(self) -> None:
        for name in self.names:
            query(f'DROP TABLE IF EXISTS "{name}"')


@contextlib.contextmanager
def tables() -> Iterator[Tables]:
    require_postgres()
    made = Tables()
    try:
        yield made
    finally:
        made.drop()


class Proxy:
    """A TCP proxy on 127.0.0.1:<port> forwarding to the server, in a thread of its own.

    ``down()`` stops listening and resets every open connection (the database "crashed"
    for whoever connects through the proxy); ``up()`` listens again on the same port.
    """

    def __init__(self, target: tuple[str, int] = (HOST, PORT)) -> None:
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pg-proxy",
                                        daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def __enter__(self) -> Proxy:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _up(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(OSError, AttributeError):
                transport.abort()  # a reset, as a crashed server leaves it
        self._writers.clear()

    def up(self) -> None:
        self._call(self._up())

    def down(self) -> None:
        self._call(self._down())

    def dsn(self) -> str:
        return DSN.replace(f"{HOST}:{PORT}", f"{HOST}:{self.port}")
