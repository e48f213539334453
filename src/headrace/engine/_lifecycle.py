"""A run's lifecycle, as the ledger records it: one small state machine.

::

    (none) --start--> running --interrupt--> interrupted --resume--> running
                         |----fail---------> failed      --resume--> running
                         |----publish------> publishing  --resume--> publishing
                                                |--complete--> completed
                                                |--stop------> stopped (max_failures)
                                                |--fail/interrupt--> publishing

``start`` (a run without ``--resume``) begins again from any state. A killed run leaves
``running`` (or ``publishing``) behind, which ``--resume`` continues. A refused transition
raises and changes nothing: a refused ``--resume`` of a completed run leaves it completed.
"""

from __future__ import annotations

from enum import StrEnum

from headrace.errors import ConfigError


class ResumeError(ConfigError):
    """``--resume`` cannot continue: nothing to resume, or the pipeline or input changed."""


class RunState(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    PUBLISHING = "publishing"  # the final checkpoint is committed; the output is being made final
    COMPLETED = "completed"
    STOPPED = "stopped"  # stopped at max_failures and published what it had


S = RunState
TRANSITIONS: dict[tuple[RunState, str], RunState] = {
    (S.RUNNING, "resume"): S.RUNNING,  # killed: its row still says running
    (S.INTERRUPTED, "resume"): S.RUNNING,
    (S.FAILED, "resume"): S.RUNNING,
    (S.PUBLISHING, "resume"): S.PUBLISHING,  # finish the publication; read nothing
    (S.RUNNING, "interrupt"): S.INTERRUPTED,
    (S.RUNNING, "fail"): S.FAILED,
    (S.RUNNING, "publish"): S.PUBLISHING,
    (S.PUBLISHING, "publish"): S.PUBLISHING,
    (S.PUBLISHING, "complete"): S.COMPLETED,
    (S.PUBLISHING, "stop"): S.STOPPED,
    (S.PUBLISHING, "fail"): S.PUBLISHING,  # --resume finishes it
    (S.PUBLISHING, "interrupt"): S.PUBLISHING,
}

_REFUSED_RESUME = {
    S.COMPLETED: ("nothing to resume: the last run completed",
                  "run without --resume to run again"),
    S.STOPPED: ("nothing to resume: the last run stopped at max_failures and published what "
                "it had", "fix the input or raise runtime.max_failures, then run without "
                "--resume"),
}


def next_state(state: RunState | None, event: str) -> RunState:
    """The state after ``event``; ``ResumeError`` for a refused resume, ``ValueError`` for
    a transition the engine never makes (a bug)."""
    if event == "start":
        return S.RUNNING
    if state is None:
        raise ValueError(f"no run to {event}")
    if event == "resume" and state in _REFUSED_RESUME:
        message, hint = _REFUSED_RESUME[state]
        raise ResumeError(message, hint=hint)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"a run that is {state} cannot {event}") from None


def resumable(state: RunState | None) -> bool:
    """Whether ``--resume`` would continue a run that ended in ``state``."""
    return state is not None and (state, "resume") in TRANSITIONS
