"""Fixtures for plugin authors' tests; loaded by the ``pytest11`` entry point ``headrace``
(or ``-p headrace.testing.pytest_plugin``).

- ``fake_clock``: a fresh ``FakeClock``.
- ``run_pipeline``: ``headrace.testing.run_pipeline`` with ``base_dir=tmp_path``.
- ``plugin_conformance``: ``headrace.testing.check_plugin`` with ``base_dir=tmp_path``::

      def test_conforms(plugin_conformance):
          plugin_conformance("source", "mysource", options={"path": "in.txt"}).assert_ok()

headrace itself is imported only when a fixture is used.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from headrace.testing import ConformanceReport, FakeClock, RunOutcome


@pytest.fixture
def fake_clock() -> FakeClock:
    """Virtual time: ``sleep`` returns at once and records its argument in ``sleeps``."""
    from headrace.testing import FakeClock

    return FakeClock()


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., RunOutcome]:
    """``run_pipeline(pipeline, *, overrides=(), resume=False)`` in ``tmp_path``."""
    from headrace.testing import run_pipeline as run

    return partial(run, base_dir=tmp_path)


@pytest.fixture
def plugin_conformance(tmp_path: Path) -> Callable[..., ConformanceReport]:
    """``plugin_conformance(kind, name, *, options=None, records=None, read_output=None)``:
    the conformance report, paths relative to ``tmp_path``; ``.assert_ok()`` fails the test
    with the report when a check failed."""
    from headrace.testing import check_plugin

    def check(kind: str, name: Any, **kwargs: Any) -> ConformanceReport:
        kwargs.setdefault("base_dir", tmp_path)
        return check_plugin(kind, name, **kwargs)

    return check
