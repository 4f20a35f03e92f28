"""SSRF guard: forbidden address table, URL shapes and resolution through an injected resolver."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest

from service import netguard, outbound
from service.netguard import TargetRefused


def resolver(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """Return a fake resolver over ``table``; unknown names fail as getaddrinfo does."""
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def must_not_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver called for {host}:{port}")


# is_forbidden_ip


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("0.1.2.3", "this-network"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456:789a::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("100::1", "discard-only"),
        ("2001:db8::1", "documentation"),
        ("2001::1", "IETF protocol assignments"),
        ("::7f00:1", "reserved"),  # deprecated IPv4-compatible ::127.0.0.1
        ("::ffff:0:7f00:1", "reserved"),  # IPv4-translated
        ("4000::1", "reserved"),
        # IPv4 embedded in IPv6 is judged as IPv4.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:100.64.0.1", "carrier-grade NAT"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::a00:1", "private"),  # local-use NAT64
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert netguard.is_forbidden_ip(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.1",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    ],
)
def test_public_addresses(address: str) -> None:
    assert netguard.is_forbidden_ip(ipaddress.ip_address(address)) is None


# check_url_shape


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in",
        "http://hooks.example.com:8080/in?token=abc#frag",
        "HTTPS://Hooks.Example.COM/in",
        "http://203.0.113.9/x",
        "http://[2606:4700::1111]:8443/x",
        "https://xn--bcher-kva.example/",
        "https://under_score.example.com./",
    ],
)
def test_shape_accepts(url: str) -> None:
    netguard.check_url_shape(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com/x", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://example.com/", "scheme 'gopher'"),
        ("hooks.example.com/in", "scheme '' is not allowed"),
        ("http:///path-only", "no host"),
        ("https://", "no host"),
        ("http://:8080/x", "no host"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://user@hooks.example.com/", "credentials"),
        ("https://@hooks.example.com/", "credentials"),
        ("http://evil.example\\@127.0.0.1/", "credentials"),
        ("http://hooks.example.com:99999/", "malformed URL"),
        ("http://hooks.example.com:http/", "malformed URL"),
        ("http://[::1/", "malformed URL"),
        ("http://hooks.example.com:0/", "port 0"),
        ("http://hooks.example.com /x", "whitespace or control"),
        ("http://hooks.example.com\n.evil/", "whitespace or control"),
        ("http://bücher.example/", "punycode"),
        ("http://a%2eb.example/", "not allowed in a DNS name"),
        ("http://127.1/", "ambiguous numeric host"),
        ("http://2130706433/", "ambiguous numeric host"),
        ("http://0x7f000001/", "ambiguous numeric host"),
        ("http://0x7f.0.0.1./", "ambiguous numeric host"),
        ("http://example.123/", "ambiguous numeric host"),
    ],
)
def test_shape_refuses(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message):
        netguard.check_url_shape(url)


def test_refusal_names_host_and_reason_but_not_credentials() -> None:
    with pytest.raises(TargetRefused) as info:
        netguard.check_url_shape("https://alice:s3cret@hooks.example.com/x")
    assert info.value.host == "hooks.example.com"
    assert "credentials" in info.value.reason
    assert "hooks.example.com" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value, ValueError)


# check_target


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[fc00::1]/", "unique-local"),
    ],
)
async def test_literal_hosts_are_judged_without_dns(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=f"refused: {reason} address"):
        await netguard.check_target(url, allow_private=False, resolve=must_not_resolve)


async def test_public_literal_passes_without_dns() -> None:
    await netguard.check_target(
        "https://[2606:4700::1111]/h", allow_private=False, resolve=must_not_resolve
    )
    await netguard.check_target("http://8.8.8.8/h", allow_private=False, resolve=must_not_resolve)


async def test_localhost_resolving_to_loopback_is_refused() -> None:
    fake = resolver({"localhost": ["127.0.0.1", "::1"]})
    with pytest.raises(TargetRefused) as info:
        await netguard.check_target("http://localhost:9000/h", allow_private=False, resolve=fake)
    assert info.value.host == "localhost"
    assert info.value.reason == "resolves to loopback address 127.0.0.1"
    assert str(info.value) == (
        "target 'localhost' refused: resolves to loopback address 127.0.0.1"
        " (set RELAY_ALLOW_PRIVATE_TARGETS=1 to allow private targets)"
    )
    assert fake.calls == [("localhost", 9000)]  # type: ignore[attr-defined]


async def test_any_forbidden_address_refuses() -> None:
    fake = resolver({"mixed.example.com": ["93.184.216.34", "2606:4700::1111", "10.0.0.7"]})
    with pytest.raises(TargetRefused, match=re.escape("private address 10.0.0.7")):
        await netguard.check_target("https://mixed.example.com/", allow_private=False, resolve=fake)


async def test_public_name_passes_with_default_ports() -> None:
    fake = resolver({"hooks.example.com": ["93.184.216.34", "2606:4700::1111"]})
    await netguard.check_target("https://hooks.example.com/in", allow_private=False, resolve=fake)
    await netguard.check_target("http://hooks.example.com/in", allow_private=False, resolve=fake)
    assert fake.calls == [("hooks.example.com", 443), ("hooks.example.com", 80)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, r"cannot resolve \(.*Name or service not known"),
        ({"hooks.example.com": []}, r"cannot resolve \(no addresses\)"),
        ({"hooks.example.com": ["not-an-ip"]}, r"cannot resolve \(resolver returned 'not-an-ip'\)"),
    ],
)
async def test_resolution_failures_refuse(table: dict[str, list[str]], message: str) -> None:
    with pytest.raises(TargetRefused, match=message):
        await netguard.check_target(
            "https://hooks.example.com/", allow_private=False, resolve=resolver(table)
        )


async def test_allow_private_lets_loopback_through() -> None:
    fake = resolver({"localhost": ["127.0.0.1"]})
    await netguard.check_target("http://localhost:9000/h", allow_private=True, resolve=fake)
    await netguard.check_target("http://127.0.0.1:9000/h", allow_private=True)
    await netguard.check_target("http://[::1]:9000/h", allow_private=True)
    assert fake.calls == []  # type: ignore[attr-defined]


async def test_allow_private_still_checks_shape() -> None:
    with pytest.raises(TargetRefused, match="scheme"):
        await netguard.check_target("ftp://127.0.0.1/", allow_private=True)
    with pytest.raises(TargetRefused, match="credentials"):
        await netguard.check_target("http://u:p@127.0.0.1/", allow_private=True)


async def test_default_resolver_on_localhost() -> None:
    # The real getaddrinfo, on the one name that resolves to loopback from /etc/hosts.
    with pytest.raises(TargetRefused, match="resolves to loopback address"):
        await netguard.check_target("http://localhost:1/", allow_private=False)


def test_only_address_refusals_mention_the_switch() -> None:
    # Allowing private targets would not make a bad scheme or a failed lookup work.
    with pytest.raises(TargetRefused) as info:
        netguard.check_url_shape("ftp://hooks.example.com/")
    assert "RELAY_ALLOW_PRIVATE_TARGETS" not in str(info.value)


# the resolver in the connection path (outbound.GuardedResolver)


async def test_guarded_resolver_hands_aiohttp_only_checked_addresses() -> None:
    fake = resolver({"hooks.example.com": ["93.184.216.34", "2606:4700::1111"]})
    guard = outbound.GuardedResolver(fake, allow_private=False)
    answers = await guard.resolve("hooks.example.com", 443)
    assert [(a["host"], a["port"], a["family"]) for a in answers] == [
        ("93.184.216.34", 443, socket.AF_INET),
        ("2606:4700::1111", 443, socket.AF_INET6),
    ]
    assert {a["hostname"] for a in answers} == {"hooks.example.com"}
    assert fake.calls == [("hooks.example.com", 443)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "resolves to loopback address 127.0.0.1"),
        (["93.184.216.34", "10.0.0.7"], "resolves to private address 10.0.0.7"),
        (["2606:4700::1111", "169.254.169.254"], "resolves to link-local address 169.254.169.254"),
        (["::ffff:127.0.0.1"], "resolves to loopback address ::ffff:127.0.0.1"),
        (["not-an-ip"], "cannot resolve (resolver returned 'not-an-ip')"),
    ],
)
async def test_guarded_resolver_refuses_a_host_with_any_forbidden_answer(
    answers: list[str], reason: str
) -> None:
    guard = outbound.GuardedResolver(resolver({"rebind.example": answers}), allow_private=False)
    with pytest.raises(outbound.Refused) as info:
        await guard.resolve("rebind.example", 80)
    # aiohttp wraps resolver OSErrors; the transport unwraps this one into the refusal.
    assert isinstance(info.value, OSError)
    assert info.value.refused.host == "rebind.example"
    assert info.value.refused.reason == reason


async def test_guarded_resolver_lookup_failures_stay_network_errors() -> None:
    # A failed lookup may be temporary: it is an OSError aiohttp reports as a connect error.
    guard = outbound.GuardedResolver(resolver({"empty.example": []}), allow_private=False)
    with pytest.raises(OSError, match="no addresses") as info:
        await guard.resolve("empty.example", 80)
    assert not isinstance(info.value, outbound.Refused)
    with pytest.raises(socket.gaierror):
        await guard.resolve("unknown.example", 80)


async def test_guarded_resolver_allows_private_when_told() -> None:
    fake = resolver({"localhost": ["127.0.0.1"]})
    guard = outbound.GuardedResolver(fake, allow_private=True)
    assert [a["host"] for a in await guard.resolve("localhost", 80)] == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:1/x?token=t", "loopback address"),
        ("http://[::1]:1/x", "loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://10.1.2.3/x", "private address"),
        ("http://[::ffff:10.0.0.1]/x", "private address"),
    ],
)
async def test_guarded_client_refuses_forbidden_literals_before_connecting(
    url: str, reason: str
) -> None:
    # aiohttp never asks the resolver about an IP literal: the transport checks each request.
    context = ssl.create_default_context()
    async with outbound.guarded_client(
        1.0, context, allow_private=False, resolve=must_not_resolve
    ) as client:
        with pytest.raises(TargetRefused) as info:
            await client.get(url)
    assert info.value.reason == reason
    assert "RELAY_ALLOW_PRIVATE_TARGETS" in str(info.value)
    assert "/x" not in str(info.value) and "token" not in str(info.value)


async def test_guarded_client_refuses_a_name_through_its_resolver() -> None:
    context = ssl.create_default_context()
    fake = resolver({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    async with outbound.guarded_client(1.0, context, allow_private=False, resolve=fake) as client:
        with pytest.raises(TargetRefused, match=re.escape("loopback address 127.0.0.1")):
            await client.post("http://rebind.example:8080/hook/secret", content=b"{}")
        with pytest.raises(outbound.ConnectError):  # an unknown name: a retryable network error
            await client.get("http://unknown.example/")
