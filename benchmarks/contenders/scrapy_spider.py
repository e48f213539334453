"""Benchmark 5 contender: a Scrapy spider fetching the same URL list as the bare loop.

Run through ``CrawlerProcess`` on the asyncio reactor with CONCURRENT_REQUESTS and
CONCURRENT_REQUESTS_PER_DOMAIN = C; no robots.txt, AutoThrottle, retries, redirects, cookies,
proxies, duplicate filter or download delay; no telnet or remote-control port. Each response
body is parsed as JSON. CONCURRENT_ITEMS=1: the callback yields nothing, and Scrapy >= 2.13
on the asyncio reactor starts CONCURRENT_ITEMS tasks per response (default 100: ~20% slower
here). Prints one JSON line on stdout: ``{"requests", "ok", "errors", "seconds"}`` (seconds:
the whole crawl).

Usage: scrapy_spider.py BASE_URL REQUESTS CONCURRENCY
Needs the ``scrapy`` extra: pip install -e '.[scrapy]'.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response

STATUSES: Counter[int] = Counter()


class GeoSpider(scrapy.Spider):
    name = "geo"
    # Let every status reach parse() so errors are counted, not dropped by a middleware.
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    def __init__(self, base: str, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base, self.count = base, count

    async def start(self) -> AsyncIterator[scrapy.Request]:  # Scrapy >= 2.13
        for request in self.start_requests():
            yield request

    def start_requests(self) -> Iterator[scrapy.Request]:  # Scrapy < 2.13
        for i in range(self.count):
            yield scrapy.Request(f"{self.base}/geo?zip={i % 100_000:05d}", dont_filter=True)

    def parse(self, response: Response, **kwargs: Any) -> None:
        if response.status == 200:
            json.loads(response.body)
        STATUSES[response.status] += 1


def settings(concurrency: int) -> dict[str, Any]:
    return {
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "CONCURRENT_REQUESTS_PER_IP": 0,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "RETRY_ENABLED": False,
        "REDIRECT_ENABLED": False,
        "COOKIES_ENABLED": False,
        "HTTPPROXY_ENABLED": False,
        "CONCURRENT_ITEMS": 1,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,  # Scrapy >= 2.19 serves a control port by default
        "LOG_LEVEL": "ERROR",
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    }


def main(base: str, count: int, concurrency: int) -> None:
    process = CrawlerProcess(settings(concurrency))
    process.crawl(GeoSpider, base=base, count=count)
    start = time.perf_counter()
    process.start()
    seconds = time.perf_counter() - start
    ok = STATUSES.get(200, 0)
    total = sum(STATUSES.values())
    print(json.dumps({"requests": total, "ok": ok, "errors": total - ok,
                      "seconds": round(seconds, 3)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
