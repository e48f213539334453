"""What the engine gives every plugin instance: identity, logger, clock, run services."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from headrace.config import Locations

from ._signals import CallPolicy

if TYPE_CHECKING:
    import aiohttp


class Clock(Protocol):
    """Monotonic time and sleeping; the test kit's ``FakeClock`` implements it too."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class RunServices:
    """What every plugin of one run shares: metric counters, the stop flag, the HTTP
    session, the scratch root. Standalone (a plugin under test) it works on its own; the
    engine binds the run's stop flag when the run starts and closes it at the end.
    """

    def __init__(self) -> None:
        self._stopping: Callable[[], bool] = lambda: False
        self._session: aiohttp.ClientSession | None = None
        self._scratch: Path | None = None
        self._lock = threading.Lock()  # plugins count from worker threads too
        self.metrics: dict[tuple[str, str], float] = {}
        #: Errors plugins raised in ``close`` after the run had already failed.
        self.teardown_errors: list[str] = []
        #: Where steps keep state that must survive to ``--resume`` (the run folder); None
        #: when the run keeps no checkpoints (a folder under the scratch root is used then).
        self.state_root: Path | None = None

    def bind(self, stopping: Callable[[], bool]) -> None:
        self._stopping = stopping

    def emit(self, plugin_id: str, name: str, amount: float) -> None:
        key = (plugin_id, name)
        with self._lock:
            self.metrics[key] = self.metrics.get(key, 0.0) + amount

    def metric_totals(self) -> tuple[tuple[str, str, float], ...]:
        with self._lock:
            return tuple((plugin, name, total) for (plugin, name), total in self.metrics.items())

    @property
    def stopping(self) -> bool:
        return self._stopping()

    def scratch_dir(self, plugin_id: str) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="headrace-scratch-"))
        path = self._scratch / plugin_id
        path.mkdir(exist_ok=True)
        return path

    def state_dir(self, plugin_id: str) -> Path:
        root = self.state_root or self.scratch_dir("_state")
        path = root / plugin_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def http_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def aclose(self) -> None:
        """Close the shared session and remove the scratch root; after every plugin closed."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)


@dataclass(frozen=True)
class PluginContext:
    """Per-plugin context: its id, where the pipeline lives, a logger, a clock, and the run's
    shared services (metrics, stop flag, HTTP session, scratch directory)."""

    plugin_id: str
    base_dir: Path
    pipeline_name: str = "pipeline"
    locations: Locations | None = None
    config_path: tuple[str | int, ...] = ()
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("headrace.plugin"))
    #: The step's timeout/retry/breaker/rate limit, for steps that apply them per record.
    policy: CallPolicy | None = None
    clock: Clock = field(default_factory=SystemClock)
    services: RunServices = field(default_factory=RunServices)

    def resolve_path(self, path: str) -> Path:
        """A path from the pipeline file, relative to the pipeline file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def where(self, *key: str | int) -> str:
        """``file:line`` of one of this plugin's options, for error messages."""
        if self.locations is None:
            return self.plugin_id
        return self.locations.where((*self.config_path, *key))

    def emit(self, name: str, amount: float = 1.0) -> None:
        """Add ``amount`` to this plugin's counter ``name``: exported as the Prometheus
        counter ``headrace_plugin_total{plugin, name}`` and listed in the run summary.
        Cheap and thread-safe enough for worker threads (a dict update under the GIL)."""
        self.services.emit(self.plugin_id, name, amount)

    @property
    def stopping(self) -> bool:
        """True once the run was asked to stop (Ctrl-C, SIGTERM, max_failures): a source
        ends its current batch and returns; long-running calls wind down."""
        return self.services.stopping

    @property
    def scratch_dir(self) -> Path:
        """A private folder for temporary files, created on first use, removed after the
        run (not kept for ``--resume``: put state that must survive in checkpoints)."""
        return self.services.scratch_dir(self.plugin_id)

    @property
    def state_dir(self) -> Path:
        """A private folder kept with the run's checkpoints: state a ``stateful`` step must
        find again on ``--resume`` (see ``Step.resume_state``). Without checkpoints it is
        temporary, like ``scratch_dir``."""
        return self.services.state_dir(self.plugin_id)

    async def http_session(self) -> aiohttp.ClientSession:
        """The run's shared aiohttp session (one connection pool for all plugins), closed by
        the engine after every plugin closed. Do not close it yourself."""
        return await self.services.http_session()
