"""The ``validate`` step (its entry point loads this module, so a pipeline without it never
imports jsonschema-rs) and schema inference for ``headrace infer``."""

from ._validate import ValidateStep
from ._validate.infer import infer_file, infer_schema

__all__ = ["ValidateStep", "infer_file", "infer_schema"]
