"""The HTTP client every HTTP plugin shares: one aiohttp session per plugin, per-host slots,
the step's resilience policies per host, destination checks, capped responses.

Per host (``host:port``): at most ``per_host`` requests at once (``adaptive`` moves that
limit between 1 and ``per_host``), and the step's ``rate_limit`` and ``breaker`` apply per
host; ``max_in_flight`` bounds all hosts together. A request waiting for a retry holds no slot,
and waiting for a slot (or for a host's Retry-After pause) is not part of the step's timeout.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import aiohttp
import orjson
from pydantic import Field, field_validator
from yarl import URL

from headrace.config import ByteSize, Duration, redact, register_secret
from headrace.errors import ConfigValueError
from headrace.plugin import Options, PluginContext, Step, TransientError

from ._adaptive import AdaptiveLimit, Slots
from ._guard import HostGuard, RefusedDestination

T = TypeVar("T")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The guard's default is "not from data": nothing to set for most requests (it is per call).
_NOT_FROM_DATA = contextlib.nullcontext()
_SENSITIVE_HEADERS = ("authorization", "cookie", "token", "key", "secret", "auth", "password")
_SNIPPET = 200  # characters of an error response's body kept in the dead-letter reason
_log = logging.getLogger("headrace.http")

StatusList = list[int | str]


def _statuses(*items: int | str) -> StatusList:
    return list(items)


def status_codes(spec: StatusList, what: str) -> frozenset[int]:
    """``[200, "2xx", "500-504"]`` -> the set of codes."""
    codes: set[int] = set()
    for item in spec:
        text = str(item).strip().lower()
        if text.isdigit():
            codes.add(int(text))
        elif len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            codes.update(range(int(text[0]) * 100, int(text[0]) * 100 + 100))
        elif "-" in text and all(p.strip().isdigit() for p in text.split("-", 1)):
            low, high = (int(p) for p in text.split("-", 1))
            codes.update(range(low, high + 1))
        else:
            raise ValueError(f"{what}: {item!r} is not a status code, a class like 2xx, "
                             "or a range like 500-504")
    if any(not 100 <= c <= 599 for c in codes):
        raise ValueError(f"{what}: status codes are 100-599")
    return frozenset(codes)


class HttpOptions(Options):
    """Options every HTTP plugin has."""

    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Request headers; values may use {field} templates (steps) and ${VAR}.")
    max_in_flight: int = Field(default=64, ge=1, le=10_000,
                               description="Requests at once, all hosts together.")
    per_host: int = Field(default=16, ge=1, le=10_000,
                          description="Requests at once to one host (host:port).")
    adaptive: bool = Field(
        default=False,
        description="Adapt each host's concurrency (AIMD): halve on 429/503 and timeouts, "
        "grow by one per window of successes, up to per_host.")
    success_status: StatusList = Field(default_factory=lambda: _statuses("2xx"),
                                       description="Statuses that are a success.")
    retry_status: StatusList = Field(
        default_factory=lambda: _statuses(408, 425, 429, 500, 502, 503, 504),
        description="Statuses retried per the step's retry policy (Retry-After honoured); "
        "any other status is terminal: the record goes to the dead-letter output.")
    max_response_bytes: ByteSize = Field(default=10 * 1024**2, ge=1,
                                         description="Larger responses are an error.")
    connect_timeout: Duration = Field(default=10.0, gt=0, le=3600)
    read_timeout: Duration | None = Field(
        default=None, gt=0, le=86400,
        description="Longest wait for the next bytes of a response (downloads: 30 s; other "
        "requests are bounded by `timeout`, else 60 s in all, which costs no timer per read).")
    max_redirects: int = Field(default=10, ge=0, le=50)
    max_retry_after: Duration = Field(
        default=300.0, gt=0, le=86400,
        description="A Retry-After longer than this is not waited for: the record fails "
        "(dead letter) instead of stalling the run.")
    verify: bool = Field(default=True, description="Verify TLS certificates.")
    ca_file: str | None = Field(default=None, description="CA bundle for TLS verification.")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts, IPs or CIDRs allowed even if private or link-local.")
    deny_hosts: list[str] = Field(default_factory=list,
                                  description="Hosts, IPs or CIDRs never contacted.")
    private_networks: Literal["auto", "allow", "deny"] = Field(
        default="auto",
        description="auto: private/loopback addresses are refused when the host comes from "
        "data, allowed when written in the pipeline; allow; deny.")

    @field_validator("success_status", "retry_status")
    @classmethod
    def _statuses(cls, value: StatusList) -> StatusList:
        status_codes(value, "status")
        return value


class HttpStatusError(Exception):
    """A response with a status the step treats as terminal."""

    def __init__(self, status: int, reason: str, method: str, url: URL, body: str) -> None:
        snippet = " ".join(body.split())[:_SNIPPET]
        super().__init__(redact(f"HTTP {status} {reason} from {method} {display_url(url)}"
                                + (f": {snippet}" if snippet else "")))
        self.status = status


class RetryableStatus(TransientError):
    """A 429/503-like response: retried, no sooner than its ``Retry-After``."""

    def __init__(self, status: int, method: str, url: URL, retry_after: float | None) -> None:
        wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
        super().__init__(redact(f"HTTP {status} from {method} {display_url(url)}{wait}"),
                         retry_after=retry_after)
        self.status = status


class ResponseTooLarge(Exception):
    """A response over ``max_response_bytes``."""


class NotJson(Exception):
    """A response that should be JSON and is not."""


class TooManyRedirects(Exception):
    pass


def display_url(url: URL | str) -> str:
    """The URL for messages: no password, no fragment, secrets redacted."""
    url = URL(url) if isinstance(url, str) else url
    if url.password is not None:
        url = url.with_password("***")
    return redact(str(url.with_fragment(None)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC).timestamp()
    return max(0.0, when.timestamp() - current)


def is_sensitive_header(name: str) -> bool:
    lower = name.lower()
    return any(part in lower for part in _SENSITIVE_HEADERS)


@dataclass
class Request:
    method: str
    url: URL
    params: list[tuple[str, str]] | None = None
    headers: dict[str, str] | None = None
    json: Any = None
    data: bytes | None = None
    from_data: bool = False

    @property
    def host_key(self) -> str:
        return f"{self.url.host}:{self.url.port}"


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any
    url: URL
    extra: dict[str, Any] = field(default_factory=dict)


Read = Literal["json", "text", "bytes", "none"]


class HttpClient:
    """Opened by a plugin in ``open`` and closed in ``close``."""

    def __init__(self, options: HttpOptions, context: PluginContext, *,
                 total_timeout: float | None = 60.0) -> None:
        self.options = options
        self.context = context
        self.success = status_codes(options.success_status, "success_status")
        self.retryable = status_codes(options.retry_status, "retry_status")
        try:
            self.guard = HostGuard(allow_hosts=options.allow_hosts, deny_hosts=options.deny_hosts,
                                   private=options.private_networks,
                                   # The operator's proxies; the pipeline's own hosts are
                                   # trusted by origin (scheme, host, port) in _fetch.
                                   trusted_hosts=_proxy_hosts())
        except ValueError as exc:
            raise ConfigValueError(f"{context.where('allow_hosts')}: {exc}") from None
        for name, value in options.headers.items():
            if is_sensitive_header(name) and "{" not in value:
                register_secret(value)
                _scheme, _, credential = value.strip().partition(" ")
                if credential.strip():  # "Bearer <token>": APIs echo the token alone
                    register_secret(credential.strip())
        self.total_timeout = total_timeout
        self.session: aiohttp.ClientSession | None = None
        self._all = Slots(options.max_in_flight)
        self._hosts: dict[str, AdaptiveLimit] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._allowed: set[tuple[str, str | None, int | None, bool]] = set()

    async def open(self) -> None:
        if not self.options.verify:
            self.context.logger.warning("%s: TLS certificate verification is off (verify: "
                                        "false): responses could come from anyone",
                                        self.context.plugin_id)
        ssl_context: ssl.SSLContext | bool = True
        if not self.options.verify:
            ssl_context = False
        elif self.options.ca_file:
            path = self.context.resolve_path(self.options.ca_file)
            try:
                ssl_context = ssl.create_default_context(cafile=str(path))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigValueError(f"{self.context.where('ca_file')}: cannot load CA file "
                                       f"{path}: {exc}") from None
        connector = aiohttp.TCPConnector(
            limit=self.options.max_in_flight, limit_per_host=self.options.per_host,
            # No DNS cache: every new connection is resolved and its addresses judged.
            ssl=ssl_context, resolver=self.guard.resolver(), use_dns_cache=False)
        timeout = aiohttp.ClientTimeout(total=self.total_timeout,
                                        sock_connect=self.options.connect_timeout,
                                        sock_read=self.options.read_timeout)
        self.session = aiohttp.ClientSession(
            # trust_env=False: with it aiohttp reads ~/.netrc in a thread on every request;
            # proxies from the environment are applied here instead (``_proxy_for``).
            connector=connector, timeout=timeout, trust_env=False, auto_decompress=True,
            raise_for_status=False, json_serialize=lambda v: orjson.dumps(v).decode())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _check(self, url: URL, from_data: bool) -> URL:
        """The guard's verdict on ``url``; an allowed destination is not judged again (the
        resolver still checks every address a host name resolves to)."""
        key = (url.scheme, url.raw_host, url.port, from_data)
        if key in self._allowed:
            return url
        checked = self.guard.check_url(url, from_data=from_data)
        if checked is url or checked == url:
            self._allowed.add(key)
        return checked

    def _proxy_for(self, url: URL) -> str | None:
        """The proxy for ``url`` from HTTP(S)_PROXY / NO_PROXY, looked up once per host."""
        key = (url.scheme, url.host or "")
        if key not in self._proxies:
            import urllib.request

            proxy = urllib.request.getproxies().get(url.scheme)
            if proxy and urllib.request.proxy_bypass(url.host or ""):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    def slots_for(self, key: str) -> AdaptiveLimit:
        limit = self._hosts.get(key)
        if limit is None:
            limit = self._hosts[key] = AdaptiveLimit(self.options.per_host,
                                                     adaptive=self.options.adaptive)
        return limit

    def call(self, request: Request, read: Read = "json",
             consume: Callable[[aiohttp.ClientResponse], Awaitable[Any]] | None = None,
             ) -> Awaitable[Reply]:
        """One request under the step's policies (retries, breaker and rate limit per host).

        A plain function returning the awaitable: no frame of its own between the caller and
        the I/O (each one costs again at every suspension of every request)."""
        key = request.host_key
        limit = self.slots_for(key)
        slots = _Slots(limit, self._all)  # taken before the step's timeout starts
        if limit.adaptive:
            async def attempt() -> Reply:
                started = time.monotonic()
                try:
                    reply = await self._fetch(request, read, consume)
                except BaseException as exc:
                    limit.observe(exc, time.monotonic() - started)
                    raise
                limit.observe(None, time.monotonic() - started)
                return reply
        else:
            attempt = functools.partial(self._fetch, request, read, consume)
        policy = self.context.policy
        if policy is None:
            return _holding(slots, attempt)
        return policy.call(attempt, key=key, slots=slots)

    async def _fetch(self, request: Request, read: Read,
                     consume: Callable[[aiohttp.ClientResponse], Awaitable[Any]] | None) -> Reply:
        assert self.session is not None, "HttpClient used before open()"
        url, method = request.url, request.method
        from_data = request.from_data
        json_body, data = request.json, request.data
        params, headers = request.params, request.headers
        try:
            for _hop in range(self.options.max_redirects + 1):
                url = self._check(url, from_data)
                with self.guard.data_urls(True) if from_data else _NOT_FROM_DATA:
                    async with self.session.request(
                        method, url, params=params, headers=headers, json=json_body, data=data,
                        allow_redirects=False, proxy=self._proxy_for(url),
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status in REDIRECTS and location:
                            target = url.join(URL(location))
                            if not _same_origin(url, target):
                                from_data = True  # the server chose it, not the pipeline
                                headers = _without_credentials(headers)
                            if response.status == 303 or (response.status in (301, 302)
                                                          and method == "POST"):
                                method, json_body, data = "GET", None, None
                            url, params = target, None
                            continue
                        await self._check_status(response, method, url)
                        if consume is not None:
                            body = await consume(response)
                        else:
                            body = await self._read(response, read, method, url)
                        reply = Reply(response.status, response.headers, body, url)
                        if "Link" in response.headers:
                            link = response.links.get("next")
                            if link is not None:
                                reply.extra["next"] = str(link.get("url"))
                        return reply
        except TimeoutError as exc:
            if str(exc):
                raise
            within = f" within {self.total_timeout:g} s" if self.total_timeout else ""
            raise TimeoutError(f"{method} {display_url(url)}: no complete answer"
                               f"{within}") from None
        raise TooManyRedirects(f"more than {self.options.max_redirects} redirects from "
                               f"{display_url(request.url)}")

    async def _check_status(self, response: aiohttp.ClientResponse, method: str,
                            url: URL) -> None:
        status = response.status
        if status in self.success:
            return
        if status in self.retryable:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > self.options.max_retry_after:
                raise HttpStatusError(status, response.reason or "", method, url,
                                      f"Retry-After {wait:g} s is over max_retry_after "
                                      f"({self.options.max_retry_after:g} s)")
            raise RetryableStatus(status, method, url, wait)
        try:  # a little of the body, for the message: APIs explain their 4xx there
            body = (await response.content.read(4 * _SNIPPET)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError):
            body = ""
        raise HttpStatusError(status, response.reason or "", method, url, body)

    async def _read(self, response: aiohttp.ClientResponse, read: Read, method: str,
                    url: URL) -> Any:
        if read == "none":
            return None
        raw = await read_capped(response, self.options.max_response_bytes, method, url)
        if read == "bytes":
            return raw
        if read == "text":
            return raw.decode(response.get_encoding(), errors="replace")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            snippet = raw[:80].decode("utf-8", "replace")
            raise NotJson(redact(f"response of {method} {display_url(url)} is not JSON "
                                 f"({exc}): {snippet!r}")) from None


async def _holding(slots: _Slots, attempt: Callable[[], Awaitable[Reply]]) -> Reply:
    await slots.acquire()
    try:
        return await attempt()
    finally:
        slots.release()


class _Slots:
    """The places one attempt holds: one of its host's (taken once the host's Retry-After
    pause is over) and one of all hosts' (``max_in_flight``). The retry policy takes them
    before it starts the step's timeout and gives them back while it waits to retry, so
    waiting for a place neither counts against the timeout nor costs an attempt."""

    def __init__(self, host: AdaptiveLimit, everyone: Slots) -> None:
        self._host = host
        self._everyone = everyone

    async def acquire(self) -> None:
        await self._host.acquire()
        try:
            await self._everyone.acquire()
        except BaseException:
            self._host.release()
            raise

    def release(self) -> None:
        self._everyone.release()
        self._host.release()


async def read_capped(response: aiohttp.ClientResponse, cap: int, method: str, url: URL) -> bytes:
    """The whole body, or ``ResponseTooLarge`` as soon as it passes ``cap`` bytes."""
    length = response.content_length
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        length = None  # the compressed size: count the decompressed bytes as they come
    if length is not None and length > cap:
        raise ResponseTooLarge(f"response of {method} {display_url(url)} is {length} bytes, "
                               f"over max_response_bytes ({cap})")
    if length is not None:
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise ResponseTooLarge(f"response of {method} {display_url(url)} is over "
                                   f"max_response_bytes ({cap})")
        chunks.append(chunk)
    return b"".join(chunks)


def _same_origin(url: URL, target: URL) -> bool:
    """Whether a redirect stays with the credentials' owner: the same scheme, host and port
    (an upgrade from http to https on the default ports too)."""
    if url.host != target.host:
        return False
    if (url.scheme, url.port) == (target.scheme, target.port):
        return True
    return (url.scheme, url.port, target.scheme, target.port) == ("http", 80, "https", 443)


def _without_credentials(headers: dict[str, str] | None) -> dict[str, str] | None:
    """A redirect to another origin does not carry the pipeline's credentials along."""
    if not headers:
        return headers
    return {k: v for k, v in headers.items() if not is_sensitive_header(k)}


def _proxy_hosts() -> tuple[str, ...]:
    """Hosts of proxies from the environment: the pipeline's operator chose them."""
    import urllib.request

    hosts = []
    for value in urllib.request.getproxies().values():
        try:
            host = URL(value).host
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return tuple(hosts)


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
)


class RecordRequestStep(Step):
    """What the HTTP steps share: rows in, on the event loop, policies applied per request,
    records failing one by one (never the whole batch)."""

    batch_format = "rows"
    default_executor = "async"
    supported_executors = frozenset({"async"})
    splittable = False
    applies_policy_per_record = True
    transient_errors = TRANSIENT_ERRORS

    @property
    def is_async(self) -> bool:
        return True
__all__ = ["RefusedDestination"]
