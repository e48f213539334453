"""The ``validate`` step and schema inference (``headrace infer``).

Modules: ``_values`` (records as JSON, messages), ``_schema`` (loading and compiling JSON
Schemas), ``_vector`` (the Arrow screen), ``_checkers`` (JSON Schema / pydantic), ``_step``
(the plugin), ``infer`` (a starting schema from a sample).
"""

from ._step import ValidateOptions, ValidateStep

__all__ = ["ValidateOptions", "ValidateStep"]
