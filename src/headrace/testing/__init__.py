"""The test kit: what headrace's own tests and plugin authors' tests use.

- ``ListSource`` / ``ListSink``: records from and into Python lists, usable in pipeline files
  (``use: headrace.testing:ListSource``); ``ListSink.collected(name)`` returns what was written.
- ``FakeClock``: a ``headrace.plugin.Clock`` with virtual time.
- ``run_pipeline``: a whole pipeline through the real engine, in-process.
- ``check_plugin`` / ``assert_conforms``: the conformance suite (see docs/testing-plugins.md);
  ``check_installed`` is what ``headrace plugins check`` runs.
- ``headrace.testing.pytest_plugin``: the fixtures ``fake_clock``, ``run_pipeline`` and
  ``plugin_conformance``.

Layer: above ``headrace.engine`` and ``headrace.plugin``, below ``headrace.cli``. Importing it
does not import pytest.
"""

from ._clock import FakeClock
from ._conformance import assert_conforms, check_installed, check_plugin, parse_settings
from ._harness import DEFAULT_TIMEOUT, SAMPLE_RECORDS
from ._list import ListSink, ListSinkOptions, ListSource, ListSourceOptions
from ._report import CheckResult, ConformanceReport
from ._run import RunOutcome, run_pipeline

__all__ = [
    "DEFAULT_TIMEOUT",
    "SAMPLE_RECORDS",
    "CheckResult",
    "ConformanceReport",
    "FakeClock",
    "ListSink",
    "ListSinkOptions",
    "ListSource",
    "ListSourceOptions",
    "RunOutcome",
    "assert_conforms",
    "check_installed",
    "check_plugin",
    "parse_settings",
    "run_pipeline",
]
