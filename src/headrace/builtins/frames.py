"""The frame steps, as their entry points load them: ``pandas``, ``numpy``, ``sql``."""

from ._frames import NumpyStep, PandasStep, SqlStep

__all__ = ["NumpyStep", "PandasStep", "SqlStep"]
