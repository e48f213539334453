"""The frame steps: ``pandas``, ``numpy`` and ``sql`` (a whole SELECT over each batch).

Inside: ``_convert`` (Arrow <-> pandas/numpy, values that do not convert back), ``_faults``
(finding the records a whole-batch call fails on), ``_query`` (checking and running a
SELECT on the expression engine's DuckDB), and one module per step. pandas is imported only
when a pandas step is built; duckdb when a sql step is.
"""

from ._numpy_step import NumpyStep
from ._pandas_step import PandasStep
from ._sql_step import SqlStep

__all__ = ["NumpyStep", "PandasStep", "SqlStep"]
