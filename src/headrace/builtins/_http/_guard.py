"""Refuse dangerous destinations (SSRF) before connecting.

A URL built from record data can point anywhere: the cloud metadata service, Redis on
localhost, a router on the LAN. ``HostGuard`` judges a URL before the request
(``check_url``: scheme, host names, IP literals in every spelling ``getaddrinfo`` accepts)
and every address a host name resolves to (``resolver()``), because a name can resolve to a
private address, and DNS can be rebound between two lookups.

Verdicts, in order; the first that applies wins:

1. ``deny_hosts`` matches the host or an address: refused (deny wins over allow).
2. ``allow_hosts`` matches the host or an address: allowed.
3. Link-local, cloud metadata (addresses and names), unspecified, multicast, broadcast and
   reserved addresses: refused.
4. Private addresses (loopback, RFC 1918, CGNAT, ULA, site-local) and ``localhost`` names:
   refused when ``private="deny"``, or when ``private="auto"`` and the URL comes from data
   and its host is not one of ``trusted_hosts``.
5. Anything else: allowed.

IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged as that
IPv4 address.

aiohttp connects to IP literals without asking the resolver, so follow redirects by hand
and ``check_url`` every ``Location``; through a proxy only ``check_url`` applies (the proxy
resolves the name).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["HostGuard", "RefusedDestination"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PrivatePolicy = Literal["auto", "allow", "deny"]

_FROM_DATA: ContextVar[bool] = ContextVar("headrace_http_from_data", default=False)

_SCHEMES = frozenset({"http", "https"})
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure WireServer
))
_V4_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V4_PRIVATE: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "RFC 1918"),
    ("172.16.0.0/12", "RFC 1918"),
    ("192.168.0.0/16", "RFC 1918"),
    ("100.64.0.0/10", "CGNAT"),
)
_V6_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_V6_PRIVATE: tuple[tuple[str, str], ...] = (
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local"),
    ("fec0::/10", "site-local"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")

# What inet_aton (and so getaddrinfo) reads as IPv4: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_USERINFO = re.compile(r"(//[^/?#@:]*):[^/?#@]*@")


def _networks(table: tuple[tuple[str, str], ...]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in table)


_V4_FORBIDDEN_NETS = _networks(_V4_FORBIDDEN)
_V4_PRIVATE_NETS = _networks(_V4_PRIVATE)
_V6_FORBIDDEN_NETS = _networks(_V6_FORBIDDEN)
_V6_PRIVATE_NETS = _networks(_V6_PRIVATE)


class RefusedDestination(Exception):
    """A URL or address the pipeline does not allow; terminal (never retried).

    Not an ``OSError``: aiohttp wraps those in connection errors, which the engine retries.
    """

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(target, reason)
        self.target = target
        self.reason = reason

    def __str__(self) -> str:
        return f"refused {self.target}: {self.reason}"


@dataclass(frozen=True)
class _Verdict:
    forbidden: bool  # False: private
    subject: str
    kind: str

    @property
    def text(self) -> str:
        return f"{self.subject} is {self.kind}"


def _canonical_host(host: str) -> str:
    """One spelling per host: an address in standard form, or a lower-case IDNA name."""
    address = _parse_ip(host)
    if address is not None:
        return str(address)
    name = host.rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return (yarl.URL.build(scheme="http", host=name).raw_host or name).lower()
    except (ValueError, UnicodeError):
        return name


def _parse_ip(host: str) -> IPAddress | None:
    """The address a host string means to ``getaddrinfo``, in any spelling; None for names."""
    text = host.strip("[]").rstrip(".")
    if ":" in text:
        text = text.split("%", 1)[0]  # an IPv6 zone: the address decides, not the interface
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(packed[12:])
    if address in _NAT64_LOCAL_USE:  # RFC 6052 /48: octets 6-7 and 9-10, around the u octet
        return ipaddress.IPv4Address(packed[6:8] + packed[9:11])
    return None


def _classify_ip(address: IPAddress) -> _Verdict | None:
    inner = _embedded_ipv4(address)
    if inner is not None:
        verdict = _classify_ip(inner)
        if verdict is None:
            return None
        return _Verdict(verdict.forbidden, f"{address} embeds {inner}, which", verdict.kind)
    subject = str(address)
    if address in _METADATA_ADDRESSES:
        if address.is_link_local:
            return _Verdict(True, subject, "link-local (cloud metadata)")
        return _Verdict(True, subject, "a cloud metadata address")
    if isinstance(address, ipaddress.IPv4Address):
        forbidden, private = _V4_FORBIDDEN_NETS, _V4_PRIVATE_NETS
    else:
        forbidden, private = _V6_FORBIDDEN_NETS, _V6_PRIVATE_NETS
    for net, kind in forbidden:
        if address in net:
            return _Verdict(True, subject, kind)
    for net, kind in private:
        if address in net:
            return _Verdict(False, subject, f"private ({kind})")
    if isinstance(address, ipaddress.IPv6Address) and address not in _V6_GLOBAL_UNICAST:
        return _Verdict(True, subject, "reserved")
    return None


def _classify_name(name: str) -> _Verdict | None:
    if name in _METADATA_NAMES:
        return _Verdict(True, name, "a cloud metadata name")
    if name == "localhost" or name.endswith(".localhost"):
        return _Verdict(False, name, "private (a localhost name)")
    return None


def _entry_error(option: str, entry: object, why: str) -> ValueError:
    return ValueError(f"{option}: {entry!r} {why}")


def _valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return (0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def _ascii_name(option: str, entry: str, name: str) -> str:
    """``name`` spelled as URLs carry it (IDNA), so entries match ``URL.raw_host``."""
    if name.isascii():
        return name
    try:
        raw = yarl.URL.build(scheme="http", host=name).raw_host
    except (ValueError, UnicodeError) as exc:
        raise _entry_error(option, entry, "is not a valid host name") from exc
    return (raw or "").lower()


class _HostSet:
    """Host names, ``*.suffix`` wildcards, IP addresses and networks, as the user wrote them."""

    def __init__(self, option: str, entries: Sequence[str]) -> None:
        if isinstance(entries, str):
            raise _entry_error(option, entries, "must be a list of hosts, not one string")
        self.names: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}
        self.networks: list[tuple[IPNetwork, str]] = []
        for entry in entries:
            self._add(option, entry)

    def _add(self, option: str, entry: str) -> None:
        if not isinstance(entry, str) or not entry:
            raise _entry_error(option, entry, "is not a host")
        text = entry.lower()
        if "/" in text:
            try:
                self.networks.append((ipaddress.ip_network(text, strict=True), entry))
            except ValueError as exc:
                raise _entry_error(option, entry, f"is not a CIDR network ({exc})") from exc
            return
        text = text.strip("[]") if text.startswith("[") and text.endswith("]") else text
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            self.networks.append((ipaddress.ip_network(address), entry))
            return
        wildcard = text.startswith("*.")
        name = _ascii_name(option, entry, (text[2:] if wildcard else text).rstrip("."))
        if _NUMERIC_HOST.fullmatch(name) and _parse_ip(name) is not None:
            raise _entry_error(option, entry, "is an ambiguous IPv4 spelling; write a.b.c.d")
        if not _valid_hostname(name):
            raise _entry_error(option, entry, "is not a host name, *.suffix, IP address "
                                              "or CIDR network")
        (self.suffixes if wildcard else self.names)[name] = entry

    def match(self, name: str, addresses: Sequence[IPAddress]) -> str | None:
        """The entry that matches ``name`` or one of ``addresses``, as written; else None."""
        if name in self.names:
            return self.names[name]
        for suffix, entry in self.suffixes.items():
            if name.endswith("." + suffix):
                return entry
        for address in addresses:
            for network, entry in self.networks:
                if address.version == network.version and address in network:
                    return entry
        return None


class HostGuard:
    """The destination policy of one HTTP plugin; see the module docstring for the rules.

    Bad ``allow_hosts``/``deny_hosts``/``trusted_hosts`` entries raise ``ValueError`` naming
    the entry, for the caller to report as a config error.
    """

    def __init__(self, *, allow_hosts: Sequence[str] = (), deny_hosts: Sequence[str] = (),
                 private: PrivatePolicy = "auto", trusted_hosts: Sequence[str] = ()) -> None:
        if private not in ("auto", "allow", "deny"):
            raise ValueError(f"private: {private!r} is not one of 'auto', 'allow', 'deny'")
        self._allow = _HostSet("allow_hosts", allow_hosts)
        self._deny = _HostSet("deny_hosts", deny_hosts)
        self._private = private
        if isinstance(trusted_hosts, str):
            raise _entry_error("trusted_hosts", trusted_hosts, "must be a list of hosts, not "
                               "one string")
        self._trusted = frozenset(self._trusted_name(h) for h in trusted_hosts)

    @staticmethod
    def _trusted_name(host: str) -> str:
        """Exact hosts only: they come from URLs written in the pipeline file."""
        if isinstance(host, str) and _parse_ip(host) is not None:
            return _canonical_host(host)
        if not isinstance(host, str) or not host or any(c in host for c in "*/:@ "):
            raise _entry_error("trusted_hosts", host, "is not a single host")
        return _canonical_host(host)

    def check_url(self, url: yarl.URL | str, *, from_data: bool) -> yarl.URL:
        """``url`` parsed, if its scheme and host may be requested; else ``RefusedDestination``.

        Judges IP literals here because aiohttp connects to them without asking the resolver.
        """
        if isinstance(url, str):
            try:
                parsed = yarl.URL(url)
            except (ValueError, TypeError) as exc:
                raise RefusedDestination(_USERINFO.sub(r"\1:***@", url),
                                         f"not a valid URL ({exc})") from exc
        else:
            parsed = url
        shown = _redact(parsed)
        if parsed.scheme not in _SCHEMES:
            scheme = f"scheme {parsed.scheme!r}" if parsed.scheme else "the URL has no scheme"
            raise RefusedDestination(shown, f"{scheme}: only http and https are allowed")
        host = parsed.raw_host
        if not host:
            raise RefusedDestination(shown, "the URL has no host")
        reason = self._judge(host, _parse_ip(host), from_data=from_data)
        if reason is not None:
            raise RefusedDestination(shown, reason)
        return parsed

    def check_address(self, host: str, address: str, *, from_data: bool) -> None:
        """Refuse connecting to ``address``, which ``host`` resolved to, unless allowed."""
        ip = _parse_ip(address)
        if ip is None:
            raise RefusedDestination(host, f"{address!r} is not an IP address")
        reason = self._judge(host, ip, from_data=from_data)
        if reason is not None:
            target = host if _parse_ip(host) == ip else f"{host} at {ip}"
            raise RefusedDestination(target, reason)

    def _judge(self, host: str, ip: IPAddress | None, *, from_data: bool) -> str | None:
        """The reason to refuse, or None to allow."""
        name = _canonical_host(host)
        addresses: list[IPAddress] = []
        if ip is not None:
            addresses.append(ip)
            inner = _embedded_ipv4(ip)
            if inner is not None:
                addresses.append(inner)
        denied = self._deny.match(name, addresses)
        if denied is not None:
            return f"{name} matches {denied!r} in deny_hosts"
        if self._allow.match(name, addresses) is not None:
            return None
        verdicts = [v for v in (_classify_name(name), None if ip is None else _classify_ip(ip))
                    if v is not None]
        for verdict in verdicts:
            if verdict.forbidden:
                return f"{verdict.text}; allow it with allow_hosts"
        if not verdicts or self._private == "allow":
            return None
        if self._private == "deny":
            return (f"{verdicts[0].text} and private_networks is 'deny'; allow it with "
                    "allow_hosts")
        if from_data and name not in self._trusted:
            return (f"{verdicts[0].text} and the URL comes from data; allow it with "
                    "allow_hosts or private_networks: allow")
        return None

    def resolver(self, inner: AbstractResolver | None = None) -> AbstractResolver:
        """A resolver for ``aiohttp.TCPConnector`` that refuses a host when any address it
        resolves to is refused (so DNS answers mixing addresses cannot slip one through).

        Whether the request's URL came from data is read from ``data_urls()``. aiohttp only
        asks the resolver when it opens a new connection, so a verdict is reused by: the
        connector's DNS cache and its sharing of one lookup among concurrent requests (create
        the connector with ``use_dns_cache=False``), and pooled keep-alive connections (do
        not mix requests from data and from the pipeline file on one connector). ``inner``
        defaults to aiohttp's ``DefaultResolver``, created on first use (it needs a loop).
        """
        return _GuardedResolver(self, inner)

    @contextlib.contextmanager
    def data_urls(self, from_data: bool) -> Iterator[None]:
        """Tell the resolver whether the requests made inside come from data (default: no).

        aiohttp resolves in the task that makes the request, so the flag follows it there.
        """
        token = _FROM_DATA.set(from_data)
        try:
            yield
        finally:
            _FROM_DATA.reset(token)


class _GuardedResolver(AbstractResolver):
    def __init__(self, guard: HostGuard, inner: AbstractResolver | None) -> None:
        self._guard = guard
        self._inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:
            from aiohttp.resolver import DefaultResolver

            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        from_data = _FROM_DATA.get()
        for result in results:
            self._guard.check_address(host, result["host"], from_data=from_data)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _redact(url: yarl.URL) -> str:
    """The URL as shown in errors: ``user:***@host``, never the password."""
    if url.password is not None:
        url = url.with_password("***")
    return str(url)
