"""The SQL plugins against real databases: the sqlite and postgres sources (types, keyset
pages, resume tokens, fingerprints), the postgres sink (insert, upsert, copy, table creation,
duplicate keys dead-lettered alone, rows and checkpoint in one transaction), a database that
goes down mid-run (a TCP proxy cut in the test), and SIGKILL + --resume: 0 lost, 0 duplicated.

Postgres tests skip with the reason when the server is unreachable, and fail in CI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest

from headrace.plugin import Batch, PluginContext, RunServices

from .conftest import HEADRACE, assert_accounted, read_jsonl, run_cli
from .pg_support import DSN, Proxy, query, require_postgres, tables

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pipeline(folder: Path, source: str, sink: str, *, steps: str = "[]",
             runtime: str = "{}", name: str = "sql") -> Path:
    path = folder / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        name: {name}
        source: {source}
        steps: {steps}
        sink: {sink}
        runtime: {runtime}
        """), encoding="utf-8")
    return path


def csv_input(folder: Path, count: int, bad: frozenset[int] = frozenset()) -> Path:
    """ids 0..count-1 with a payload; the ids in ``bad`` get a field too many (dead letters)."""
    lines = ["id,name,score\n"]
    for i in range(count):
        lines.append(f"{i},n{i},{i / 4}{',extra' if i in bad else ''}\n")
    path = folder / "in.csv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def pg_sink(table: str, checkpoints: str, extra: str = "", dsn: str = DSN) -> str:
    return (f"{{use: postgres, dsn: '{dsn}', table: {table}, checkpoint_table: {checkpoints}"
            f"{', ' + extra if extra else ''}}}")


def ids_in(table: str) -> list[int]:
    return [r[0] for r in query(f'SELECT id FROM "{table}" ORDER BY id')]


# -- the sqlite source ------------------------------------------------------------------------

def make_sqlite(path: Path, rows: int = 25) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, "
                "raw BLOB, ok BOOLEAN, note)")
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                    [(i, f"n{i}", i * 1.5, bytes([i]), i % 2, None) for i in range(1, rows + 1)])
    con.commit()
    con.close()


def test_sqlite_source_reads_a_table_in_key_pages_with_declared_types(tmp_path: Path) -> None:
    """A table is read in pages of batch_size by its key; declared types become Arrow
    types (INTEGER int64, TEXT string, REAL float64, BLOB binary, BOOLEAN bool)."""
    make_sqlite(tmp_path / "db.sqlite")
    path = pipeline(tmp_path, "{use: sqlite, path: db.sqlite, table: items, key: id, "
                    "batch_size: 10}", "{use: parquet, path: out.parquet}")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema) == str(pa.schema([
        ("id", pa.int64()), ("name", pa.string()), ("price", pa.float64()),
        ("raw", pa.binary()), ("ok", pa.bool_()), ("note", pa.string())]))
    assert table.column("id").to_pylist() == list(range(1, 26))
    assert table.slice(1, 1).to_pylist() == [
        {"id": 2, "name": "n2", "price": 3.0, "raw": b"\x02", "ok": False, "note": None}]


def test_sqlite_source_dead_letters_a_value_that_does_not_fit_its_column(tmp_path: Path) -> None:
    """A text value in a column declared REAL is a dead letter naming the column; the rest
    passes. (Undeclared columns take the type of their values: mixed ones become strings.)"""
    make_sqlite(tmp_path / "db.sqlite", rows=5)
    con = sqlite3.connect(tmp_path / "db.sqlite")
    con.execute("UPDATE items SET price = 'cheap' WHERE id = 3")
    con.commit()
    con.close()
    path = pipeline(tmp_path, "{use: sqlite, path: db.sqlite, table: items, key: id}",
                    "{use: jsonl, path: out.jsonl}", steps="[{use: select, columns: [id, price]}]",
                    runtime="{max_failures: 5}")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [1, 2, 4, 5]
    (dead,) = read_jsonl(tmp_path / "out.dead.jsonl")
    assert dead["record"] == {"id": 3, "name": "n3", "price": "cheap", "raw": "03", "ok": 1,
                              "note": None}
    assert "column 'price'" in dead["message"]
    assert_accounted(result.summary)


def open_source(cls: type, options: dict[str, Any], base: Path) -> Any:
    return cls(cls.Options.model_validate(options),
               PluginContext(plugin_id="src", base_dir=base, services=RunServices()))


async def read_all(source: Any, token: dict[str, Any] | None = None,
                   stop_after: int | None = None) -> tuple[list[int], dict[str, Any] | None]:
    """Ids read (optionally after ``token``), and the token after ``stop_after`` batches."""
    ids: list[int] = []
    last = None
    async with source:
        if token is not None:
            await source.resume(token)
        count = 0
        async for batch in source.batches():
            ids += batch.to_arrow().column("id").to_pylist()
            count += 1
            last = source.resume_token(batch.position)
            if stop_after is not None and count == stop_after:
                break
    return ids, last


@pytest.mark.parametrize("mode", ["table", "query"])
def test_sqlite_source_resumes_after_the_last_committed_key(tmp_path: Path, mode: str) -> None:
    """The resume token holds the batch's last key: a new source resumed from it reads
    exactly the rows after it, numbered on from the same row ids."""
    from headrace.builtins.sql import SqliteSource

    make_sqlite(tmp_path / "db.sqlite", rows=25)
    what = {"table": "items"} if mode == "table" else {"query": "SELECT * FROM items"}
    options = {"path": "db.sqlite", "key": "id", "batch_size": 7, **what}
    first, token = anyio.run(read_all, open_source(SqliteSource, options, tmp_path), None, 2)
    assert first == list(range(1, 15)) and token is not None
    assert token["key"] == {"type": "json", "value": 14} and token["row"] == 14
    rest, _ = anyio.run(read_all, open_source(SqliteSource, options, tmp_path), token)
    assert rest == list(range(15, 26))


def test_source_options_need_one_select_and_a_key(tmp_path: Path) -> None:
    """query: and table: exclude each other, a query must be a SELECT, key: is required:
    each is a config error naming the file and line."""
    make_sqlite(tmp_path / "db.sqlite")
    cases = {"{use: sqlite, path: db.sqlite, table: items, query: 'SELECT 1', key: id}":
             "either query: or table:",
             "{use: sqlite, path: db.sqlite, query: 'DELETE FROM items', key: id}":
             "must be a SELECT",
             "{use: sqlite, path: db.sqlite, table: items}": "key"}
    for source, message in cases.items():
        result = run_cli("validate", str(pipeline(tmp_path, source, "{use: stdout}")))
        assert result.code == 2, result.stderr
        assert message in result.stderr and "p.yaml:" in result.stderr


def test_sqlite_fingerprint_names_the_query_and_optionally_the_data(tmp_path: Path) -> None:
    """The fingerprint is the database and the query; with fingerprint_query it changes
    when the data does (so --resume refuses a changed table)."""
    from headrace.builtins.sql import SqliteSource

    make_sqlite(tmp_path / "db.sqlite", rows=3)
    plain = open_source(SqliteSource, {"path": "db.sqlite", "table": "items", "key": "id"},
                        tmp_path)
    watched = open_source(SqliteSource, {"path": "db.sqlite", "table": "items", "key": "id",
                                         "fingerprint_query": "SELECT count(*) FROM items"},
                          tmp_path)
    before = (plain.fingerprint(), watched.fingerprint())
    assert before[0]["query"] == 'SELECT * FROM "items"' and before[1]["snapshot"] == ["3"]
    con = sqlite3.connect(tmp_path / "db.sqlite")
    con.execute("INSERT INTO items (id) VALUES (99)")
    con.commit()
    con.close()
    assert plain.fingerprint() == before[0]
    assert watched.fingerprint() != before[1]


# -- the postgres source ------------------------------------------------------------------------

TYPES_DDL = """CREATE TABLE "{t}" (id int8 PRIMARY KEY, small int2, num int4, real4 float4,
    dbl float8, price numeric(10, 2), label text, code varchar(5), flag bool,
    at timestamp, at_tz timestamptz, day date, doc jsonb, raw bytea, tags int4[], uid uuid)"""


def test_postgres_source_maps_types_to_arrow_and_keeps_nulls(tmp_path: Path) -> None:
    """Every mapped Postgres type lands as its Arrow type (numeric as float64 by default,
    or decimal(P,S) when asked); a row of NULLs stays NULL."""
    with tables() as made:
        t = made.name("types")
        query(TYPES_DDL.format(t=t))
        query(f"""INSERT INTO "{t}" VALUES (1, 2, 3, 1.5, 2.25, 12.34, 'x', 'ab', true,
            '2024-01-02 03:04:05', '2024-01-02 03:04:05+02', '2024-01-02', '{{"a": [1]}}',
            '\\x00ff', '{{1,2}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')""")
        query(f'INSERT INTO "{t}" (id) VALUES (2)')
        for numeric, expected in [("float", pa.float64()), ("'decimal(10,2)'",
                                                            pa.decimal128(10, 2))]:
            path = pipeline(tmp_path, f"{{use: postgres, dsn: '{DSN}', table: {t}, key: id, "
                            f"numeric: {numeric}}}", "{use: parquet, path: out.parquet}")
            result = run_cli("run", str(path), "--json")
            assert result.code == 0, result.stderr
            import pyarrow.parquet as pq

            table = pq.read_table(tmp_path / "out.parquet")
            assert table.schema.field("price").type == expected
        assert [(f.name, str(f.type)) for f in table.schema] == [
            ("id", "int64"), ("small", "int16"), ("num", "int32"), ("real4", "float"),
            ("dbl", "double"), ("price", "decimal128(10, 2)"), ("label", "string"),
            ("code", "string"), ("flag", "bool"), ("at", "timestamp[us]"),
            ("at_tz", "timestamp[us, tz=UTC]"), ("day", "date32[day]"), ("doc", "string"),
            ("raw", "binary"), ("tags", "list<element: int32>"), ("uid", "string")]
        first, second = table.to_pylist()
        assert first["doc"] == '{"a": [1]}' and first["raw"] == b"\x00\xff"
        assert first["at_tz"].isoformat() == "2024-01-02T01:04:05+00:00"
        assert first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        assert first["tags"] == [1, 2]
        assert {k for k, v in second.items() if v is not None} == {"id"}


def test_postgres_source_resumes_after_the_last_committed_key(tmp_path: Path) -> None:
    """A query paged by a text key resumes after the token's key, nothing read twice."""
    from headrace.builtins.sql import PostgresSource

    with tables() as made:
        t = made.name("src")
        query(f'CREATE TABLE "{t}" AS SELECT g AS id, lpad(g::text, 5, \'0\') AS code '
              "FROM generate_series(1, 50) g")
        options = {"dsn": DSN, "query": f'SELECT * FROM "{t}"', "key": "code",
                   "batch_size": 8}
        first, token = anyio.run(read_all, open_source(PostgresSource, options, tmp_path),
                                 None, 3)
        assert first == list(range(1, 25)) and token is not None
        assert token["key"] == {"type": "json", "value": "00024"}
        rest, _ = anyio.run(read_all, open_source(PostgresSource, options, tmp_path), token)
        assert rest == list(range(25, 51))


def test_postgres_fingerprint_hides_the_password() -> None:
    """The fingerprint (kept in the run's ledger) names the database without a password."""
    from headrace.builtins.sql import PostgresSource

    require_postgres()
    source = open_source(PostgresSource, {"dsn": "postgresql://app:Canary-Pw-991@db:5/shop",
                                          "table": "orders", "key": "id"}, Path.cwd())
    printed = source.fingerprint()
    assert printed == {"database": "postgresql://app@db:5/shop",
                       "query": 'SELECT * FROM "orders"', "key": "id"}


# -- the postgres sink ---------------------------------------------------------------------------

def test_sink_creates_the_table_from_the_arrow_schema_and_reports_pool_metrics(
        tmp_path: Path) -> None:
    """create: true makes the table from the first batch's types, the key its primary key;
    the summary carries the pool's metrics."""
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")
        csv_input(tmp_path, 1000)
        path = pipeline(tmp_path, "{use: csv, path: in.csv}",
                        pg_sink(t, ck, "key: [id], batch_size: 300"))
        result = run_cli("run", str(path), "--json")
        assert result.code == 0, result.stderr
        columns = query("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = $1 ORDER BY ordinal_position", t)
        assert columns == [("id", "bigint"), ("name", "text"), ("score", "double precision")]
        assert query(f'SELECT count(*), sum(id) FROM "{t}"') == [(1000, sum(range(1000)))]
        assert query("SELECT indexdef LIKE '%(id)' FROM pg_indexes WHERE tablename = $1",
                     t) == [(True,)]
        metrics = result.summary["plugin_metrics"]["postgres"]
        assert metrics["rows_written"] == 1000 and metrics["pool_size_peak"] >= 1
        assert {"pool_wait_seconds", "pool_waiters_peak", "commits"} <= metrics.keys()


@pytest.mark.parametrize("mode", ["upsert", "copy"])
def test_upsert_replays_are_harmless_and_copy_writes_every_row(tmp_path: Path,
                                                               mode: str) -> None:
    """upsert: running the same input twice leaves one row per key, a changed record
    updates its row. copy: a fresh run appends every row (if_exists: replace: the table
    holds the run's rows only)."""
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")
        csv_input(tmp_path, 500)
        extra = "mode: upsert, key: [id]" if mode == "upsert" else \
            "mode: copy, if_exists: replace"
        path = pipeline(tmp_path, "{use: csv, path: in.csv}", pg_sink(t, ck, extra))
        for _ in range(2):
            result = run_cli("run", str(path), "--json")
            assert result.code == 0, result.stderr
        assert ids_in(t) == list(range(500))
        if mode == "upsert":
            (tmp_path / "in.csv").write_text("id,name,score\n7,changed,1.0\n", "utf-8")
            assert run_cli("run", str(path)).code == 0
            assert query(f'SELECT name FROM "{t}" WHERE id = 7') == [("changed",)]
            assert len(ids_in(t)) == 500


@pytest.mark.parametrize("mode", ["insert", "copy"])
def test_duplicate_keys_are_dead_lettered_alone(tmp_path: Path, mode: str) -> None:
    """In insert and copy mode a row whose key exists is a dead letter saying
    'duplicate key (id)=(42)'; every other row of its batch is written."""
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")
        query(f'CREATE TABLE "{t}" (id bigint PRIMARY KEY, name text, score float8)')
        query(f"INSERT INTO \"{t}\" VALUES (42, 'old', 0), (777, 'old', 0)")
        csv_input(tmp_path, 1000)
        path = pipeline(tmp_path, "{use: csv, path: in.csv}",
                        pg_sink(t, ck, f"mode: {mode}, batch_size: 400"),
                        runtime="{max_failures: 10}")
        result = run_cli("run", str(path), "--json")
        assert result.code == 0, result.stderr
        assert ids_in(t) == list(range(1000))
        assert query(f'SELECT name FROM "{t}" WHERE id = 42') == [("old",)]
        dead = read_jsonl(tmp_path / f"{'sql'}.dead.jsonl")
        assert [(d["record"]["id"], d["message"]) for d in dead] == [
            (42, "duplicate key (id)=(42)"), (777, "duplicate key (id)=(777)")]
        assert dead[0]["error"] == "UniqueViolationError"
        assert_accounted(result.summary)


def test_a_password_in_the_dsn_never_appears_in_messages(tmp_path: Path) -> None:
    """A database that cannot be reached fails the run with a message naming the database
    as user@host:port/db; the password appears nowhere in the output."""
    from .http_support import closed_port

    require_postgres()
    csv_input(tmp_path, 3)
    dsn = f"postgresql://postgres:Canary-Pw-7731@127.0.0.1:{closed_port()}/test"
    path = pipeline(tmp_path, "{use: csv, path: in.csv}",
                    pg_sink("nowhere", "nowhere_ck", "retry: 1", dsn=dsn))
    result = run_cli("run", str(path), "--json")
    assert result.code == 1
    assert "Canary-Pw-7731" not in result.stdout + result.stderr
    assert "postgres@127.0.0.1" in result.stdout + result.stderr


def make_sink(table: str, checkpoints: str, base: Path, **options: Any) -> Any:
    from headrace.builtins.sql import PostgresSink

    sink = PostgresSink(PostgresSink.Options.model_validate(
        {"dsn": DSN, "table": table, "checkpoint_table": checkpoints, **options}),
        PluginContext(plugin_id="db", base_dir=base, pipeline_name="unit",
                      services=RunServices()))
    sink.checkpointing = True
    sink.input_identity = "input-1"
    return sink


def batch(ids: list[int]) -> Batch:
    import numpy as np

    return Batch.from_arrow(pa.table({"id": ids, "name": [f"n{i}" for i in ids]}),
                            row_ids=np.array(ids, dtype=np.int64))


def test_commit_stores_the_checkpoint_with_the_rows_and_abort_drops_the_rest(
        tmp_path: Path) -> None:
    """Rows are invisible until commit(checkpoint), which stores the checkpoint in the same
    transaction; stored_checkpoint gives it back (with the sink's state); rows written
    after it are rolled back by abort; a resume with the stored state carries on."""
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")

        async def scenario() -> None:
            sink = make_sink(t, ck, tmp_path)
            async with sink:
                await sink.resume({})
                await sink.write(batch([1, 2]))
                assert query(f"SELECT count(*) FROM pg_tables WHERE tablename = '{t}'") == [(1,)]
                assert ids_in(t) == []  # not committed yet
                state = await sink.commit({"source": {"offset": 2}, "records": 2,
                                           "dead_letters": {}})
                assert ids_in(t) == [1, 2] and state["seq"] == 1
                await sink.write(batch([3]))
                await sink.abort()
            assert ids_in(t) == [1, 2]
            again = make_sink(t, ck, tmp_path)
            async with again:
                stored = await again.stored_checkpoint()
                assert stored == {"source": {"offset": 2}, "records": 2, "dead_letters": {},
                                  "sink": state}
                await again.resume(stored["sink"])
                await again.write(batch([3, 4]))
                assert (await again.commit({"records": 4}))["seq"] == 2
                await again.finish()
            assert ids_in(t) == [1, 2, 3, 4]
            other = make_sink(t, ck, tmp_path)
            other.input_identity = "other input"
            async with other:
                assert await other.stored_checkpoint() is None  # not this input's

        anyio.run(scenario)


def test_resume_refuses_a_ledger_that_disagrees_with_the_database(tmp_path: Path) -> None:
    """A ledger state whose sequence number is not the one the database holds (the
    checkpoint table was changed) is refused with a hint, rather than writing rows twice."""
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")

        async def scenario() -> None:
            sink = make_sink(t, ck, tmp_path)
            async with sink:
                await sink.resume({})
                await sink.write(batch([1]))
                state = await sink.commit({"records": 1})
            query(f'UPDATE "{ck}" SET seq = seq + 5')
            again = make_sink(t, ck, tmp_path)
            async with again:
                with pytest.raises(Exception, match="cannot resume") as info:
                    await again.resume(state)
                assert "without --resume" in str(info.value.hint)  # type: ignore[attr-defined]

        anyio.run(scenario)


def test_pool_acquires_that_wait_are_counted(tmp_path: Path) -> None:
    """With pool.max 1, a second acquire waits for the first connection: pool_waits and
    pool_wait_seconds count it; the peaks reach the summary when the pool closes."""
    from headrace.builtins._sql._pool import Pool, PoolOptions

    require_postgres()
    context = PluginContext(plugin_id="db", base_dir=tmp_path, services=RunServices())

    async def scenario() -> None:
        pool = Pool(DSN, PoolOptions(min=1, max=1, timeout=5), context, {})
        await pool.open()
        first = await pool.acquire()

        async def second() -> None:
            conn = await pool.acquire()
            await pool.release(conn)

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.sleep(0.2)
            assert pool.stats()["waiters"] == 1
            await pool.release(first)
        await pool.close()

    anyio.run(scenario)
    metrics = {name: total for _, name, total in context.services.metric_totals()}
    assert metrics["pool_waits"] == 1 and metrics["pool_wait_seconds"] >= 0.2
    assert metrics["pool_waiters_peak"] == 1 and metrics["pool_size_peak"] == 1


def test_import_of_the_sql_module_does_not_import_asyncpg() -> None:
    """The sqlite source loads without asyncpg: the postgres classes load on first use."""
    code = ("import sys, headrace.builtins.sql as m; m.SqliteSource; "
            "print('asyncpg' in sys.modules); m.PostgresSink; print('asyncpg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


# -- the database goes down mid-run ---------------------------------------------------------------

SLOW = """
import time

def slow(table):
    time.sleep(table.num_rows * {per_row})
    return table
"""


def slow_pipeline(folder: Path, count: int, sink: str, *, per_row: float, interval: float,
                  name: str = "sql", block_size: int = 16384) -> Path:
    (folder / "slowfn.py").write_text(SLOW.format(per_row=per_row), encoding="utf-8")
    csv_input(folder, count, bad=frozenset({5, count // 2}))
    return pipeline(folder, f"{{use: csv, path: in.csv, block_size: {block_size}, types: "
                    "{id: int64, name: string, score: float64}}",
                    sink, steps='[{use: python, function: "slowfn:slow", mode: batch, '
                    'format: arrow}]', runtime=f"{{checkpoint_interval: {interval}, "
                    "max_failures: 10}", name=name)


def start(path: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*HEADRACE, "run", str(path), "--json", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1", "HEADRACE_CONFIG": os.devnull})


def exactly_once(table: str, folder: Path, count: int, name: str = "sql") -> None:
    """Every id 0..count-1 exactly once in the table or the dead letters."""
    ids = ids_in(table)
    dead = [d["record"]["line"].split(",")[0] for d in read_jsonl(folder / f"{name}.dead.jsonl")]
    seen = ids + [int(i) for i in dead]
    assert len(seen) == len(set(seen)), "duplicated: " + str(
        sorted({i for i in seen if seen.count(i) > 1})[:10])
    assert sorted(seen) == list(range(count)), f"lost: {sorted(set(range(count)) - set(seen))[:10]}"


def test_a_short_outage_is_retried_and_nothing_is_lost_or_repeated(tmp_path: Path) -> None:
    """The database goes away for ~0.7 s mid-run (every connection reset, new ones
    refused): the sink retries per its policy, writes the open transaction's rows again,
    and the run ends ok with every row exactly once."""
    with tables() as made, Proxy() as proxy:
        t, ck = made.name("out"), made.name("ck")
        path = slow_pipeline(tmp_path, 20_000, pg_sink(
            t, ck, "retry: {attempts: 10, base: 100ms, cap: 500ms}", dsn=proxy.dsn()),
            per_row=100e-6, interval=1.0)
        proc = start(path)
        time.sleep(1.8)  # started, writing inside its first transactions
        proxy.down()
        time.sleep(0.7)
        proxy.up()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
        summary = json.loads(stdout.decode().strip().splitlines()[-1])
        assert summary["retries"]["sink"] >= 1
        exactly_once(t, tmp_path, 20_000)


def test_a_database_still_starting_at_launch_is_waited_for(tmp_path: Path) -> None:
    """The database refuses connections when the run starts and accepts them a moment
    later: the sink's first connection is retried per its policy and the run ends ok."""
    require_postgres()
    with tables() as made, Proxy() as proxy:
        t, ck = made.name("out"), made.name("ck")
        csv_input(tmp_path, 100)
        path = pipeline(tmp_path, "{use: csv, path: in.csv}", pg_sink(
            t, ck, "retry: {attempts: 20, base: 100ms, cap: 300ms}", dsn=proxy.dsn()))
        proxy.down()
        proc = start(path)
        time.sleep(1.5)  # refused meanwhile
        proxy.up()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
        summary = json.loads(stdout.decode().strip().splitlines()[-1])
        assert summary["retries"]["sink"] >= 1
        assert ids_in(t) == list(range(100))


@pytest.mark.parametrize("plugin", ["sink", "source"])
def test_a_wrong_database_fails_at_once_without_a_resume_hint(tmp_path: Path,
                                                              plugin: str) -> None:
    """A database that does not exist is no transient failure: the first connection fails
    at once (no retries), with one line naming it and no suggestion to --resume."""
    require_postgres()
    csv_input(tmp_path, 10)
    wrong = DSN.rsplit("/", 1)[0] + "/no_such_db_headrace"
    source = ("{use: csv, path: in.csv}" if plugin == "sink" else
              f"{{use: postgres, dsn: '{wrong}', table: t, key: id}}")
    sink = (pg_sink("t", "ck", "retry: {attempts: 5, base: 1s}", dsn=wrong) if plugin == "sink"
            else "{use: jsonl, path: out/o.jsonl}")
    result = run_cli("run", str(pipeline(tmp_path, source, sink)), "--json", timeout=60)
    assert result.code == 1, result.stderr
    assert "no_such_db_headrace" in result.stderr and "does not exist" in result.stderr
    assert "--resume" not in result.stderr
    assert not result.summary.get("retries")


def test_a_long_outage_stops_the_run_and_resume_completes_it(tmp_path: Path) -> None:
    """The database stays down past the sink's retries: the run exits 1 with a hint to
    --resume and its last checkpoint committed; once the database is back, --resume
    completes the run with every row exactly once."""
    with tables() as made, Proxy() as proxy:
        t, ck = made.name("out"), made.name("ck")
        path = slow_pipeline(tmp_path, 20_000, pg_sink(
            t, ck, "retry: {attempts: 3, base: 50ms, cap: 100ms}", dsn=proxy.dsn()),
            per_row=100e-6, interval=0.3)
        proc = start(path)
        time.sleep(1.8)
        proxy.down()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr.decode()
        assert "gave up after 3 attempts" in stderr.decode()
        assert "--resume" in stderr.decode()
        committed = len(ids_in(t))
        assert 0 < committed < 20_000
        proxy.up()
        proc = start(path, "--resume")
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
        exactly_once(t, tmp_path, 20_000)


# -- SIGKILL and --resume -------------------------------------------------------------------------

KILLS = 6
DIE_IN_LEDGER_COMMIT = """
import os, signal, sys
from headrace.engine import _ledger

real, calls, when = _ledger.Ledger.commit, [], int(sys.argv[1])

def commit(self, checkpoint):
    calls.append(1)
    if len(calls) == when:  # the sink committed this checkpoint; the ledger not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, checkpoint)

_ledger.Ledger.commit = commit
from headrace.cli import main

sys.argv = ["headrace", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["insert", "copy"])
def test_sigkill_and_resume_write_every_row_exactly_once(tmp_path: Path, mode: str) -> None:
    """SIGKILL at seeded moments, --resume after each, and once more right between the
    database's COMMIT and the ledger's (the engine then resumes from the checkpoint stored
    in the database): every id exactly once in the table or the dead letters."""
    count = 60_000
    with tables() as made:
        t, ck = made.name("out"), made.name("ck")
        path = slow_pipeline(tmp_path, count, pg_sink(t, ck, f"mode: {mode}"),
                             per_row=100e-6, interval=0.2, name="crash")
        killed = subprocess.run([sys.executable, "-c", DIE_IN_LEDGER_COMMIT, "3", "run",
                                 str(path)], capture_output=True, timeout=60, check=False,
                                env={**os.environ, "HEADRACE_CONFIG": os.devnull})
        assert killed.returncode == -9, killed.stderr.decode()
        stored = query(f'SELECT seq FROM "{ck}"')
        assert stored == [(3,)]  # the database is one checkpoint ahead of the ledger
        rng = random.Random(f"pg-{mode}")
        kills = 1
        for attempt in range(KILLS):
            proc = start(path, "--resume")
            try:
                _, stderr = proc.communicate(timeout=rng.uniform(0.9, 2.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                kills += 1
                continue
            assert proc.returncode == 0 or b"the last run completed" in stderr, (
                attempt, stderr.decode())
            break
        else:
            proc = start(path, "--resume")
            _, stderr = proc.communicate(timeout=120)
            # The last kill may land after the run completed: nothing is left to resume.
            assert proc.returncode == 0 or b"the last run completed" in stderr, stderr.decode()
        exactly_once(t, tmp_path, count, name="crash")
        assert kills >= 3, f"only {kills} kills landed before the run ended"


# -- the example --------------------------------------------------------------------------------

def test_the_csv_to_postgres_example_runs(tmp_path: Path) -> None:
    """examples/csv-to-postgres runs as documented (with its own table, --set), and a rerun
    upserts: the same rows, no duplicates."""
    with tables() as made:
        t, ck = made.name("orders"), made.name("ck")
        folder = tmp_path / "example"
        shutil.copytree(EXAMPLES / "csv-to-postgres", folder)
        args = ["run", str(folder / "csv-to-postgres.yaml"), "--json",
                "--set", f"sink.table={t}", "--set", f"sink.checkpoint_table={ck}"]
        env = {"PG_DSN": DSN}
        for _ in range(2):
            result = run_cli(*args, env=env)
            assert result.code == 0, result.stderr
        rows = query(f'SELECT count(*), count(DISTINCT order_id) FROM "{t}"')
        assert rows[0][0] == rows[0][1] == result.summary["records_out"] > 0
        dead = folder / "csv-to-postgres.dead.jsonl"
        assert result.summary["records_dead"] == 2 and len(read_jsonl(dead)) == 2


def test_a_thread_is_not_left_running() -> None:
    """The proxy helper stops its thread (the tests leave nothing behind)."""
    with Proxy() as proxy:
        assert proxy.port
    assert not [t for t in threading.enumerate() if t.name == "pg-proxy"]


@pytest.mark.parametrize("mode", ["insert", "upsert", "copy"])
def test_the_sink_passes_the_conformance_suite(tmp_path: Path, mode: str) -> None:
    """The plugin kit's conformance suite (lifecycle under cancellation, resumable,
    idempotent: a replay after a checkpoint leaves no duplicates) passes in every mode."""
    from headrace.testing import assert_conforms

    with tables() as made:
        t, ck = made.name("conf"), made.name("ck")

        def read_output(options: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"id": i, "name": n} for i, n in
                    query(f'SELECT id, name FROM "{options["table"]}" ORDER BY id')]

        records = [{"id": i, "name": f"n{i}"} for i in range(30)]
        options = {"dsn": DSN, "table": t, "checkpoint_table": ck, "mode": mode,
                   "if_exists": "replace", **({"key": ["id"]} if mode == "upsert" else {})}
        report = assert_conforms("sink", "postgres", options=options, records=records,
                                 read_output=read_output, base_dir=tmp_path)
        assert {r.name for r in report.results if r.status == "passed"} >= {
            "lifecycle", "resumable", "idempotent"}
