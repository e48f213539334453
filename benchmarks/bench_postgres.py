"""Concurrent transactional writers into Postgres through one pool: where does it saturate?

Usage: .venv/bin/python benchmarks/bench_postgres.py [--dsn DSN] [--writers 8] [--rows 1000]
                                                     [--batches 100] [--pools 1,2,4,8,16]
                                                     [--modes insert,copy]

Each of ``--writers`` tasks writes ``--batches`` batches of ``--rows`` rows into one shared
table, each batch the way the ``postgres`` sink commits: acquire a connection from the pool,
BEGIN, the rows (the sink's own ``TableWriter``: ``INSERT ... SELECT FROM unnest(...)``, or
binary COPY), the writer's checkpoint row upserted into a checkpoint table, COMMIT, release.
The Arrow -> Python conversion happens before the acquire and is not timed.

Reported per mode and pool size: rows/s over the whole round, the batch-commit latency
(acquire + write + checkpoint + COMMIT; p50, p95), the pool wait (the pool's
``pool_wait_seconds``: total, and per batch on average), and rows/s as a ratio of pool size
1 measured in the same run. Every round is bounded (``--round-timeout``, default 20 s), so
the whole run stays under 2 minutes with the defaults. The tables it makes (unique names)
are dropped at the end. Default DSN: $HEADRACE_BENCH_PG_DSN or
postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
import pyarrow as pa

from headrace.builtins._sql._pool import Pool, PoolOptions
from headrace.builtins._sql._writer import TableWriter
from headrace.plugin import PluginContext, RunServices

DEFAULT_DSN = os.environ.get("HEADRACE_BENCH_PG_DSN",
                             "postgresql://postgres@127.0.0.1:5432/test")


def make_batch(writer: int, index: int, rows: int) -> pa.Table:
    start = (writer * 1_000_000) + index * rows
    ids = list(range(start, start + rows))
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "name": [f"name-{i}" for i in ids],
                     "score": [i * 0.25 for i in ids],
                     "flag": [i % 3 == 0 for i in ids]})


async def one_round(dsn: str, mode: str, pool_size: int, args: argparse.Namespace, *,
                    table: str, checkpoints: str) -> dict[str, Any]:
    services = RunServices()
    context = PluginContext(plugin_id="bench", base_dir=os.getcwd(), services=services)
    pool = Pool(dsn, PoolOptions(min=pool_size, max=pool_size, timeout=60), context, {})
    await pool.open()
    writer = TableWriter(table, mode, [], chunk=args.rows, create=True)
    conn = await pool.acquire()
    try:
        await writer.prepare(conn, make_batch(0, 0, 1).schema)
        await conn.execute(f'TRUNCATE "{table}"')
    finally:
        await pool.release(conn)
    latencies: list[float] = []
    statement = writer.statement(["id", "name", "score", "flag"])
    checkpoint_sql = (f'INSERT INTO "{checkpoints}" (pipeline, sink, seq, checkpoint) '
                      "VALUES ('bench', $1, $2, $3::jsonb) ON CONFLICT (pipeline, sink) DO "
                      "UPDATE SET seq = EXCLUDED.seq, checkpoint = EXCLUDED.checkpoint")

    async def write(number: int) -> None:
        for index in range(args.batches):
            columns = writer.values(make_batch(number, index, args.rows), statement)
            started = time.perf_counter()
            conn = await pool.acquire()
            try:
                async with conn.transaction():
                    await writer.write(conn, columns, statement)
                    await conn.execute(checkpoint_sql, f"w{number}", index,
                                       json.dumps({"records": (index + 1) * args.rows}))
            finally:
                await pool.release(conn)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    timed_out = False
    try:
        async with asyncio.timeout(args.round_timeout):
            async with asyncio.TaskGroup() as group:
                for number in range(args.writers):
                    group.create_task(write(number))
    except TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - started
    await pool.close()
    metrics = {name: total for _, name, total in services.metric_totals()}
    batches = len(latencies)
    ordered = sorted(latencies)
    return {
        "mode": mode, "pool": pool_size, "rows": batches * args.rows, "seconds": elapsed,
        "rows_s": batches * args.rows / elapsed,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000 if ordered else float("nan"),
        "wait_s": metrics.get("pool_wait_seconds", 0.0),
        "wait_ms_per_batch": metrics.get("pool_wait_seconds", 0.0) / max(1, batches) * 1000,
        "waits": int(metrics.get("pool_waits", 0)), "timed_out": timed_out,
    }


async def main(args: argparse.Namespace) -> int:
    suffix = uuid.uuid4().hex[:8]
    table, checkpoints = f"bench_pg_{suffix}", f"bench_pg_ck_{suffix}"
    conn = await asyncpg.connect(args.dsn)
    version = await conn.fetchval("SHOW server_version")
    max_connections = await conn.fetchval("SHOW max_connections")
    await conn.execute(f'CREATE TABLE "{checkpoints}" (pipeline text, sink text, seq bigint, '
                       "checkpoint jsonb, PRIMARY KEY (pipeline, sink))")
    results: list[dict[str, Any]] = []
    try:
        for mode in args.modes.split(","):
            for size in (int(s) for s in args.pools.split(",")):
                result = await one_round(args.dsn, mode, size, args, table=table,
                                         checkpoints=checkpoints)
                results.append(result)
                print(f"  {mode} pool={size}: {result['rows_s']:,.0f} rows/s", file=sys.stderr)
    finally:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}", "{checkpoints}"')
        await conn.close()
    print(f"\nPostgreSQL {version} (max_connections {max_connections}), {os.cpu_count()} "
          f"CPUs; {args.writers} writers x {args.batches} batches x {args.rows} rows, "
          "one transaction per batch (rows + checkpoint row)\n")
    print("| mode | pool | rows/s | vs pool 1 | commit p50 ms | commit p95 ms "
          "| pool wait s (total) | wait ms/batch | waits |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = next(x for x in results if x["mode"] == r["mode"])["rows_s"]
        note = " (timed out)" if r["timed_out"] else ""
        print(f"| {r['mode']} | {r['pool']} | {r['rows_s']:,.0f}{note} | "
              f"{r['rows_s'] / base:.2f}x | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['wait_s']:.2f} | {r['wait_ms_per_batch']:.1f} | {r['waits']} |")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--pools", default="1,2,4,8,16")
    parser.add_argument("--modes", default="insert,copy")
    parser.add_argument("--round-timeout", type=float, default=20.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
