"""An example third-party plugin package for headrace: a source, a step and a sink.

headrace loads them through the entry points in ``pyproject.toml``; nothing here is imported
until a pipeline uses one of them.
"""

from ._label import LabelOptions, LabelStep
from ._ndjson import NdjsonOptions, NdjsonSink
from ._sequence import SequenceOptions, SequenceSource

__all__ = [
    "LabelOptions",
    "LabelStep",
    "NdjsonOptions",
    "NdjsonSink",
    "SequenceOptions",
    "SequenceSource",
]
