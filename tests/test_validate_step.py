"""The validate step and ``headrace infer`` through real runs: messages with every field path,
the three modes, pydantic models, vectorised and per-record paths agreeing, bad input losing
nothing, config errors as one line, inference on CSV/JSONL/Parquet, the example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.builtins._validate._checkers import SchemaChecker
from headrace.plugin import Batch

from .conftest import CliResult, assert_accounted, read_jsonl, run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "validate-orders"

SCHEMA = {
    "type": "object",
    "required": ["id", "price", "email"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "price": {"type": "number", "minimum": 0},
        "email": {"type": "string", "pattern": "^.+@.+$"},
        "tier": {"type": ["string", "null"], "enum": ["gold", "silver", None]},
    },
}
ORDERS = ("id,price,email,tier\n1,10.5,a@x.org,gold\n2,-1,x,silver\n3,3,b@x.org,silver\n"
          "4,-2,c@x.org,bronze\n5,7,d@x.org,gold\n")


def pipeline(source: str, steps: list[dict[str, Any]], *, sink: str = "out/o.jsonl",
             max_failures: str | int = "100%") -> str:
    """A pipeline file's text (JSON is YAML): csv/jsonl/parquet source by extension."""
    kind = source.rsplit(".", 1)[-1]
    return json.dumps({
        "version": 1, "name": "v",
        "source": {"use": kind, "path": source},
        "steps": steps,
        "sink": {"use": sink.rsplit(".", 1)[-1], "path": sink},
        "runtime": {"max_failures": max_failures, "checkpoint": False},
    }, indent=2)


def run(write, data: str | bytes, steps: list[dict[str, Any]], *, name: str = "in.csv",
        expect: int = 0, extra: dict[str, str] | None = None,
        ) -> tuple[CliResult, list[dict[str, Any]], list[dict[str, Any]]]:
    write(name, data)
    for path, text in (extra or {}).items():
        write(path, text)
    path = write("p.yaml", pipeline(name, steps))
    result = run_cli("run", str(path), "--json")
    assert result.code == expect, result.stderr
    if expect == 2:
        return result, [], []
    out, dead = path.parent / "out" / "o.jsonl", path.parent / "out" / "o.dead.jsonl"
    if expect == 0:
        assert_accounted(result.summary)
    return (result, read_jsonl(out) if out.exists() else [],
            read_jsonl(dead) if dead.exists() else [])


def verdicts(dead: list[dict[str, Any]]) -> list[tuple[Any, str, int]]:
    return sorted((json.dumps(d["record"], sort_keys=True), d["message"], d["position"]["line"])
                  for d in dead)


# -- messages and modes ---------------------------------------------------------------------

def test_dead_letter_names_every_failing_field(write) -> None:
    """An invalid record is dead-lettered once, with each failing field's path and message,
    its line, and the original record; valid records go on unchanged."""
    result, out, dead = run(write, ORDERS, [{"use": "validate", "schema": SCHEMA}])
    assert [r["id"] for r in out] == [1, 3, 5]
    assert out[1] == {"id": 3, "price": 3.0, "email": "b@x.org", "tier": "silver"}
    by_line = {d["position"]["line"]: d for d in dead}
    assert sorted(by_line) == [3, 5]
    assert by_line[3]["message"] == (
        '$.price: -1.0 is less than the minimum of 0; $.email: "x" does not match "^.+@.+$"')
    assert by_line[3]["record"] == {"id": 2, "price": -1.0, "email": "x", "tier": "silver"}
    assert by_line[3]["error"] == "ValidationError" and by_line[3]["step"] == "validate"
    assert '$.price: -2.0 is less than the minimum of 0; $.tier: "bronze" is not one of' in \
        by_line[5]["message"]
    metrics = result.summary["plugin_metrics"]["validate"]
    assert metrics["rows_screened"] == 5 and metrics["invalid"] == 2


def test_drop_counts_invalid_records_as_filtered(write) -> None:
    """mode: drop removes invalid records and counts them as filtered, with no dead letters."""
    result, out, dead = run(write, ORDERS, [{"use": "validate", "schema": SCHEMA,
                                             "mode": "drop"}])
    assert [r["id"] for r in out] == [1, 3, 5] and dead == []
    assert result.summary["records_filtered"] == 2
    assert result.summary["steps"][0]["filtered"] == 2


def test_fail_stops_the_run_naming_line_and_errors(write) -> None:
    """mode: fail stops the run (exit 1) with one line naming the record's line and errors."""
    result, _, _ = run(write, ORDERS, [{"use": "validate", "schema": SCHEMA, "mode": "fail"}],
                       expect=1)
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1, result.stderr
    assert "the record at line 3 of" in error[0]
    assert '$.price: -1.0 is less than the minimum of 0; $.email: "x" does not match' in error[0]


def test_nulls_lengths_and_missing_required_columns(write) -> None:
    """A null where the type has no "null", a string over maxLength, and a required column the
    input lacks are each reported with the field's path."""
    schema = {"type": "object", "required": ["id", "name", "code"],
              "properties": {"id": {"type": "integer"}, "name": {"type": "string",
                                                                 "maxLength": 5}}}
    csv = "id,name\n1,ann\n,bob\n3,bartholomew\n"
    _, out, dead = run(write, csv, [{"use": "validate", "schema": schema}])
    assert out == []
    messages = {d["position"]["line"]: d["message"] for d in dead}
    assert messages[2] == '$.code: "code" is a required property'
    # jsonschema-rs's order: the object's own keywords (required) before its properties
    assert messages[3] == ('$.code: "code" is a required property; '
                           '$.id: null is not of type "integer"')
    assert messages[4] == ('$.code: "code" is a required property; '
                           '$.name: "bartholomew" is longer than 5 characters')


def test_pydantic_model_by_import_path(write) -> None:
    """model: module:Class next to the pipeline file; errors name each field with pydantic's
    message; records are passed on unchanged."""
    model = '''
        from pydantic import BaseModel, Field

        class Order(BaseModel):
            id: int = Field(ge=1)
            price: float = Field(ge=0)
            email: str = Field(pattern=r"^.+@.+$")
    '''
    _, out, dead = run(write, ORDERS, [{"use": "validate", "model": "orders:Order"}],
                       extra={"orders.py": model})
    lines = {d["position"]["line"]: d["message"] for d in dead}
    assert lines[3] == ("$.price: Input should be greater than or equal to 0; "
                        "$.email: String should match pattern '^.+@.+$'")
    assert lines[5] == "$.price: Input should be greater than or equal to 0"
    assert [r["id"] for r in out] == [1, 3, 5]


def test_nested_schemas_are_checked_per_record_with_nested_paths(write) -> None:
    """A schema the screen cannot read ($ref, nested items) is checked per record by
    jsonschema-rs, and errors name nested paths. (A key a python step left out arrives as
    null: the step's output is columnar again.)"""
    funcs = '''
        def reshape(record):
            if record["id"] == 2:
                return {"id": 2}
            return {"id": record["id"], "items": [{"sku": "a", "qty": record["id"] - 3}]}
    '''
    schema = {"type": "object", "required": ["id", "items"], "properties": {
        "id": {"type": "integer"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        "$defs": {"item": {"type": "object", "properties": {"qty": {"minimum": 0}}}}}
    csv = "id\n1\n2\n3\n"
    _, out, dead = run(write, csv, [{"use": "python", "function": "funcs:reshape"},
                                    {"use": "validate", "schema": schema}],
                       extra={"funcs.py": funcs})
    assert [r["id"] for r in out] == [3]
    messages = {d["position"]["line"]: d["message"] for d in dead}
    assert messages == {2: "$.items[0].qty: -2 is less than the minimum of 0",
                        3: '$.items: null is not of type "array"'}


def test_timestamps_are_date_time_strings_and_integral_floats_are_integers(write) -> None:
    """A timestamp column satisfies {"type": "string", "format": "date-time"}; a float column
    with integral values satisfies {"type": "integer"}, others do not."""
    schema = {"type": "object", "properties": {
        "at": {"type": "string", "format": "date-time"}, "n": {"type": "integer"}}}
    csv = "at,n\n2024-03-01 10:00:00,1.0\n2024-03-02 11:00:00,2.5\n"
    _, out, dead = run(write, csv, [{"use": "validate", "schema": schema}])
    assert len(out) == 1
    assert [d["message"] for d in dead] == ['$.n: 2.5 is not of type "integer"']


def test_rows_batches_tell_absent_from_null() -> None:
    """A rows batch (a step's output Arrow could not type) is checked record by record: a
    missing key fails `required`, a null fails the type, and time values are JSON strings."""
    import datetime as dt

    schema = {"type": "object", "required": ["id"],
              "properties": {"id": {"type": "integer"}, "at": {"format": "date-time"}}}
    batch = Batch.from_rows([{"id": 1, "at": dt.datetime(2024, 1, 1)}, {"id": None}, {}])
    assert _checker(schema, True).check(batch) == [
        (1, [("$.id", 'null is not of type "integer"')]),
        (2, [("$.id", '"id" is a required property')]),
    ]


def test_validate_step_conforms(tmp_path: Path) -> None:
    """The plugin conformance suite passes on validate, with records that fail (dead letters
    accounted for), also from several threads."""
    from headrace.testing import assert_conforms

    schema = {"type": "object", "properties": {"score": {"type": ["number", "null"],
                                                         "minimum": 0}}}
    report = assert_conforms("step", "validate", options={"schema": schema},
                             base_dir=tmp_path)
    assert {r.status for r in report.results} == {"passed"}


# -- vectorised and per-record paths agree --------------------------------------------------

HOSTILE = (
    "id,price,email,tier,code\n"
    "1,10,a@x.org,gold,AB-1\n"
    "2,-0.0,é@x.org,silver,ab-2\n"  # non-ASCII under a pattern
    "3,1e308,a@x.org\u00a0,gold,AB-3\n"  # a no-break space: RE2 and ECMA \\s differ
    "4,nan,c@x.org,,AB-\n"
    "5,inf,d@x.org,gold,AB-55555\n"
    "6,0,,silver,\n"
    "7,3,x@y,platinum,ZZ-9\n"
    "-8,4,z@z.z,gold,AB-8\n"
    ",5,q@q.q,silver,AB-9\n"
)
HOSTILE_SCHEMA = {
    "type": "object", "required": ["id", "price", "email", "code"],
    "properties": {
        "id": {"type": "integer", "minimum": 1, "exclusiveMaximum": 7.5},
        "price": {"type": ["number", "null"], "minimum": 0, "maximum": 1e300},
        "email": {"type": "string", "pattern": "^\\S+@\\S+$", "minLength": 5},
        "tier": {"enum": ["gold", "silver", None]},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{1,4}$", "maxLength": 7},
    },
}


def test_vectorised_and_per_record_give_the_same_dead_letters(write) -> None:
    """On hostile values (NaN, inf, -0.0, non-ASCII, no-break space, nulls, fractional bounds)
    the screened run and the all-jsonschema-rs run dead-letter the same records with the same
    messages; only the screened one converts fewer rows to Python."""
    fast, _, fast_dead = run(write, HOSTILE, [{"use": "validate", "schema": HOSTILE_SCHEMA}])
    slow, _, slow_dead = run(write, HOSTILE, [{"use": "validate", "schema": HOSTILE_SCHEMA,
                                                "vectorize": False}])
    assert verdicts(fast_dead) == verdicts(slow_dead)
    assert len(fast_dead) >= 6
    fast_metrics = fast.summary["plugin_metrics"]["validate"]
    assert fast_metrics["rows_screened"] == 9
    assert "rows_screened" not in slow.summary["plugin_metrics"]["validate"]


def _batch(columns: dict[str, list[Any]], types: dict[str, pa.DataType]) -> Batch:
    return Batch.from_arrow(pa.table({k: pa.array(v, types[k]) for k, v in columns.items()}))


def _checker(schema: dict[str, Any], vectorize: bool) -> SchemaChecker:
    return SchemaChecker(schema, lambda key: "schema", formats=True, vectorize=vectorize,
                         count=lambda name, amount: None)


NUMBER_KEYS = st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
BOUNDS = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False).map(
    lambda f: round(f, 1)))
TYPES = st.sampled_from([["integer"], ["number"], ["integer", "null"], ["number", "null"],
                         ["string"], ["boolean", "null"], None])
STRING_PROPS = st.fixed_dictionaries({}, optional={
    "minLength": st.integers(0, 4), "maxLength": st.integers(0, 6),
    "pattern": st.sampled_from(["^a", "b$", "^[a-c]+$", "\\d", "^\\w{2,3}$", "\\s", "(?=a)",
                                "^.$", "\\bab"]),
    "enum": st.lists(st.sampled_from(["a", "ab", "é", "", 1, None]), min_size=1, max_size=3),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ints=st.lists(st.one_of(st.none(), st.integers(-10, 10)), min_size=1, max_size=12),
    data=st.data(),
    number_schema=st.dictionaries(NUMBER_KEYS, BOUNDS, max_size=3),
    int_type=TYPES, float_type=TYPES,
    string_schema=STRING_PROPS,
    required_missing=st.booleans(),
)
def test_screen_never_passes_an_invalid_row(  # noqa: PLR0917 - hypothesis gives each
        ints, data, number_schema, int_type, float_type, string_schema, required_missing,
) -> None:
    """Property: for random columns and schemas, the vectorised screen and per-record
    jsonschema-rs find the same failing rows with the same messages."""
    n = len(ints)
    float_values = data.draw(st.lists(st.one_of(
        st.none(), st.floats(-6, 6), st.sampled_from([0.0, -0.0, 2.0, float("nan"),
                                                       float("inf")])), min_size=n, max_size=n))
    strings = data.draw(st.lists(st.one_of(st.none(), st.text("abé 1\u00a0\t_", max_size=5)),
                                   min_size=n, max_size=n))
    bools = data.draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n))
    props: dict[str, Any] = {"i": dict(number_schema), "f": dict(number_schema),
                             "s": dict(string_schema), "b": {"type": int_type} if int_type
                             else {}}
    if int_type:
        props["i"]["type"] = int_type
    if float_type:
        props["f"]["type"] = float_type
    schema = {"type": "object", "properties": props,
              "required": ["i", "missing"] if required_missing else ["i"]}
    batch = _batch({"i": ints, "f": float_values, "s": strings, "b": bools},
                   {"i": pa.int64(), "f": pa.float64(), "s": pa.string(), "b": pa.bool_()})
    assert _checker(schema, True).check(batch) == _checker(schema, False).check(batch)


# -- bad input loses nothing ---------------------------------------------------------------

def _ids(out: list[dict[str, Any]], dead: list[dict[str, Any]]) -> list[int]:
    """Line numbers of everything that came out, as lines (sink records carry their id)."""
    return sorted([r["id"] for r in out] + [d["position"]["line"] - 1 for d in dead])


def test_a_string_in_a_later_block_of_an_int_column_is_a_source_dead_letter(write) -> None:
    """The csv source types columns from its first block; a later "oops" in an int column is
    a dead letter of the source with its line, not a crash, and every other record arrives."""
    rows = [f"{i},{i % 50}" for i in range(1, 3001)]
    rows[2499] = "2500,oops"
    csv = "id,qty\n" + "\n".join(rows) + "\n"
    steps = [{"use": "validate", "schema": {"type": "object", "properties": {
        "qty": {"type": "integer", "maximum": 48}}}}]
    write("in.csv", csv)
    path = write("p.yaml", pipeline("in.csv", steps).replace(
        '"path": "in.csv"', '"path": "in.csv", "block_size": 4096'))
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    out = read_jsonl(path.parent / "out" / "o.jsonl")
    dead = read_jsonl(path.parent / "out" / "o.dead.jsonl")
    source_dead = [d for d in dead if d["step"] == "csv"]
    assert [d["position"]["line"] for d in source_dead] == [2501]
    assert "oops" in source_dead[0]["message"]
    assert all(d["message"] == "$.qty: 49 is greater than the maximum of 48"
               for d in dead if d["step"] == "validate")
    assert _ids(out, dead) == list(range(1, 3001))


@pytest.mark.parametrize(("name", "data"), [
    ("in.csv", b"id,name\n1,ann\n2,b\xffob\n3,cy\n"),
    ("in.jsonl", b'{"id": 1, "name": "ann"}\n{"id": 2, "name": "b\xffob"}\n'
                 b'{"id": 3, "name": "cy"}\n'),
    ("in.csv", b"id,name\n1,ann\n2,bob,surplus\n3,cy\n"),
    ("in.csv", b"id,name\n1,ann\n2\n3,cy\n"),
], ids=["csv-invalid-utf8", "jsonl-invalid-utf8", "csv-too-many-fields", "csv-too-few-fields"])
def test_undecodable_lines_are_dead_letters_with_their_line(write, name, data) -> None:
    """Invalid UTF-8 and ragged rows become dead letters of the source with their line; the
    validate step sees the other records, and nothing is lost."""
    schema = {"type": "object", "required": ["id", "name"],
              "properties": {"name": {"type": "string", "minLength": 3}}}
    result, out, dead = run(write, data, [{"use": "validate", "schema": schema}], name=name)
    line_of_2 = 3 if name.endswith(".csv") else 2
    assert [r["id"] for r in out] == [1]
    by_line = {d["position"]["line"]: d for d in dead}
    assert sorted(by_line) == [line_of_2, line_of_2 + 1]
    assert by_line[line_of_2]["step"] == ("jsonl" if name.endswith(".jsonl") else "csv")
    if "\xff" in repr(data):
        assert by_line[line_of_2]["record"]["line"].count("\ufffd") == 1
    assert by_line[line_of_2 + 1]["message"] == '$.name: "cy" is shorter than 3 characters'

    assert result.summary["records_in"] == 3


# -- configuration errors ------------------------------------------------------------------

def _config_error(result: CliResult) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_invalid_inline_schema_names_its_line(write) -> None:
    """An inline schema that is not a valid JSON Schema: exit 2, one line with the pipeline
    file's line of the bad keyword and the problem."""
    write("in.csv", "id\n1\n")
    path = write("p.yaml", """
        version: 1
        name: v
        source: {use: csv, path: in.csv}
        steps:
          - use: validate
            schema:
              type: object
              properties:
                id:
                  minimum: "zero"
        sink: {use: jsonl, path: out/o.jsonl}
    """)
    result = run_cli("run", str(path))
    assert result.code == 2
    line = _config_error(result)
    assert "p.yaml:10:" in line and "invalid JSON Schema" in line
    assert '"zero" is not of type "number"' in line


def test_invalid_schema_file_names_file_and_line(write) -> None:
    """A schema_file with a bad keyword names that file and the keyword's line; one that is
    not JSON names its line too."""
    write("schema.json", '{\n  "type": "object",\n  "properties": {\n'
                         '    "id": {"type": "integr"}\n  }\n}\n')
    result, _, _ = run(write, "id\n1\n", [{"use": "validate", "schema_file": "schema.json"}],
                       expect=2)
    line = _config_error(result)
    assert "schema.json:4:" in line and "invalid JSON Schema at $.properties.id.type" in line
    write("schema.json", '{\n  "type": "object",\n  "properties": {,}\n}\n')
    result = run_cli("run", str(write("p.yaml", pipeline(
        "in.csv", [{"use": "validate", "schema_file": "schema.json"}]))))
    assert result.code == 2 and "schema.json:3: not valid JSON" in _config_error(result)


@pytest.mark.parametrize(("options", "expected"), [
    ({"model": "nowhere:Order"}, "cannot load model 'nowhere:Order': ModuleNotFoundError"),
    ({"model": "orders:Nope"}, "cannot load model 'orders:Nope': AttributeError"),
    ({"schema": {"type": "object"}, "model": "orders:Order"},
     "give exactly one of schema, schema_file or model (got schema and model)"),
    ({}, "give exactly one of schema, schema_file or model (got none of them)"),
    ({"schema_file": "missing.json"}, "cannot read schema_file"),
    ({"schema": {"$ref": "https://example.com/s.json"}}, "Retrieval is disabled"),
], ids=["model-module", "model-class", "schema-and-model", "neither", "file-missing",
        "remote-ref"])
def test_config_errors_are_one_line_exit_2(write, options, expected) -> None:
    """Each wrong configuration exits 2 with one line saying what is wrong (remote $ref are
    never fetched)."""
    result, _, _ = run(write, "id\n1\n", [{"use": "validate", **options}], expect=2,
                       extra={"orders.py": "class Order:\n    pass\n"})
    assert expected in _config_error(result)


# -- headrace infer ------------------------------------------------------------------------

def _infer(*args: str, cwd: Path | None = None) -> CliResult:
    return run_cli("infer", *args, cwd=cwd)


def _sample_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "price": round(i * 1.25, 2), "tier": ["gold", "silver", "bronze"][i % 3],
             "note": None if i % 7 == 0 else f"note {i}", "ok": i % 2 == 0,
             "score": None if i % 5 == 0 else i * 2,
             "at": f"2024-03-{1 + i % 28:02d} 10:00:00"} for i in range(1, n + 1)]


def _write_sample(tmp_path: Path, fmt: str, n: int = 300) -> Path:
    rows = _sample_rows(n)
    path = tmp_path / f"sample.{fmt}"
    if fmt == "csv":
        lines = ["id,price,tier,note,ok,score,at"] + [
            f"{r['id']},{r['price']},{r['tier']},{r['note'] or ''},{str(r['ok']).lower()},"
            f"{'' if r['score'] is None else r['score']},{r['at']}" for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        table = pa.Table.from_pylist(rows)
        table = table.set_column(table.schema.get_field_index("at"), "at",
                                 table.column("at").cast(pa.timestamp("s")))
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_infer_prints_a_schema_its_own_sample_satisfies(tmp_path: Path, fmt: str) -> None:
    """infer gives types, required (no nulls) vs "null" (nulls seen), an enum for a
    low-cardinality string, ranges as examples only; and the file validates against it."""
    path = _write_sample(tmp_path, fmt)
    result = _infer(str(path), "--rows", "1000")
    assert result.code == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    assert props["id"] == {"type": "integer", "examples": [1, 300]}
    assert props["tier"] == {"type": "string", "enum": ["bronze", "gold", "silver"]}
    assert props["ok"] == {"type": "boolean"}
    assert props["score"] == {"type": ["integer", "null"], "examples": [2, 598]}
    assert "score" not in schema["required"]
    if fmt != "csv":  # an empty CSV field is an empty string, not a null
        assert "null" in props["note"]["type"] and "note" not in schema["required"]
    assert {"id", "price", "tier", "ok"} <= set(schema["required"])
    if fmt != "jsonl":  # JSON has no timestamps: the jsonl source reads text
        assert props["at"]["format"] == "date-time"
    assert "inferred from 300 records" in result.stderr
    (tmp_path / "schema.json").write_text(result.stdout, encoding="utf-8")
    p = tmp_path / "p.yaml"
    p.write_text(pipeline(path.name, [{"use": "validate", "schema_file": "schema.json"}],
                          max_failures=0), encoding="utf-8")
    run_result = run_cli("run", str(p), "--json")
    assert run_result.code == 0, run_result.stderr
    assert run_result.summary["records_out"] == 300


def test_infer_bounds_and_sample_size(tmp_path: Path) -> None:
    """--bounds emits the sample's ranges as minimum/maximum; --rows limits the sample (and
    under 100 values no enum is guessed)."""
    path = _write_sample(tmp_path, "csv")
    result = _infer(str(path), "--rows", "50", "--bounds")
    assert result.code == 0, result.stderr
    props = json.loads(result.stdout)["properties"]
    assert props["id"] == {"type": "integer", "minimum": 1, "maximum": 50}
    assert "enum" not in props["tier"]


def test_infer_errors(tmp_path: Path) -> None:
    """A missing file or an unknown extension is one line, exit 2."""
    missing = _infer(str(tmp_path / "none.csv"))
    assert missing.code == 2 and "no such file" in missing.stderr
    odd = tmp_path / "data.bin"
    odd.write_text("x\n", encoding="utf-8")
    result = _infer(str(odd))
    assert result.code == 2 and "--format" in result.stderr


# -- the example ---------------------------------------------------------------------------

def test_example_every_order_ends_in_the_sink_or_the_dead_letters(tmp_path: Path) -> None:
    """examples/validate-orders: each of the 2,000 orders is in the Parquet output or the
    dead-letter file, once; validation dead letters name their fields, source ones their
    line."""
    work = tmp_path / "validate-orders"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("out", ".headrace"))
    result = run_cli("run", str(work / "pipeline.yaml"), "--json")
    assert result.code == 0, result.stderr
    assert_accounted(result.summary)
    out = pq.read_table(work / "out" / "orders.parquet").to_pylist()
    dead = read_jsonl(work / "out" / "orders.dead.jsonl")
    lines = [r["order_id"] + 1 for r in out] + [d["position"]["line"] for d in dead]
    assert sorted(lines) == list(range(2, 2002))
    assert all(r["total"] == round(r["amount"] * r["quantity"], 2) for r in out)
    validation = [d for d in dead if d["step"] == "validate"]
    assert len(validation) == 32 and len(dead) == 40
    assert all(d["message"].startswith("$.") for d in validation)
    fields = {part.split(":")[0] for d in validation for part in d["message"].split("; ")}
    assert fields == {"$.amount", "$.customer_email", "$.country", "$.quantity", "$.coupon",
                      "$.status"}
