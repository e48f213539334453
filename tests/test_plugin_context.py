"""The plugin context's services in a real (in-process) run: counters reach the summary,
the HTTP session is one per run and closed after it, the scratch folder is removed."""

from __future__ import annotations

from pathlib import Path

from headrace.testing import ListSink, run_pipeline
from tests.conftest import demo_api
from tests.context_plugins import SEEN


def test_context_services(tmp_path: Path) -> None:
    records = [{"id": i} for i in range(10)]
    with demo_api() as url:
        outcome = run_pipeline({
            "source": {"use": "headrace.testing:ListSource", "records": records,
                       "batch_size": 3},
            "steps": [{"use": "tests.context_plugins:ContextProbe", "id": "a",
                       "url": f"{url}/healthz"},
                      {"use": "tests.context_plugins:ContextProbe", "id": "b",
                       "url": f"{url}/healthz"}],
            "sink": {"use": "headrace.testing:ListSink", "name": "context"},
        }, base_dir=tmp_path)
    assert outcome.status == "ok", outcome.error
    assert ListSink.collected("context") == records
    metrics = outcome.summary["plugin_metrics"]
    assert metrics == {"a": {"records": 10, "batches": 4}, "b": {"records": 10, "batches": 4}}
    assert len(SEEN["sessions"]) == 1  # one session for the whole run
    assert SEEN["session"].closed  # closed by the engine after the plugins
    assert SEEN["statuses"] == [200] * 8
    assert len(SEEN["scratch"]) == 2  # a folder per plugin ...
    assert not any(folder.exists() for folder in SEEN["scratch"])  # ... removed afterwards
    assert SEEN["stopping"] is False
