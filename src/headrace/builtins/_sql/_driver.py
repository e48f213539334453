"""asyncpg, imported lazily with an install hint; DSNs shown without their password; which
driver errors mean "the database is unreachable for now" (transient)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from headrace.config import redact, register_secret
from headrace.errors import PluginError

INSTALL_HINT = "pip install 'headrace[postgres]'"
CONNECT_HINT = ("is the database up and the DSN right? refused connections are retried per "
                "the plugin's retry: policy")
T = TypeVar("T")


def asyncpg_module() -> ModuleType:
    """The asyncpg module, or a PluginError saying how to install it."""
    try:
        import asyncpg
    except ImportError:
        raise PluginError(f"the postgres plugins need asyncpg, which is not installed: "
                          f"{INSTALL_HINT}", hint=INSTALL_HINT) from None
    return asyncpg


def transient_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures: worth another attempt once the database is back."""
    asyncpg = asyncpg_module()
    exceptions = asyncpg.exceptions
    return (
        OSError,  # refused, reset, unreachable (ConnectionError is a subclass)
        TimeoutError,  # pool acquire and connect timeouts
        asyncpg.PostgresConnectionError,  # SQLSTATE class 08
        exceptions.ConnectionDoesNotExistError,  # the connection died under a query
        exceptions.TooManyConnectionsError,
        exceptions.CannotConnectNowError,  # starting up / shutting down
        exceptions.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
        exceptions.CrashShutdownError,
        exceptions.SerializationError,
        exceptions.DeadlockDetectedError,
    )


async def connect_with_policy(policy: Any, connect: Callable[[], Awaitable[T]]) -> T:
    """``connect()`` under the plugin's retry policy: a database that is still starting
    (connection refused, ``CannotConnectNow``) is tried again with backoff; a wrong
    database, role or password (not transient) fails at once. Raises ``RetriesExhausted``
    or the driver's error."""
    return await (connect() if policy is None else policy.call(connect))


def protect_dsn(dsn: str) -> str:
    """Register the DSN's password as a secret (hidden in every message from now on) and
    return the DSN without it: how messages and fingerprints name the database."""
    parts = urlsplit(dsn)
    if parts.password:
        register_secret(parts.password)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in query:
        if name.lower() in ("password", "passfile", "sslpassword") and value:
            register_secret(value)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    kept = "&".join(f"{k}={v}" for k, v in query if k.lower() not in
                    ("password", "sslpassword"))
    return redact(urlunsplit((parts.scheme, netloc, parts.path, kept, "")))


def describe_error(exc: BaseException) -> str:
    """``Class: message`` with secrets hidden; the detail of a Postgres error when it has one."""
    text = str(exc) or type(exc).__name__
    detail: Any = getattr(exc, "detail", None)
    if detail and detail not in text:
        text = f"{text} ({detail})"
    return redact(f"{type(exc).__name__}: {text}")
