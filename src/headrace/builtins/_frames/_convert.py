"""Arrow <-> pandas and Arrow <-> numpy for the frame steps, and finding the values that
do not convert back.

pandas is optional (``headrace[pandas]``) and imported only when a step needs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from headrace.errors import ConfigValueError

if TYPE_CHECKING:
    import pandas as pd

Backend = Literal["pyarrow", "numpy"]
#: What pyarrow raises for a Python value it cannot put into a column.
CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def import_pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ConfigValueError("this step needs pandas",
                               hint="pip install 'headrace[pandas]'") from None
    return pandas


# -- pandas ---------------------------------------------------------------------------------
def to_frame(table: pa.Table, backend: Backend) -> pd.DataFrame:
    """The batch as a DataFrame indexed 0..n-1 (the index is how rows keep their identity).

    ``pyarrow``: columns are ``pd.ArrowDtype`` over the batch's own buffers (no copy for
    numbers, nulls stay ``pd.NA``, integers stay integers). ``numpy``: classic numpy dtypes
    (a copy; an integer column with nulls becomes float64 with NaN).
    """
    pd = import_pandas()
    if backend == "pyarrow":
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    return table.to_pandas()


class ConversionFaults(Exception):
    """Values of a returned column that Arrow cannot store: ``faults`` maps each row
    position to its reason."""

    def __init__(self, faults: dict[int, str]) -> None:
        super().__init__(f"{len(faults)} value(s) do not convert")
        self.faults = faults


def frame_to_table(frame: pd.DataFrame, input_schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table (its index dropped, the input's schema metadata kept).

    Raises ``ConversionFaults`` naming the rows (by position) whose values do not fit their
    column, e.g. a string in a column of ints; the other rows would convert.
    """
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except CONVERSION_ERRORS:
        faults: dict[int, str] = {}
        for name in frame.columns:
            column = frame[name]
            try:
                pa.Array.from_pandas(column)
            except CONVERSION_ERRORS:
                values = column.to_numpy(dtype=object)
                target = _column_type(values)
                for pos, reason in bad_values(values, target).items():
                    faults.setdefault(pos, f"column {name!r}: {reason}")
        if not faults:
            raise
        raise ConversionFaults(faults) from None
    return table.replace_schema_metadata(input_schema.metadata)


# -- numpy ----------------------------------------------------------------------------------
def _null_mask(array: pa.Array) -> np.ndarray:
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, bitorder="little")[array.offset: array.offset + len(array)]
    return valid == 0


def _values(array: pa.Array) -> np.ndarray:
    """The values of ``array`` (whatever sits under its nulls), without pyarrow's
    ``to_numpy``: that imports pandas (~0.2 s) on first use."""
    kind, n, offset = array.type, len(array), array.offset
    buffer = array.buffers()[1] if len(array.buffers()) > 1 else None
    if buffer is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                               or pa.types.is_timestamp(kind) or pa.types.is_duration(kind)
                               or pa.types.is_date64(kind)):
        if pa.types.is_timestamp(kind) or pa.types.is_date64(kind):
            dtype = np.dtype(f"datetime64[{getattr(kind, 'unit', 'ms')}]")
        elif pa.types.is_duration(kind):
            dtype = np.dtype(f"timedelta64[{kind.unit}]")
        else:
            dtype = np.dtype(kind.to_pandas_dtype())
        view = np.frombuffer(buffer, dtype=dtype)[offset: offset + n]
        view.flags.writeable = False  # Arrow's memory: shared, immutable
        return view
    if buffer is not None and pa.types.is_boolean(kind):
        bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
        return bits[offset: offset + n].astype(bool)
    if pa.types.is_date32(kind):
        days = np.frombuffer(buffer, dtype=np.int32)[offset: offset + n]  # type: ignore[arg-type]
        return days.astype("datetime64[D]")
    values = np.empty(n, dtype=object)  # strings, decimals, nested: Python objects
    values[:] = array.to_pylist()
    return values


def column_array(column: pa.ChunkedArray) -> np.ndarray:
    """One column as numpy: a read-only view of Arrow's buffer for numbers and timestamps;
    booleans and dates as a copy; strings and other types as object arrays. A column with
    nulls is a ``numpy.ma.MaskedArray`` (mask = null) over those values."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = _values(array)
    if array.null_count == 0:
        return values
    return np.ma.MaskedArray(values, mask=_null_mask(array))


class Columns(Mapping[str, np.ndarray]):
    """The batch's columns by name, each converted by ``column_array`` when first read."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._names = table.column_names
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self._names:
                raise KeyError(name)
            self._arrays[name] = column_array(self._table.column(name))
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"Columns({', '.join(self._names)}; {self._table.num_rows} rows)"


def array_to_arrow(name: str, value: Any) -> pa.Array | pa.ChunkedArray:
    """A returned column as Arrow: a masked array's mask becomes nulls; float NaN stays NaN.

    Raises ``ConversionFaults`` (row positions) for values that do not fit the column.
    """
    if isinstance(value, pa.Array | pa.ChunkedArray):
        return value
    if isinstance(value, np.ma.MaskedArray):
        data, mask = np.ma.getdata(value), np.ma.getmaskarray(value)
    else:
        data, mask = value, None
    if isinstance(data, np.ndarray) and data.ndim == 1:
        direct = _from_numpy(data, mask)
        if direct is not None:
            return direct
    try:
        return pa.array(data, mask=mask)
    except CONVERSION_ERRORS:
        values = np.asarray(data, dtype=object)
        target = _column_type(values)
        faults = {pos: f"column {name!r}: {reason}"
                  for pos, reason in bad_values(values, target).items()
                  if mask is None or not mask[pos]}
        if not faults:
            raise
        raise ConversionFaults(faults) from None


def _from_numpy(data: np.ndarray, mask: np.ndarray | None) -> pa.Array | None:
    """Numbers, booleans and datetimes straight from their buffer (numbers without a copy);
    None for other dtypes. (``pa.array`` on numpy imports pandas, ~0.2 s, on first use.)"""
    kind = data.dtype.kind
    if kind in "iuf":
        arrow_type = pa.from_numpy_dtype(data.dtype)
        values = pa.py_buffer(np.ascontiguousarray(data))
    elif kind == "b":
        arrow_type = pa.bool_()
        values = pa.py_buffer(np.packbits(data, bitorder="little"))
    elif kind in "mM":
        unit = np.datetime_data(data.dtype)[0]
        if unit not in ("s", "ms", "us", "ns"):
            return None
        arrow_type = pa.timestamp(unit) if kind == "M" else pa.duration(unit)
        values = pa.py_buffer(np.ascontiguousarray(data).view(np.int64))
    else:
        return None
    nulls = None
    null_count = 0
    if kind in "mM":  # NaT is null, as pyarrow has it
        nat = np.isnat(data)
        mask = nat if mask is None else (mask | nat)
    if mask is not None and mask.any():
        null_count = int(mask.sum())
        nulls = pa.py_buffer(np.packbits(~mask, bitorder="little"))
    return pa.Array.from_buffers(arrow_type, len(data), [nulls, values], null_count=null_count)


# -- the values at fault --------------------------------------------------------------------
def _column_type(values: np.ndarray) -> pa.DataType:
    """The type a mixed column should have: that of most of its values."""
    kinds = Counter(type(v) for v in values if v is not None)
    for kind, _ in kinds.most_common():
        sample = next(v for v in values if type(v) is kind)
        try:
            return pa.array([sample]).type
        except CONVERSION_ERRORS:
            continue
    return pa.null()


def bad_values(values: np.ndarray, target: pa.DataType) -> dict[int, str]:
    """Positions of ``values`` that do not convert to ``target``, with the reason. Slow (one
    conversion per value): only called after the whole column failed."""
    bad: dict[int, str] = {}
    for pos, value in enumerate(values):
        try:
            pa.array([value], type=target, from_pandas=True)
        except CONVERSION_ERRORS as exc:
            text = repr(value)
            shown = text if len(text) <= 60 else text[:57] + "..."
            bad[pos] = (f"{shown} ({type(value).__name__}) is not {target}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return bad
