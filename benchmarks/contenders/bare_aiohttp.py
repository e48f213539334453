"""Benchmark 5 baseline: a bare aiohttp loop, what one would write by hand.

One ClientSession with ``TCPConnector(limit=C)``, C worker tasks pulling URLs
``BASE/geo?zip=NNNNN`` from one prepared list, each reading the JSON body. Prints one JSON
line on stdout: ``{"loop", "requests", "ok", "errors", "seconds"}`` (seconds: from the first
request to the last answer, inside this process).

Usage: bare_aiohttp.py BASE_URL REQUESTS CONCURRENCY [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp


def urls(base: str, count: int) -> list[str]:
    """The same URL list as the headrace pipeline's input: zip = id % 100000, five digits."""
    return [f"{base}/geo?zip={i % 100_000:05d}" for i in range(count)]


async def worker(session: aiohttp.ClientSession, todo: Iterator[str],
                 statuses: Counter[int]) -> None:
    for url in todo:  # one shared iterator: each URL is taken by exactly one worker
        async with session.get(url) as response:
            if response.status == 200:
                await response.json()
            else:
                await response.read()
            statuses[response.status] += 1


async def fetch_all(base: str, count: int, concurrency: int) -> dict[str, object]:
    todo = iter(urls(base, count))
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(session, todo, statuses))
        seconds = time.perf_counter() - start
    ok = statuses.get(200, 0)
    return {"requests": sum(statuses.values()), "ok": ok,
            "errors": sum(statuses.values()) - ok, "seconds": round(seconds, 3)}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("requests", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        result = runner.run(fetch_all(args.base, args.requests, args.concurrency))
    print(json.dumps({"loop": args.loop, **result}), flush=True)


if __name__ == "__main__":
    main()
