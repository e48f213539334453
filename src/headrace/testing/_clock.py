"""``FakeClock``: virtual time for plugins and policies under test."""

from __future__ import annotations

import anyio
import anyio.lowlevel


class FakeClock:
    """A ``headrace.plugin.Clock`` whose time moves only when told to.

    ``sleep(s)`` records ``s`` in ``sleeps`` and moves time forward by it at once (it still
    yields to the event loop once). ``advance(s)`` moves time without sleeping. Set ``gate``
    to an ``anyio.Event`` to hold every sleep until the test sets it: the caller is then
    visibly "in its backoff" and can be cancelled there.

    Pass it as ``PluginContext(..., clock=FakeClock())``.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []
        self.gate: anyio.Event | None = None

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        began = self.time
        if self.gate is not None:
            await self.gate.wait()
        self.time = max(self.time, began + seconds)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        self.time += seconds
