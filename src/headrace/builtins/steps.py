"""Built-in steps."""

from ._python_step import PythonStep
from ._sql_steps import CastStep, DeriveStep, FilterStep, RenameStep, SelectStep

__all__ = ["CastStep", "DeriveStep", "FilterStep", "PythonStep", "RenameStep", "SelectStep"]
