"""The sqlite sink: insert and upsert, table creation and types, option errors with
file:line, dead letters accounted for, and the rowid cut that makes a resume exact."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest

from headrace.builtins.sinks import SqliteSink
from headrace.plugin import Batch, PluginContext

from .conftest import assert_accounted, read_jsonl, run_cli

CSV = ("id,name,score,flag,seen\n"
       "1,a,1.5,true,2024-01-01T10:00:00\n"
       "2,b,,false,2024-01-02T11:30:00\n"
       "3,c,3.5,true,\n")


def pipeline(write, sink: str, csv: str = CSV, runtime: str = "{}") -> Path:  # type: ignore[no-untyped-def]
    write("in.csv", csv)
    return write("p.yaml", f"""
        version: 1
        name: sq
        source: {{use: csv, path: in.csv}}
        sink: {sink}
        runtime: {runtime}
        """)


def rows(db: Path, sql: str = "SELECT * FROM items ORDER BY rowid") -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_insert_creates_the_table_with_sqlite_types(write, tmp_path: Path) -> None:
    """A fresh table takes SQLite types from the first batch; values keep their types,
    timestamps become ISO 8601 text, booleans 0/1, missing values NULL."""
    path = pipeline(write, "{use: sqlite, path: out/db.sqlite, table: items}")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    db = tmp_path / "out" / "db.sqlite"
    (ddl,) = rows(db, "SELECT sql FROM sqlite_master WHERE name = 'items'")[0]
    assert ddl == ('CREATE TABLE "items" ("id" INTEGER, "name" TEXT, "score" REAL, '
                   '"flag" INTEGER, "seen" TEXT)')
    assert rows(db) == [(1, "a", 1.5, 1, "2024-01-01T10:00:00"),
                        (2, "b", None, 0, "2024-01-02T11:30:00"),
                        (3, "c", 3.5, 1, None)]
    assert sorted(p.name for p in db.parent.iterdir()) == ["db.sqlite"]  # no WAL left over


@pytest.mark.parametrize(("if_exists", "expected"), [("", 3), (", if_exists: append", 6)],
                         ids=["replace-by-default", "append"])
def test_a_second_insert_run_replaces_or_appends(write, tmp_path: Path, if_exists: str,
                                                 expected: int) -> None:
    """Insert mode replaces what an earlier run wrote, like file sinks replace their file;
    ``if_exists: append`` keeps it."""
    path = pipeline(write, f"{{use: sqlite, path: db.sqlite, table: items{if_exists}}}")
    for _ in range(2):
        result = run_cli("run", str(path), "--json")
        assert result.code == 0, result.stderr
    assert rows(tmp_path / "db.sqlite", "SELECT count(*) FROM items") == [(expected,)]


def test_upsert_updates_by_key_and_never_duplicates(write, tmp_path: Path) -> None:
    """Upsert merges into the table: a re-run changes nothing, a changed record updates its
    row, a new key adds one, keys the run does not mention stay."""
    sink = "{use: sqlite, path: db.sqlite, table: items, mode: upsert, key: [id]}"
    path = pipeline(write, sink)
    for _ in range(2):
        assert run_cli("run", str(path)).code == 0
    db = tmp_path / "db.sqlite"
    assert rows(db, "SELECT id, name FROM items ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]
    pipeline(write, sink, csv="id,name,score,flag,seen\n2,B,2.5,true,\n4,d,4.0,false,\n")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    assert rows(db, "SELECT id, name, score FROM items ORDER BY id") == [
        (1, "a", 1.5), (2, "B", 2.5), (3, "c", 3.5), (4, "d", 4.0)]
    indexes = rows(db, "SELECT sql FROM sqlite_master WHERE type = 'index'")
    assert indexes == [('CREATE UNIQUE INDEX "items_key" ON "items" ("id")',)]


@pytest.mark.parametrize("options", [
    "table: 'items; drop table x'",
    "table: sqlite_master",
    "table: 1items",
    "table: items, mode: upsert",
    "table: items, key: [id]",
    "table: items, mode: merge",
], ids=["injection", "reserved", "digit-first", "upsert-without-key", "key-without-upsert",
        "unknown-mode"])
def test_bad_options_are_rejected_with_file_and_line(write, options: str) -> None:
    """Option errors stop the run before it starts: exit 2, one line naming p.yaml:4."""
    path = pipeline(write, f"{{use: sqlite, path: db.sqlite, {options}}}")
    result = run_cli("run", str(path))
    assert result.code == 2, result.stderr
    assert "p.yaml:4" in result.stderr
    assert not (path.parent / "db.sqlite").exists()


def test_dead_letters_and_rows_account_for_every_record(write, tmp_path: Path) -> None:
    """Records the source cannot decode (ragged rows) go to dead letters; the table holds
    the rest:
    rows + dead letters == records in."""
    lines = [f"{i},n{i},{i}.5,true,2024-01-01T00:00:00" for i in range(500)]
    for bad in (17, 250, 499):
        lines[bad] = f"{bad},n{bad},1.5,true,2024-01-01T00:00:00,one field too many"
    path = pipeline(write, "{use: sqlite, path: db.sqlite, table: items}",
                    csv="id,name,score,flag,seen\n" + "\n".join(lines) + "\n",
                    runtime="{max_failures: 10}")
    result = run_cli("run", str(path), "--json")
    assert result.code == 0, result.stderr
    summary = result.summary
    assert_accounted(summary)
    assert summary["records_dead"] == 3
    dead = read_jsonl(tmp_path / "db.dead.jsonl")
    assert sorted(d["position"]["line"] for d in dead) == [19, 252, 501]
    ids = [r[0] for r in rows(tmp_path / "db.sqlite", "SELECT id FROM items ORDER BY rowid")]
    assert ids == [i for i in range(500) if i not in (17, 250, 499)]
    assert len(ids) == summary["records_out"]


# -- the checkpoint protocol, driven directly -------------------------------------------

def make_sink(tmp_path: Path, **options: Any) -> SqliteSink:
    sink = SqliteSink(SqliteSink.Options(path="db.sqlite", table="items", **options),
                      PluginContext(plugin_id="sqlite", base_dir=tmp_path))
    sink.checkpointing = True
    return sink


def batch(ids: range) -> Batch:
    return Batch.from_arrow(pa.table({"id": list(ids)}))


def session(sink: SqliteSink, state: dict[str, Any], writes: list[range], *,
            checkpoint_after: int | None = None, finish: bool = False) -> dict[str, Any]:
    """open, resume(state), write; checkpoint after the first ``checkpoint_after`` writes
    and after the last; then finish, or stop as a SIGKILL would (nothing more)."""
    saved: dict[str, Any] = {}

    async def main() -> None:
        async with sink:
            await sink.resume(state)
            for index, ids in enumerate(writes, 1):
                await sink.write(batch(ids))
                if index == checkpoint_after:
                    saved.update(await sink.checkpoint())
            saved["last"] = await sink.checkpoint()
            if finish:
                await sink.finish()

    anyio.run(main)
    return saved


@pytest.mark.parametrize("if_exists", ["replace", "append"])
def test_resume_cuts_rows_committed_after_the_ledgers_checkpoint(tmp_path: Path,
                                                                 if_exists: str) -> None:
    """A crash after the sink's COMMIT but before the ledger's leaves rows the resumed run
    writes again; resume(state) removes exactly those (rowid > the checkpoint's)."""
    db = tmp_path / "db.sqlite"
    session(make_sink(tmp_path, if_exists=if_exists), {}, [range(100, 103)], finish=True)
    saved = session(make_sink(tmp_path, if_exists=if_exists), {}, [range(0, 5), range(5, 9)],
                    checkpoint_after=1)  # both committed; the ledger only saw the first
    old = [100, 101, 102] if if_exists == "append" else []
    assert len(rows(db)) == len(old) + 9
    session(make_sink(tmp_path, if_exists=if_exists), {"rowid": saved["rowid"]},
            [range(5, 9)], finish=True)
    assert [r[0] for r in rows(db)] == [*old, *range(9)]
    assert rows(db, "SELECT name FROM sqlite_master WHERE name LIKE '_headrace%'") == []


def test_an_appending_run_killed_before_its_first_ledger_checkpoint_starts_clean(
        tmp_path: Path) -> None:
    """Append mode: the rows of a run that committed but never reached the ledger (state
    {}) are dropped when the run starts over; earlier runs' rows stay."""
    db = tmp_path / "db.sqlite"
    session(make_sink(tmp_path, if_exists="append"), {}, [range(100, 103)], finish=True)
    session(make_sink(tmp_path, if_exists="append"), {}, [range(0, 5)])  # killed
    session(make_sink(tmp_path, if_exists="append"), {}, [range(0, 5)], finish=True)
    assert [r[0] for r in rows(db)] == [100, 101, 102, 0, 1, 2, 3, 4]


def test_abort_rolls_back_what_no_checkpoint_committed(tmp_path: Path) -> None:
    """abort() drops the open transaction; committed checkpoints stay."""
    sink = make_sink(tmp_path)

    async def main() -> None:
        async with sink:
            await sink.resume({})
            await sink.write(batch(range(3)))
            await sink.checkpoint()
            await sink.write(batch(range(3, 6)))
            await sink.abort()

    anyio.run(main)
    assert [r[0] for r in rows(tmp_path / "db.sqlite")] == [0, 1, 2]
