"""The run lifecycle (``engine/_lifecycle.py``): every transition, and refused ones that
change nothing, on the table and in a real ledger file."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.engine import Checkpoint, Ledger, ResumeError
from headrace.engine._lifecycle import RunState, next_state, resumable

S = RunState
EVENTS = ("start", "resume", "interrupt", "fail", "publish", "complete", "stop")

# (state, event) -> the next state, "refused" (ResumeError) or "bug" (never made by the engine)
EXPECTED: dict[tuple[RunState | None, str], RunState | str] = {
    **{(state, "start"): S.RUNNING for state in (None, *RunState)},
    (None, "resume"): "bug",
    (S.RUNNING, "resume"): S.RUNNING,
    (S.INTERRUPTED, "resume"): S.RUNNING,
    (S.FAILED, "resume"): S.RUNNING,
    (S.PUBLISHING, "resume"): S.PUBLISHING,
    (S.COMPLETED, "resume"): "refused",
    (S.STOPPED, "resume"): "refused",
    (S.RUNNING, "interrupt"): S.INTERRUPTED,
    (S.RUNNING, "fail"): S.FAILED,
    (S.RUNNING, "publish"): S.PUBLISHING,
    (S.PUBLISHING, "publish"): S.PUBLISHING,
    (S.PUBLISHING, "complete"): S.COMPLETED,
    (S.PUBLISHING, "stop"): S.STOPPED,
    (S.PUBLISHING, "fail"): S.PUBLISHING,
    (S.PUBLISHING, "interrupt"): S.PUBLISHING,
}
CASES = [(state, event) for state in (None, *RunState) for event in EVENTS]


@pytest.mark.parametrize(("state", "event"), CASES,
                         ids=[f"{s or 'none'}-{e}" for s, e in CASES])
def test_transition_table(state: RunState | None, event: str) -> None:
    """Each (state, event) pair goes where the table says; anything else is refused."""
    expected = EXPECTED.get((state, event), "bug")
    if expected == "refused":
        with pytest.raises(ResumeError):
            next_state(state, event)
    elif expected == "bug":
        with pytest.raises(ValueError):
            next_state(state, event)
    else:
        assert next_state(state, event) == expected


@pytest.mark.parametrize("state", list(RunState))
def test_resumable_matches_the_table(state: RunState) -> None:
    """The summary's resume hint agrees with what --resume would do."""
    assert resumable(state) == (EXPECTED[(state, "resume")] not in ("refused", "bug"))


def _status(ledger: Ledger) -> str | None:
    return ledger.previous()


def _ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "run")
    ledger.open()
    return ledger


@pytest.mark.parametrize("final", ["complete", "stop"])
def test_a_refused_resume_changes_nothing(tmp_path: Path, final: str) -> None:
    """A --resume refused after a completed or stopped run leaves the ledger as it was,
    however often it is tried; ending the refused run records nothing."""
    ledger = _ledger(tmp_path)
    ledger.begin("h", {"f": 1}, resume=False)
    ledger.commit(Checkpoint({"offset": 1}, {}, {}, 5))
    ledger.mark_publishing()
    ledger.end(final)
    ledger.close()
    expected = "completed" if final == "complete" else "stopped"
    for _ in range(3):
        again = _ledger(tmp_path)
        with pytest.raises(ResumeError):
            again.begin("h", {"f": 1}, resume=True)
        again.end("fail")  # what the runner does after the refusal: a no-op
        assert _status(again) == expected
        again.close()


def test_a_resume_refused_for_a_changed_pipeline_keeps_it_resumable(tmp_path: Path) -> None:
    """--resume of an interrupted run with a changed pipeline is refused and the run stays
    interrupted, so resuming with the pipeline as it was still works."""
    ledger = _ledger(tmp_path)
    ledger.begin("h", {"f": 1}, resume=False)
    ledger.commit(Checkpoint({"offset": 1}, {}, {}, 5))
    ledger.end("interrupt")
    ledger.close()
    changed = _ledger(tmp_path)
    with pytest.raises(ResumeError, match="pipeline changed"):
        changed.begin("other", {"f": 1}, resume=True)
    changed.end("fail")
    assert _status(changed) == "interrupted"
    changed.close()
    same = _ledger(tmp_path)
    checkpoint = same.begin("h", {"f": 1}, resume=True)
    assert checkpoint is not None and checkpoint.records == 5
    assert _status(same) == "running"
    same.close()


def test_publishing_stays_until_published(tmp_path: Path) -> None:
    """A run that failed or was interrupted while publishing stays publishing; a resumed run
    that publishes ends completed."""
    ledger = _ledger(tmp_path)
    ledger.begin("h", {"f": 1}, resume=False)
    ledger.mark_publishing()
    ledger.end("interrupt")
    assert _status(ledger) == "publishing"
    ledger.close()
    resumed = _ledger(tmp_path)
    resumed.begin("h", {"f": 1}, resume=True)
    assert _status(resumed) == "publishing"
    resumed.end("fail")
    assert _status(resumed) == "publishing"
    resumed.close()
    last = _ledger(tmp_path)
    last.begin("h", {"f": 1}, resume=True)
    last.mark_publishing()
    last.end("complete")
    assert _status(last) == "completed"
    last.close()
