"""SSRF guard: refuse webhook targets on loopback, private, link-local or reserved addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
ALLOW_PRIVATE = "RELAY_ALLOW_PRIVATE_TARGETS"

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network

# Checked in order, so a narrower block comes before the one that contains it.
_FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "this-network"),  # Linux connects 0.x.y.z to the local host
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "private"),  # RFC 8215 local-use NAT64
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/23"), "IETF protocol assignments"),  # Teredo, ORCHID, AMT, ...
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)
_NAT64 = _V6("64:ff9b::/96")
_GLOBAL_UNICAST = _V6("2000::/3")

# WHATWG URL: a host whose last label is numeric is an IPv4 address in shorthand (127.1,
# 2130706433, 0x7f.1). Resolvers and HTTP clients disagree on those, so refuse them outright.
_NUMERIC_LAST_LABEL = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


class TargetRefused(ValueError):
    """The webhook target is not allowed."""

    def __init__(self, host: str, reason: str, *, private: bool = False) -> None:
        # Only the host is named: the full URL may carry a token in its path or query.
        self.host = host
        self.reason = reason
        message = f"target {host!r} refused: {reason}" if host else f"target refused: {reason}"
        if private:
            message += f" (set {ALLOW_PRIVATE}=1 to allow private targets)"
        super().__init__(message)


def check_url_shape(url: str) -> None:
    """Raise TargetRefused unless ``url`` is http(s) with a plain host and no credentials."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise TargetRefused("", "URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused("", f"malformed URL ({exc})") from None
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("http", "https"):
        raise TargetRefused(host, f"scheme {parts.scheme!r} is not allowed; use http or https")
    if not host:
        raise TargetRefused("", "URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(host, "credentials (user:password@) are not allowed in the URL")
    if port == 0:
        raise TargetRefused(host, "port 0 is not allowed")
    if _ip_literal(host) is None:
        if not host.isascii():
            raise TargetRefused(host, "non-ASCII host; use its punycode (xn--) form")
        if not _HOSTNAME.fullmatch(host):
            raise TargetRefused(host, "host contains characters not allowed in a DNS name")
        if _NUMERIC_LAST_LABEL.fullmatch(host.rstrip(".").rpartition(".")[2]):
            raise TargetRefused(host, "ambiguous numeric host; write the IP address in full")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _FORBIDDEN_V4:
        if ip in network:
            return reason
    return None if ip.is_global else "not globally routable"


def is_forbidden_ip(ip: IPAddress) -> str | None:
    """Return why ``ip`` may not receive webhooks (``"loopback"``, ``"private"``, ...) or None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_reason(ip)
    # IPv4 addresses embedded in IPv6 reach the same hosts: judge them as IPv4.
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        return _v4_reason(embedded)
    for network, reason in _FORBIDDEN_V6:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST:
        # Everything outside 2000::/3 is unallocated or special-purpose (includes ::a.b.c.d).
        return "reserved"
    return None if ip.is_global else "not globally routable"


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(host: str, addresses: list[str], *, allow_private: bool) -> list[IPAddress]:
    """The answers for ``host`` as addresses; TargetRefused if any is forbidden or not an IP."""
    checked: list[IPAddress] = []
    for address in addresses:
        ip = _ip_literal(address)
        if ip is None:
            raise TargetRefused(host, f"cannot resolve (resolver returned {address!r})")
        reason = None if allow_private else is_forbidden_ip(ip)
        if reason is not None:
            # One forbidden answer refuses the host: a rebinding name mixes public and private.
            raise TargetRefused(host, f"resolves to {reason} address {address}", private=True)
        checked.append(ip)
    return checked


async def check_target(url: str, *, allow_private: bool, resolve: Resolver | None = None) -> None:
    """Raise TargetRefused unless ``url`` is well formed and every address of its host is public.

    An early check (when a target is given); the connection itself is guarded again by
    `outbound.GuardedResolver`, since a name may resolve differently the second time.
    """
    check_url_shape(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = _ip_literal(host)
    if literal is not None:
        reason = is_forbidden_ip(literal)
        if reason is not None:
            raise TargetRefused(host, f"{reason} address", private=True)
        return
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        addresses = await (resolve or system_resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(host, f"cannot resolve ({exc})") from None
    if not addresses:
        raise TargetRefused(host, "cannot resolve (no addresses)")
    check_addresses(host, addresses, allow_private=False)
