"""Notices when something blocks the event loop, and names the code that does.

A task on the loop stamps a heartbeat every ``BEAT`` seconds; a daemon thread checks it. When
the heartbeat is older than the threshold, the thread samples the loop thread's stack and
reports the innermost frame outside asyncio/anyio/the standard library -- usually the plugin
calling ``time.sleep`` or reading a file on the loop. One warning per stall.
"""

from __future__ import annotations

import os
import queue
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import anyio

BEAT = 0.02  # seconds between heartbeats on the loop
_STDLIB = sysconfig.get_paths()["stdlib"]
_FRAMEWORK = ("asyncio", "anyio", "concurrent", "selectors")


@dataclass
class Stall:
    """One period the loop did not run other tasks: how long, and where it was."""

    seconds: float
    where: str


class LoopWatchdog:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.stalls: list[Stall] = []
        self._beat = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()

    async def run(self, report: Callable[[Stall], None]) -> None:
        """Heartbeat on the loop while a checker thread watches it; ``report(stall)`` runs on
        the loop for each stall, once it is over. Runs until cancelled."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        ended: queue.SimpleQueue[Stall] = queue.SimpleQueue()
        checker = threading.Thread(target=self._check, args=(ended.put,), daemon=True,
                                   name="headrace-loop-watchdog")
        checker.start()
        try:
            while True:
                self._beat = time.monotonic()
                self._report(ended, report)
                await anyio.sleep(BEAT)
        finally:
            self._stop.set()
            checker.join(BEAT * 5)  # brief: it reports a stall that just ended, then exits
            self._report(ended, report)

    def _report(self, ended: queue.SimpleQueue[Stall], report: Callable[[Stall], None]) -> None:
        while not ended.empty():
            stall = ended.get()
            self.stalls.append(stall)
            report(stall)

    def _check(self, found: Callable[[Stall], None]) -> None:
        stalled_beat: float | None = None  # the heartbeat the current stall started after
        where = ""
        longest = 0.0
        while True:
            stopping = self._stop.wait(BEAT)
            beat = self._beat
            if stalled_beat is not None and (beat != stalled_beat or stopping):
                found(Stall(round(longest, 3), where))  # the loop runs again (or we stop)
                stalled_beat = None
            if stopping:
                return
            late = time.monotonic() - beat
            if late >= self.threshold:
                if stalled_beat is None:
                    stalled_beat = beat
                    where = self._where()
                longest = late

    def _where(self) -> str:
        """The innermost frame of the loop thread that is not framework or stdlib code, and
        the pipeline's own code it was called from when that is elsewhere (a library)."""
        frame = sys._current_frames().get(self._loop_thread)
        innermost: FrameType | None = None
        while frame is not None:
            if _is_user_code(frame):
                if innermost is None:
                    innermost = frame
                if _is_own_code(frame):
                    break
            frame = frame.f_back
        if innermost is None:
            return "?"
        if frame is None or frame is innermost:
            return _describe(innermost)
        return f"{_describe(innermost)} via {_describe(frame)}"


def _is_user_code(frame: FrameType) -> bool:
    path = frame.f_code.co_filename
    if path.startswith("<") or (path.startswith(_STDLIB) and "site-packages" not in path):
        return False
    parts = Path(path).parts
    return not any(part in _FRAMEWORK for part in parts)


def _is_own_code(frame: FrameType) -> bool:
    """headrace itself or the user's modules: not an installed library."""
    path = frame.f_code.co_filename
    return "site-packages" not in path or f"{os.sep}headrace{os.sep}" in path


def _describe(frame: FrameType) -> str:
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{frame.f_lineno} in {code.co_name}()"
