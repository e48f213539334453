"""What decides whether records are valid: a JSON Schema (screened vectorised, decided by
jsonschema-rs) or a pydantic model. Both return the failing rows and their errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from headrace.plugin import Batch, DataError, cancellation_point

from ._schema import Where, compile_schema, schema_errors
from ._values import FieldError, format_path, rows_records, table_records

Failures = list[tuple[int, list[FieldError]]]  # (row index in the batch, its errors)
Count = Callable[[str, float], None]


class SchemaChecker:
    """A JSON Schema. Columnar batches are screened with pyarrow.compute where the schema
    allows (``_vector``), and only flagged rows are converted and validated record by record;
    rows batches, and schemas the screen cannot read, are validated record by record."""

    def __init__(self, schema: dict[str, Any], where: Where, *, formats: bool,
                 vectorize: bool, count: Count) -> None:
        self.schema = schema
        self.where = where
        self.formats = formats
        self.vectorize = vectorize
        self.count = count
        self.validator = compile_schema(schema, where, formats=formats)
        self._screens: dict[pa.Schema, Any] = {}

    def _screen(self, table_schema: pa.Schema) -> Any:
        screen = self._screens.get(table_schema, False)
        if screen is False:
            from ._vector import plan_screen

            screen = plan_screen(
                self.schema, table_schema, formats=self.formats,
                compile_sub=lambda sub: compile_schema(sub, self.where, formats=self.formats))
            self._screens[table_schema] = screen
        return screen

    def check(self, batch: Batch) -> Failures:
        if batch.is_columnar and self.vectorize:
            table = batch.to_arrow()
            screen = self._screen(table.schema)
            if screen is not None:
                from ._vector import screen_table

                flags = screen_table(screen, table, self.formats)
                indices = np.flatnonzero(flags)
                self.count("rows_screened", table.num_rows)
                self.count("rows_checked_per_record", len(indices))
                if not len(indices):
                    return []
                records = table_records(table.take(pa.array(indices, pa.int64())))
                return self._decide(records, [int(i) for i in indices])
        records = table_records(batch.to_arrow()) if batch.is_columnar else \
            rows_records(batch.to_rows())
        self.count("rows_checked_per_record", len(records))
        return self._decide(records, range(len(records)))

    def _decide(self, records: list[dict[str, Any]], indices: Any) -> Failures:
        is_valid = self.validator.is_valid
        failures: Failures = []
        for n, (index, record) in enumerate(zip(indices, records, strict=True)):
            if n % 1024 == 1023:
                cancellation_point()
            if not is_valid(record):
                failures.append((index, schema_errors(self.validator, record)))
        return failures


class ModelChecker:
    """A pydantic model (or anything pydantic's ``TypeAdapter`` takes: a dataclass, a
    TypedDict), validated over a whole batch in one call; records are not changed."""

    def __init__(self, model: Any, where: str, count: Count) -> None:
        from pydantic import TypeAdapter

        from headrace.errors import ConfigValueError

        try:
            self.adapter: Any = TypeAdapter(list[model])
        except Exception as exc:  # pydantic cannot build a validator from it
            raise ConfigValueError(f"{where}: {model!r} is not a model pydantic can validate "
                                   f"with: {type(exc).__name__}: {exc}") from None
        self.count = count

    def check(self, batch: Batch) -> Failures:
        from pydantic import ValidationError

        rows = batch.to_rows()
        self.count("rows_checked_per_record", len(rows))
        try:
            self.adapter.validate_python(rows)
        except ValidationError as exc:
            found: dict[int, list[FieldError]] = {}
            for error in exc.errors(include_url=False):
                loc = error["loc"]
                if not loc or not isinstance(loc[0], int):
                    continue
                found.setdefault(loc[0], []).append(
                    (format_path([p if isinstance(p, int) else str(p) for p in loc[1:]]),
                     error["msg"]))
            return sorted(found.items())
        except Exception as exc:  # the model's own code broke: the engine isolates the record
            raise DataError(f"{type(exc).__name__}: {exc}") from exc
        return []
