"""The SSRF guard: which URLs and resolved addresses an HTTP plugin may connect to, and that
the refusal reaches the caller as ``RefusedDestination`` before any connection is made."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from headrace.builtins._http._guard import HostGuard, RefusedDestination

ALLOW_HINT = "; allow it with allow_hosts"
DATA_HINT = (" and the URL comes from data; allow it with allow_hosts or "
             "private_networks: allow")

# (url, guard options, from_data, exact reason)
REFUSED_URLS: list[Any] = [
    pytest.param("http://169.254.169.254/latest", {}, False,
                 "169.254.169.254 is link-local (cloud metadata)" + ALLOW_HINT, id="metadata-v4"),
    pytest.param("http://169.254.1.1/", {}, False, "169.254.1.1 is link-local" + ALLOW_HINT,
                 id="link-local-v4"),
    pytest.param("http://[fe80::1]/", {}, False, "fe80::1 is link-local" + ALLOW_HINT,
                 id="link-local-v6"),
    pytest.param("http://[fe80::1%25eth0]/", {}, False, "fe80::1 is link-local" + ALLOW_HINT,
                 id="link-local-v6-zone"),
    pytest.param("http://[fd00:ec2::254]/", {}, False,
                 "fd00:ec2::254 is a cloud metadata address" + ALLOW_HINT, id="metadata-aws-v6"),
    pytest.param("http://100.100.100.200/", {}, False,
                 "100.100.100.200 is a cloud metadata address" + ALLOW_HINT, id="metadata-alibaba"),
    pytest.param("http://168.63.129.16/", {}, False,
                 "168.63.129.16 is a cloud metadata address" + ALLOW_HINT, id="metadata-azure"),
    pytest.param("http://metadata.google.internal/computeMetadata/v1/", {}, False,
                 "metadata.google.internal is a cloud metadata name" + ALLOW_HINT,
                 id="metadata-name"),
    pytest.param("http://METADATA.Google.Internal./", {}, False,
                 "metadata.google.internal is a cloud metadata name" + ALLOW_HINT,
                 id="metadata-name-case-dot"),
    pytest.param("http://metadata/", {}, False, "metadata is a cloud metadata name" + ALLOW_HINT,
                 id="metadata-short-name"),
    pytest.param("http://0.0.0.0:8080/", {}, False, "0.0.0.0 is unspecified" + ALLOW_HINT,
                 id="unspecified-v4"),
    pytest.param("http://0/", {}, False, "0.0.0.0 is unspecified" + ALLOW_HINT,
                 id="unspecified-short"),
    pytest.param("http://0.1.2.3/", {}, False, "0.1.2.3 is unspecified" + ALLOW_HINT,
                 id="this-network"),
    pytest.param("http://[::]/", {}, False, ":: is unspecified" + ALLOW_HINT,
                 id="unspecified-v6"),
    pytest.param("http://224.0.0.1/", {}, False, "224.0.0.1 is multicast" + ALLOW_HINT,
                 id="multicast-v4"),
    pytest.param("http://[ff02::1]/", {}, False, "ff02::1 is multicast" + ALLOW_HINT,
                 id="multicast-v6"),
    pytest.param("http://255.255.255.255/", {}, False,
                 "255.255.255.255 is broadcast" + ALLOW_HINT, id="broadcast"),
    pytest.param("http://240.0.0.1/", {}, False, "240.0.0.1 is reserved" + ALLOW_HINT,
                 id="reserved-v4"),
    pytest.param("http://[100::1]/", {}, False, "100::1 is reserved" + ALLOW_HINT,
                 id="reserved-v6-discard"),
    pytest.param("http://[::7f00:1]/", {}, False, "::7f00:1 is reserved" + ALLOW_HINT,
                 id="ipv4-compatible-v6"),
    pytest.param("http://2852039166/", {}, False,
                 "169.254.169.254 is link-local (cloud metadata)" + ALLOW_HINT,
                 id="metadata-decimal"),
    pytest.param("http://0xa9.0xfe.0xa9.0xfe/", {}, False,
                 "169.254.169.254 is link-local (cloud metadata)" + ALLOW_HINT,
                 id="metadata-hex-dotted"),
    pytest.param("http://127.0.0.1:6379/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="redis-from-data"),
    pytest.param("http://[::1]/", {}, True, "::1 is private (loopback)" + DATA_HINT,
                 id="loopback-v6"),
    pytest.param("http://2130706433/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="decimal"),
    pytest.param("http://0x7f000001/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="hex"),
    pytest.param("http://0177.0.0.1/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="octal"),
    pytest.param("http://127.1/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="short"),
    pytest.param("http://127.0.0.1./", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="trailing-dot"),
    pytest.param("http://0x7f.0.0.1/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="hex-octet"),
    pytest.param("http://127。0。0。1/", {}, True, "127.0.0.1 is private (loopback)" + DATA_HINT,
                 id="ideographic-dots"),
    pytest.param("http://\uff11\uff12\uff17.0.0.1/", {}, True,
                 "127.0.0.1 is private (loopback)" + DATA_HINT, id="fullwidth-digits"),
    pytest.param("http://10.1.2.3/", {}, True, "10.1.2.3 is private (RFC 1918)" + DATA_HINT,
                 id="rfc1918-10"),
    pytest.param("http://172.16.0.1/", {}, True, "172.16.0.1 is private (RFC 1918)" + DATA_HINT,
                 id="rfc1918-172"),
    pytest.param("http://172.31.255.255/", {}, True,
                 "172.31.255.255 is private (RFC 1918)" + DATA_HINT, id="rfc1918-172-top"),
    pytest.param("http://192.168.1.1/", {}, True,
                 "192.168.1.1 is private (RFC 1918)" + DATA_HINT, id="rfc1918-192"),
    pytest.param("http://100.64.0.1/", {}, True, "100.64.0.1 is private (CGNAT)" + DATA_HINT,
                 id="cgnat"),
    pytest.param("http://[fd12:3456::1]/", {}, True,
                 "fd12:3456::1 is private (unique local)" + DATA_HINT, id="ula"),
    pytest.param("http://[fec0::1]/", {}, True, "fec0::1 is private (site-local)" + DATA_HINT,
                 id="site-local"),
    pytest.param("http://localhost:8080/", {}, True,
                 "localhost is private (a localhost name)" + DATA_HINT, id="localhost"),
    pytest.param("http://LocalHost./", {}, True,
                 "localhost is private (a localhost name)" + DATA_HINT, id="localhost-case-dot"),
    pytest.param("http://api.localhost/", {}, True,
                 "api.localhost is private (a localhost name)" + DATA_HINT, id="sub-localhost"),
    pytest.param("http://127.0.0.1/", {"private": "deny"}, False,
                 "127.0.0.1 is private (loopback) and private_networks is 'deny'" + ALLOW_HINT,
                 id="private-deny-not-from-data"),
    pytest.param("http://localhost/", {"private": "deny", "trusted_hosts": ["localhost"]}, False,
                 "localhost is private (a localhost name) and private_networks is 'deny'"
                 + ALLOW_HINT,
                 id="private-deny-beats-trusted"),
    pytest.param("http://169.254.169.254/", {"private": "allow"}, True,
                 "169.254.169.254 is link-local (cloud metadata)" + ALLOW_HINT,
                 id="private-allow-is-not-link-local"),
    pytest.param("http://169.254.169.254/", {"trusted_hosts": ["169.254.169.254"]}, True,
                 "169.254.169.254 is link-local (cloud metadata)" + ALLOW_HINT,
                 id="trusted-is-not-link-local"),
    pytest.param("http://10.0.0.1/", {"trusted_hosts": ["10.0.0.2"]}, True,
                 "10.0.0.1 is private (RFC 1918)" + DATA_HINT, id="trusted-other-host"),
    pytest.param("http://example.com/", {"deny_hosts": ["example.com"],
                                         "allow_hosts": ["example.com"]}, False,
                 "example.com matches 'example.com' in deny_hosts", id="deny-beats-allow"),
    pytest.param("http://EXAMPLE.com./", {"deny_hosts": ["Example.COM."]}, False,
                 "example.com matches 'Example.COM.' in deny_hosts", id="deny-name-normalized"),
    pytest.param("http://a.b.example.com/", {"deny_hosts": ["*.example.com"]}, False,
                 "a.b.example.com matches '*.example.com' in deny_hosts", id="deny-wildcard"),
    pytest.param("http://8.8.8.8/", {"deny_hosts": ["8.8.8.0/24"]}, False,
                 "8.8.8.8 matches '8.8.8.0/24' in deny_hosts", id="deny-cidr"),
    pytest.param("http://[::ffff:8.8.8.8]/", {"deny_hosts": ["8.8.8.8"]}, False,
                 "::ffff:808:808 matches '8.8.8.8' in deny_hosts", id="deny-mapped"),
    pytest.param("http://10.0.0.1/", {"deny_hosts": ["10.0.0.0/8"], "private": "allow"}, False,
                 "10.0.0.1 matches '10.0.0.0/8' in deny_hosts", id="deny-beats-private-allow"),
    pytest.param("http://[2001:db8::1]/", {"deny_hosts": ["2001:db8::/32"]}, False,
                 "2001:db8::1 matches '2001:db8::/32' in deny_hosts", id="deny-cidr-v6"),
    pytest.param("http://2130706433/", {"deny_hosts": ["127.0.0.1"], "private": "allow"}, False,
                 "127.0.0.1 matches '127.0.0.1' in deny_hosts", id="deny-decimal-literal"),
]

# The embedded-IPv4 forms print differently across Python versions: match the reason's end.
REFUSED_EMBEDDED: list[Any] = [
    pytest.param("http://[::ffff:169.254.169.254]/", False,
                 "embeds 169.254.169.254, which is link-local (cloud metadata)" + ALLOW_HINT,
                 id="mapped-metadata"),
    pytest.param("http://[::ffff:127.0.0.1]/", True,
                 "embeds 127.0.0.1, which is private (loopback)" + DATA_HINT, id="mapped-loopback"),
    pytest.param("http://[::ffff:0:0]/", False, "embeds 0.0.0.0, which is unspecified" + ALLOW_HINT,
                 id="mapped-unspecified"),
    pytest.param("http://[2002:a9fe:a9fe::1]/", False,
                 "embeds 169.254.169.254, which is link-local (cloud metadata)" + ALLOW_HINT,
                 id="6to4-metadata"),
    pytest.param("http://[2002:a00:1::]/", True,
                 "embeds 10.0.0.1, which is private (RFC 1918)" + DATA_HINT, id="6to4-private"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", False,
                 "embeds 169.254.169.254, which is link-local (cloud metadata)" + ALLOW_HINT,
                 id="nat64-metadata"),
    pytest.param("http://[64:ff9b::7f00:1]/", True,
                 "embeds 127.0.0.1, which is private (loopback)" + DATA_HINT, id="nat64-loopback"),
    pytest.param("http://[64:ff9b:1:a9fe:a9:fe00::]/", False,
                 "embeds 169.254.169.254, which is link-local (cloud metadata)" + ALLOW_HINT,
                 id="nat64-local-use"),
]

# (url, guard options, from_data)
ALLOWED_URLS: list[Any] = [
    pytest.param("https://example.com/x?q=1", {}, True, id="public-name"),
    pytest.param("http://8.8.8.8/", {}, True, id="public-v4"),
    pytest.param("http://[2001:4860:4860::8888]/", {}, True, id="public-v6"),
    pytest.param("http://[::ffff:8.8.8.8]/", {}, True, id="mapped-public"),
    pytest.param("http://[2002:808:808::]/", {}, True, id="6to4-public"),
    pytest.param("http://[64:ff9b::808:808]/", {}, True, id="nat64-public"),
    pytest.param("http://134744072/", {}, True, id="decimal-public"),
    pytest.param("http://172.32.0.1/", {}, True, id="just-above-172.16/12"),
    pytest.param("http://172.15.255.255/", {}, True, id="just-below-172.16/12"),
    pytest.param("http://100.128.0.1/", {}, True, id="just-above-cgnat"),
    pytest.param("http://169.255.0.1/", {}, True, id="just-above-link-local"),
    pytest.param("http://11.0.0.1/", {}, True, id="just-above-10/8"),
    pytest.param("http://notlocalhost/", {}, True, id="localhost-suffix-without-dot"),
    pytest.param("http://localhost.example.com/", {}, True, id="localhost-as-label"),
    pytest.param("http://metadata.example.com/", {}, True, id="metadata-as-label"),
    pytest.param("http://127.0.0.1:8080/", {}, False, id="auto-private-not-from-data"),
    pytest.param("http://localhost/", {}, False, id="auto-localhost-not-from-data"),
    pytest.param("http://[::1]/", {}, False, id="auto-v6-loopback-not-from-data"),
    pytest.param("http://127.1/", {}, False, id="auto-short-form-not-from-data"),
    pytest.param("http://10.0.0.1/", {"private": "allow"}, True, id="private-allow"),
    pytest.param("http://[::ffff:10.0.0.1]/", {"private": "allow"}, True,
                 id="private-allow-mapped"),
    pytest.param("http://localhost:8080/", {"trusted_hosts": ["localhost"]}, True,
                 id="trusted-name"),
    pytest.param("http://LOCALHOST./", {"trusted_hosts": ["localhost"]}, True,
                 id="trusted-name-normalized"),
    pytest.param("http://[::1]:9000/", {"trusted_hosts": ["::1"]}, True, id="trusted-v6"),
    pytest.param("http://2130706433/", {"trusted_hosts": ["127.0.0.1"]}, True,
                 id="trusted-canonical-address"),
    pytest.param("http://169.254.169.254/", {"allow_hosts": ["169.254.169.254"]}, True,
                 id="allow-metadata-address"),
    pytest.param("http://169.254.169.254/", {"allow_hosts": ["169.254.0.0/16"]}, True,
                 id="allow-link-local-network"),
    pytest.param("http://[::ffff:169.254.169.254]/", {"allow_hosts": ["169.254.169.254"]}, True,
                 id="allow-matches-embedded"),
    pytest.param("http://metadata.google.internal/", {"allow_hosts": ["metadata.google.internal"]},
                 True, id="allow-metadata-name"),
    pytest.param("http://10.1.2.3/", {"allow_hosts": ["10.0.0.0/8"]}, True, id="allow-cidr"),
    pytest.param("http://[fd00::5]/", {"allow_hosts": ["fd00::/8"]}, True, id="allow-cidr-v6"),
    pytest.param("http://[::1]/", {"allow_hosts": ["[::1]"]}, True, id="allow-bracketed-v6"),
    pytest.param("http://127.0.0.1/", {"allow_hosts": ["127.0.0.1"], "private": "deny"}, True,
                 id="allow-beats-private-deny"),
    pytest.param("http://api.localhost/", {"allow_hosts": ["*.localhost"]}, True,
                 id="allow-wildcard-name"),
    pytest.param("http://example.com/", {"deny_hosts": ["*.example.com"]}, True,
                 id="deny-wildcard-spares-apex"),
    pytest.param("http://evilexample.com/", {"deny_hosts": ["*.example.com"]}, True,
                 id="deny-wildcard-needs-dot"),
    pytest.param("http://xn--bcher-kva.de/", {"deny_hosts": ["example.com"]}, True,
                 id="deny-other-name"),
    pytest.param("http://127%2E0%2E0%2E1/", {}, True, id="percent-in-name-is-a-name"),
    pytest.param("http://cafe/", {}, True, id="hex-letters-name"),
    pytest.param("http://abc1.example/", {}, True, id="hexish-name"),
]


@pytest.mark.parametrize(("url", "options", "from_data", "reason"), REFUSED_URLS)
def test_check_url_refuses_with_the_exact_reason(
    url: str, options: dict[str, Any], from_data: bool, reason: str
) -> None:
    """Each refused URL raises ``RefusedDestination`` naming the URL and why."""
    with pytest.raises(RefusedDestination) as info:
        HostGuard(**options).check_url(url, from_data=from_data)
    shown = str(yarl.URL(url))
    assert info.value.reason == reason
    assert info.value.target == shown
    assert str(info.value) == f"refused {shown}: {reason}"


@pytest.mark.parametrize(("url", "from_data", "reason_end"), REFUSED_EMBEDDED)
def test_check_url_judges_embedded_ipv4_as_that_ipv4(
    url: str, from_data: bool, reason_end: str
) -> None:
    """IPv4-mapped, 6to4 and NAT64 IPv6 addresses are refused for the IPv4 inside them."""
    with pytest.raises(RefusedDestination) as info:
        HostGuard().check_url(url, from_data=from_data)
    assert info.value.reason.endswith(reason_end), info.value.reason


@pytest.mark.parametrize(("url", "options", "from_data"), ALLOWED_URLS)
def test_check_url_allows_and_returns_the_parsed_url(
    url: str, options: dict[str, Any], from_data: bool
) -> None:
    """Allowed URLs come back parsed, unchanged."""
    result = HostGuard(**options).check_url(url, from_data=from_data)
    assert result == yarl.URL(url)
    assert isinstance(result, yarl.URL)


def test_check_url_accepts_a_parsed_url() -> None:
    """A ``yarl.URL`` is judged like its string and returned as is."""
    url = yarl.URL("http://127.0.0.1/")
    assert HostGuard().check_url(url, from_data=False) is url
    with pytest.raises(RefusedDestination):
        HostGuard().check_url(url, from_data=True)


@pytest.mark.parametrize(("url", "reason"), [
    pytest.param("file:///etc/passwd", "scheme 'file': only http and https are allowed",
                 id="file"),
    pytest.param("ftp://example.com/x", "scheme 'ftp': only http and https are allowed",
                 id="ftp"),
    pytest.param("gopher://127.0.0.1:6379/_INFO", "scheme 'gopher': only http and https are "
                 "allowed", id="gopher"),
    pytest.param("data:text/plain,hi", "scheme 'data': only http and https are allowed",
                 id="data"),
    pytest.param("ws://example.com/", "scheme 'ws': only http and https are allowed", id="ws"),
    pytest.param("//example.com/x", "the URL has no scheme: only http and https are allowed",
                 id="scheme-relative"),
    pytest.param("example.com/x", "the URL has no scheme: only http and https are allowed",
                 id="bare-host"),
    pytest.param("http:///x", "the URL has no host", id="no-host"),
    pytest.param("https://", "the URL has no host", id="empty-https"),
])
def test_check_url_refuses_other_schemes_and_hostless_urls(url: str, reason: str) -> None:
    """Only http and https URLs with a host are allowed, whatever the guard's options."""
    guard = HostGuard(allow_hosts=["example.com", "127.0.0.1"], private="allow")
    with pytest.raises(RefusedDestination) as info:
        guard.check_url(url, from_data=False)
    assert info.value.reason == reason


def test_scheme_check_is_case_insensitive() -> None:
    """``HTTPS://`` is https; ``FILE://`` is still file."""
    guard = HostGuard()
    assert guard.check_url("HTTPS://Example.com/", from_data=True).scheme == "https"
    with pytest.raises(RefusedDestination, match="scheme 'file'"):
        guard.check_url("FILE:///etc/passwd", from_data=False)


@pytest.mark.parametrize(("url", "shown"), [
    pytest.param("http://alice:s3cret@127.0.0.1:6379/x", "http://alice:***@127.0.0.1:6379/x",
                 id="user-and-password"),
    pytest.param("http://:s3cret@127.0.0.1/", "http://:***@127.0.0.1/", id="password-only"),
    pytest.param("http://alice:p%40s3cret@127.0.0.1/", "http://alice:***@127.0.0.1/",
                 id="encoded-password"),
    pytest.param("file://alice:s3cret@host/etc/passwd", "file://alice:***@host/etc/passwd",
                 id="refused-scheme"),
    pytest.param("http://alice@127.0.0.1/", "http://alice@127.0.0.1/", id="user-only"),
])
def test_refusal_messages_never_show_the_password(url: str, shown: str) -> None:
    """Userinfo appears as ``user:***@host``; the password is in neither message nor target."""
    with pytest.raises(RefusedDestination) as info:
        HostGuard().check_url(url, from_data=True)
    assert info.value.target == shown
    assert str(info.value).startswith(f"refused {shown}: ")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value)


def test_malformed_url_is_refused_without_its_password() -> None:
    """A string yarl cannot parse is refused, and its password is masked in the message."""
    with pytest.raises(RefusedDestination) as info:
        HostGuard().check_url("http://alice:s3cret@[::1/x", from_data=True)
    assert info.value.target == "http://alice:***@[::1/x"
    assert info.value.reason.startswith("not a valid URL")
    assert "s3cret" not in str(info.value)


def test_refused_destination_is_terminal_not_a_connection_error() -> None:
    """The engine retries OSError/ConnectionError/TimeoutError; a refusal must be none of them."""
    assert not issubclass(RefusedDestination, OSError | TimeoutError)
    error = RefusedDestination("http://x/", "why")
    assert error.args == ("http://x/", "why")
    assert str(error) == "refused http://x/: why"


# check_address: a resolved address for a host name, as the resolver sees it.

@pytest.mark.parametrize(("host", "address", "options", "from_data", "message"), [
    pytest.param("example.com", "10.0.0.5", {}, True,
                 "refused example.com at 10.0.0.5: 10.0.0.5 is private (RFC 1918)" + DATA_HINT,
                 id="rebinding-to-private"),
    pytest.param("example.com", "169.254.169.254", {}, False,
                 "refused example.com at 169.254.169.254: 169.254.169.254 is link-local "
                 "(cloud metadata)" + ALLOW_HINT, id="rebinding-to-metadata"),
    pytest.param("example.com", "::ffff:7f00:1", {}, True,
                 "refused example.com at ::ffff:7f00:1: ::ffff:7f00:1 embeds 127.0.0.1, "
                 "which is private (loopback)" + DATA_HINT, id="mapped-answer"),
    pytest.param("example.com", "fe80::1%eth0", {}, False,
                 "refused example.com at fe80::1: fe80::1 is link-local" + ALLOW_HINT,
                 id="scoped-link-local"),
    pytest.param("10.0.0.5", "10.0.0.5", {}, True,
                 "refused 10.0.0.5: 10.0.0.5 is private (RFC 1918)" + DATA_HINT,
                 id="literal-host"),
    pytest.param("metadata.google.internal", "8.8.8.8", {}, False,
                 "refused metadata.google.internal at 8.8.8.8: metadata.google.internal is a "
                 "cloud metadata name" + ALLOW_HINT, id="metadata-name-any-address"),
    pytest.param("example.com", "not-an-ip", {"private": "allow"}, False,
                 "refused example.com: 'not-an-ip' is not an IP address", id="garbage-address"),
    pytest.param("corp.example", "10.0.0.5", {"allow_hosts": ["*.corp.example"]}, True,
                 "refused corp.example at 10.0.0.5: 10.0.0.5 is private (RFC 1918)" + DATA_HINT,
                 id="wildcard-spares-apex"),
    pytest.param("evilcorp.example", "10.0.0.5", {"allow_hosts": ["*.corp.example"]}, True,
                 "refused evilcorp.example at 10.0.0.5: 10.0.0.5 is private (RFC 1918)"
                 + DATA_HINT, id="wildcard-needs-dot"),
    pytest.param("api.example.com", "8.8.8.8", {"deny_hosts": ["8.8.0.0/16"]}, False,
                 "refused api.example.com at 8.8.8.8: api.example.com matches '8.8.0.0/16' in "
                 "deny_hosts", id="deny-cidr-on-resolved-address"),
    pytest.param("internal.example", "10.0.0.5", {"trusted_hosts": ["10.0.0.5"]}, True,
                 "refused internal.example at 10.0.0.5: 10.0.0.5 is private (RFC 1918)"
                 + DATA_HINT, id="trusted-address-does-not-trust-names-resolving-to-it"),
])
def test_check_address_refuses(host: str, address: str, options: dict[str, Any],
                               from_data: bool, message: str) -> None:
    """A resolved address is refused with the host and the address named."""
    with pytest.raises(RefusedDestination) as info:
        HostGuard(**options).check_address(host, address, from_data=from_data)
    assert str(info.value) == message


@pytest.mark.parametrize(("host", "address", "options", "from_data"), [
    pytest.param("example.com", "93.184.215.14", {}, True, id="public"),
    pytest.param("example.com", "10.0.0.5", {}, False, id="private-not-from-data"),
    pytest.param("api.corp.example", "10.0.0.5", {"allow_hosts": ["*.corp.example"]}, True,
                 id="wildcard-subdomain"),
    pytest.param("a.b.corp.example", "10.0.0.5", {"allow_hosts": ["*.CORP.example."]}, True,
                 id="wildcard-deep-subdomain-normalized"),
    pytest.param("API.Corp.Example.", "10.0.0.5", {"allow_hosts": ["api.corp.example"]}, True,
                 id="exact-name-normalized"),
    pytest.param("imds.example", "169.254.169.254", {"allow_hosts": ["imds.example"]}, False,
                 id="allow-by-name-trusts-its-addresses"),
    pytest.param("xn--bcher-kva.de", "10.0.0.5", {"allow_hosts": ["bücher.de"]}, True,
                 id="idna-entry"),
    pytest.param("internal.example", "10.0.0.5", {"trusted_hosts": ["internal.example"]}, True,
                 id="trusted-name"),
    pytest.param("internal.example", "10.0.0.5", {"private": "allow"}, True,
                 id="private-allow"),
])
def test_check_address_allows(host: str, address: str, options: dict[str, Any],
                              from_data: bool) -> None:
    """Allowed addresses raise nothing."""
    HostGuard(**options).check_address(host, address, from_data=from_data)


# Construction: entries are validated once, and a bad one is named.

@pytest.mark.parametrize(("option", "entry"), [
    pytest.param("allow_hosts", "", id="empty"),
    pytest.param("allow_hosts", "http://example.com", id="url"),
    pytest.param("allow_hosts", "example.com:80", id="port"),
    pytest.param("allow_hosts", "exa mple.com", id="space"),
    pytest.param("allow_hosts", "-bad.example.com", id="leading-hyphen"),
    pytest.param("allow_hosts", "a..b", id="empty-label"),
    pytest.param("allow_hosts", "x" * 64 + ".com", id="label-too-long"),
    pytest.param("allow_hosts", "*", id="bare-star"),
    pytest.param("allow_hosts", "*.", id="star-dot"),
    pytest.param("allow_hosts", "a.*.com", id="inner-wildcard"),
    pytest.param("allow_hosts", "*example.com", id="wildcard-without-dot"),
    pytest.param("allow_hosts", "127.1", id="short-ipv4"),
    pytest.param("allow_hosts", "2130706433", id="decimal-ipv4"),
    pytest.param("allow_hosts", "1.2.3.4.5", id="numeric-tld"),
    pytest.param("deny_hosts", "10.0.0.1/8", id="cidr-host-bits"),
    pytest.param("deny_hosts", "10.0.0.0/33", id="cidr-prefix"),
    pytest.param("deny_hosts", "example.com/24", id="name-with-prefix"),
    pytest.param("deny_hosts", "fd00::/129", id="cidr-v6-prefix"),
    pytest.param("trusted_hosts", "*.example.com", id="trusted-wildcard"),
    pytest.param("trusted_hosts", "10.0.0.0/8", id="trusted-cidr"),
    pytest.param("trusted_hosts", "", id="trusted-empty"),
    pytest.param("trusted_hosts", "localhost:8080", id="trusted-with-port"),
    pytest.param("trusted_hosts", "user@localhost", id="trusted-with-userinfo"),
])
def test_bad_entries_raise_value_error_naming_them(option: str, entry: str) -> None:
    """A bad host entry is a ValueError that names the option and the entry."""
    with pytest.raises(ValueError, match="^" + option + ": ") as info:
        options: dict[str, Any] = {option: [entry]}
        HostGuard(**options)
    assert repr(entry) in str(info.value)


@pytest.mark.parametrize("option", ["allow_hosts", "deny_hosts", "trusted_hosts"])
def test_a_single_string_is_not_a_list_of_hosts(option: str) -> None:
    """``allow_hosts: example.com`` (a string) would otherwise be read letter by letter."""
    options: dict[str, Any] = {option: "example.com"}
    with pytest.raises(ValueError, match=rf"^{option}: 'example\.com' must be a list"):
        HostGuard(**options)


def test_unknown_private_policy_is_a_value_error() -> None:
    """``private`` is one of auto, allow, deny."""
    with pytest.raises(ValueError, match="private: 'maybe' is not one of"):
        HostGuard(private="maybe")  # type: ignore[arg-type]


def test_good_entries_of_every_kind_are_accepted() -> None:
    """Names, wildcards, IPs (bracketed too), CIDRs and IDNA names all construct."""
    HostGuard(allow_hosts=["example.com", "Example.COM.", "*.example.org", "_svc.example.net",
                           "10.0.0.1", "[::1]", "::1", "10.0.0.0/8", "fd00::/8", "bücher.de"],
              deny_hosts=["8.8.8.8/32"], trusted_hosts=["localhost", "127.0.0.1", "[::1]"])


# The resolver: every address a name resolves to is judged.

class FakeResolver(AbstractResolver):
    """Answers every lookup with chosen addresses, after yielding to the loop once."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.closed = False
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        await asyncio.sleep(0)
        return [ResolveResult(hostname=host, host=a, port=port,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=0) for a in self.addresses]

    async def close(self) -> None:
        self.closed = True


def resolve(guard: HostGuard, addresses: Sequence[str], from_data: bool | None,
            host: str = "example.com") -> list[str]:
    """Resolve ``host`` through the guard's resolver, inside ``data_urls(from_data)`` unless
    None (the ContextVar's default)."""
    async def main() -> list[str]:
        resolver = guard.resolver(FakeResolver(addresses))
        if from_data is None:
            results = await resolver.resolve(host, 443)
        else:
            with guard.data_urls(from_data):
                results = await resolver.resolve(host, 443)
        return [r["host"] for r in results]

    return asyncio.run(main())


def test_resolver_returns_allowed_answers_unchanged() -> None:
    """Public addresses pass through, in order, with the inner resolver's fields."""
    assert resolve(HostGuard(), ["93.184.215.14", "2606:2800:21f:cb07::1"], True) == [
        "93.184.215.14", "2606:2800:21f:cb07::1"]


@pytest.mark.parametrize("answers", [
    pytest.param(["93.184.215.14", "169.254.169.254"], id="metadata-last"),
    pytest.param(["169.254.169.254", "93.184.215.14"], id="metadata-first"),
    pytest.param(["2606:2800:21f:cb07::1", "::ffff:169.254.169.254"], id="mapped-metadata"),
])
def test_resolver_refuses_the_whole_host_if_any_answer_is_refused(answers: list[str]) -> None:
    """DNS answers mixing a public and a forbidden address cannot slip the forbidden one in."""
    with pytest.raises(RefusedDestination, match=r"^refused example\.com at .*link-local"):
        resolve(HostGuard(), answers, from_data=False)


@pytest.mark.parametrize(("from_data", "refused"), [
    pytest.param(True, True, id="from-data"),
    pytest.param(False, False, id="not-from-data"),
    pytest.param(None, False, id="contextvar-default-is-not-from-data"),
])
def test_resolver_reads_from_data_from_data_urls(from_data: bool | None, refused: bool) -> None:
    """A private answer is refused only inside ``data_urls(True)`` (auto policy)."""
    if refused:
        with pytest.raises(RefusedDestination, match=r"10\.0\.0\.5 is private"):
            resolve(HostGuard(), ["10.0.0.5"], from_data)
    else:
        assert resolve(HostGuard(), ["10.0.0.5"], from_data) == ["10.0.0.5"]


def test_data_urls_restores_the_previous_flag() -> None:
    """Nested ``data_urls`` blocks restore the outer value on exit, even after an error."""
    guard = HostGuard()

    async def main() -> list[bool]:
        resolver = guard.resolver(FakeResolver(["10.0.0.5"]))
        seen: list[bool] = []

        async def refused() -> bool:
            try:
                await resolver.resolve("example.com")
            except RefusedDestination:
                return True
            return False

        with guard.data_urls(True):
            seen.append(await refused())
            with guard.data_urls(False):
                seen.append(await refused())
            seen.append(await refused())
            with pytest.raises(RuntimeError), guard.data_urls(False):
                raise RuntimeError
            seen.append(await refused())
        seen.append(await refused())
        return seen

    assert asyncio.run(main()) == [True, False, True, True, False]


def test_data_urls_flag_is_per_task() -> None:
    """Concurrent requests in different tasks keep their own flag through one resolver."""
    guard = HostGuard()

    async def main() -> list[str]:
        resolver = guard.resolver(FakeResolver(["10.0.0.5"]))

        async def request(from_data: bool) -> str:
            with guard.data_urls(from_data):
                await asyncio.sleep(0)
                try:
                    await resolver.resolve("example.com")
                except RefusedDestination:
                    return "refused"
                return "allowed"

        return list(await asyncio.gather(request(True), request(False), request(True)))

    assert asyncio.run(main()) == ["refused", "allowed", "refused"]


def test_resolver_errors_and_close_pass_through() -> None:
    """Lookup failures stay the inner resolver's errors; close() closes the inner resolver."""
    class Failing(FakeResolver):
        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def main() -> bool:
        inner = Failing([])
        resolver = HostGuard().resolver(inner)
        with pytest.raises(socket.gaierror):
            await resolver.resolve("nowhere.invalid")
        await resolver.close()
        return inner.closed

    assert asyncio.run(main()) is True


def test_resolver_without_lookups_closes_cleanly() -> None:
    """The default inner resolver is created lazily, so closing an unused one is a no-op."""
    async def main() -> None:
        await HostGuard().resolver().close()

    asyncio.run(main())


@pytest.mark.parametrize(("options", "from_data", "refused"), [
    pytest.param({}, True, True, id="auto-from-data"),
    pytest.param({}, False, False, id="auto-not-from-data"),
    pytest.param({"private": "allow"}, True, False, id="allow-from-data"),
    pytest.param({"private": "deny"}, False, True, id="deny-not-from-data"),
])
def test_real_lookup_of_localhost(options: dict[str, Any], from_data: bool,
                                  refused: bool) -> None:
    """aiohttp's default resolver, really resolving ``localhost``, behind the guard."""
    async def main() -> list[str]:
        guard = HostGuard(**options)
        resolver = guard.resolver()
        try:
            with guard.data_urls(from_data):
                return [r["host"] for r in await resolver.resolve("localhost", 80)]
        finally:
            await resolver.close()

    if refused:
        with pytest.raises(RefusedDestination, match=r"^refused localhost"):
            asyncio.run(main())
    else:
        addresses = asyncio.run(main())
        assert addresses
        assert set(addresses) <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize("force_close", [
    pytest.param(True, id="new-connection-is-refused"),
    pytest.param(False, id="pooled-connection-skips-the-resolver"),
])
def test_aiohttp_session_gets_the_refusal_unwrapped(force_close: bool) -> None:
    """Through a real ClientSession (DNS cache off, as the resolver requires), a data URL to a
    local server is refused before connecting, as ``RefusedDestination`` itself, and the
    same URL written by the pipeline author connects. A pooled keep-alive connection is
    reused without a lookup: the reason data and author requests must not share a
    connector."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    async def main() -> tuple[str, type[BaseException] | None]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        guard = HostGuard()
        connector = aiohttp.TCPConnector(resolver=guard.resolver(), use_dns_cache=False,
                                         force_close=force_close)
        error: type[BaseException] | None = None
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                with guard.data_urls(False):
                    async with session.get(f"http://localhost:{port}/mine") as response:
                        body = await response.text()
                with guard.data_urls(True):
                    try:
                        async with session.get(f"http://localhost:{port}/data") as response:
                            await response.read()
                    except Exception as exc:
                        error = type(exc)
        finally:
            await runner.cleanup()
        return body, error

    body, error = asyncio.run(main())
    assert body == "ok"
    if force_close:
        assert error is RefusedDestination
        assert hits == ["/mine"]
    else:
        assert error is None
        assert hits == ["/mine", "/data"]
