"""The fetch policy on its own (no network): every spelling of a non-public address is refused.

Properties over generated spellings: IPv4 in dotted, short (`127.1`), integer, hex and octal
forms (the forms `inet_aton` and URL parsers accept), IPv6 plain, v4-mapped, NAT64, 6to4,
Teredo and with zone ids. The IPv4 parser is checked against glibc's `inet_aton`, so what the
policy reads is what a resolver would connect to. A resolver is injected to check that names
resolving to private addresses are dropped before aiohttp could connect.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.imaging.netguard import (
    BlockedDestination,
    FetchPolicy,
    GuardedResolver,
    is_public_address,
    parse_ip_host,
)

NON_PUBLIC_V4 = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/29",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "240.0.0.0/4")]
NON_PUBLIC_V6 = [ipaddress.IPv6Network(n) for n in (
    "::1/128", "::/128", "fe80::/10", "fc00::/7", "ff00::/8", "2001:db8::/32", "fec0::/10", "64:ff9b:1::/48",
    "2001::/32", "100::/64")]


@st.composite
def non_public_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    net = draw(st.sampled_from(NON_PUBLIC_V4))
    return net[draw(st.integers(0, net.num_addresses - 1))]


@st.composite
def non_public_v6(draw: st.DrawFn) -> ipaddress.IPv6Address:
    net = draw(st.sampled_from(NON_PUBLIC_V6))
    return net[draw(st.integers(0, net.num_addresses - 1))]


def _number(value: int, draw: st.DrawFn) -> str:
    style = draw(st.sampled_from(["dec", "hex", "HEX", "oct"]))
    if style == "dec":
        return str(value)
    if style == "oct":
        return "0" + format(value, "o")
    return ("0x" if style == "hex" else "0X") + format(value, "x" if style == "hex" else "X")


@st.composite
def v4_spelling(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """One of the spellings of `address` a resolver accepts: 1 to 4 parts, each dec/hex/octal."""
    octets = list(address.packed)
    parts = draw(st.integers(1, 4))
    head = octets[:parts - 1]
    tail = int.from_bytes(bytes(octets[parts - 1:]), "big")
    return ".".join(_number(n, draw) for n in [*head, tail])


@st.composite
def non_public_host(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["v4", "v6", "mapped", "nat64", "6to4", "compat"]))
    if kind == "v6":
        return f"[{draw(non_public_v6())}]"
    v4 = draw(non_public_v4())
    if kind == "v4":
        return draw(v4_spelling(v4)) + draw(st.sampled_from(["", "."]))
    embedded = {"mapped": f"::ffff:{v4}", "nat64": f"64:ff9b::{v4}", "compat": f"::{v4}",
                "6to4": f"2002:{int(v4) >> 16:x}:{int(v4) & 0xFFFF:x}::1"}[kind]
    return f"[{embedded.upper() if draw(st.booleans()) else embedded}]"


@settings(max_examples=200, deadline=None)
@given(host=non_public_host(), port=st.sampled_from([None, 80, 443]))
def test_no_spelling_of_a_non_public_address_passes(host: str, port: int | None) -> None:
    url = f"http://{host}{'' if port is None else f':{port}'}/cat.png"
    with pytest.raises(BlockedDestination):
        FetchPolicy().check_url(url)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), address=st.one_of(non_public_v4(), st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)))
def test_numeric_hosts_read_as_inet_aton_reads_them(data: st.DataObject, address: ipaddress.IPv4Address) -> None:
    spelling = data.draw(v4_spelling(address))
    assert socket.inet_aton(spelling) == address.packed  # the spelling really means this address
    assert parse_ip_host(spelling) == address
    assert parse_ip_host(spelling + ".") == address


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 2**32 - 1))
def test_public_addresses_pass(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    if not address.is_global or address.is_multicast or address.is_reserved:
        return
    assert is_public_address(address)
    assert FetchPolicy().check_url(f"https://{address}/cat.png").host == str(address)
    assert is_public_address(ipaddress.IPv6Address(f"::ffff:{address}"))
    assert is_public_address(ipaddress.IPv6Address(f"64:ff9b::{address}"))


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "0x1g.0.0.1", "09.1.1.1", "1..2", "4294967296",
                                  "[::1%25eth0]", "[fe80::1%251]"])
def test_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(BlockedDestination):
        FetchPolicy().check_url(f"http://{host}/a.png")


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/",
                                 "http://example.com:8080/a.png", "https://example.com:22/a.png",
                                 "http://user:pw@example.com/a.png", "http:///a.png", "data:image/png;base64,AA=="])
def test_schemes_ports_and_credentials(url: str) -> None:
    with pytest.raises(BlockedDestination):
        FetchPolicy().check_url(url)
    assert FetchPolicy().check_url("https://example.com/a.png?x=1#frag").fragment == ""
    assert FetchPolicy.build(ports=[8080]).check_url("http://example.com:8080/a.png").port == 8080


def test_allowed_hosts_are_names_not_addresses() -> None:
    policy = FetchPolicy.build(allowed_hosts=["Images.LAN.", "10.0.0.7"])
    assert policy.check_url("http://images.lan/a.png")
    assert policy.check_url("http://10.0.0.7/a.png")
    for other in ("http://10.0.0.8/a.png", "http://127.0.0.1/a.png", "http://[::ffff:10.0.0.7]/a.png"):
        with pytest.raises(BlockedDestination):
            policy.check_url(other)
    assert policy.filter_addresses("images.lan", ["10.0.0.7"]) == ["10.0.0.7"]
    assert policy.filter_addresses("other.example", ["10.0.0.7", "93.184.216.34", "::1"]) == ["93.184.216.34"]


class FakeResolver:
    """Answers like getaddrinfo would for a hostile DNS name: loopback, metadata, one public."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        self.asked.append(host)
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.answers[host]]

    async def close(self) -> None:
        pass


async def test_the_resolver_returns_only_checked_addresses() -> None:
    resolver = GuardedResolver(FetchPolicy())
    resolver._inner = FakeResolver({  # type: ignore[assignment]
        "rebind.example": ["127.0.0.1", "169.254.169.254", "::1", "93.184.216.34"],
        "internal.example": ["10.1.2.3", "fd00::1"],
        "mapped.example": ["::ffff:127.0.0.1"],
    })
    kept = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in kept] == ["93.184.216.34"]  # aiohttp connects only to this one
    for name in ("internal.example", "mapped.example"):
        with pytest.raises(BlockedDestination):
            await resolver.resolve(name, 443)
    with pytest.raises(BlockedDestination):  # a numeric spelling aiohttp passed on as a name
        await resolver.resolve("0x7f000001", 80)
    assert "0x7f000001" not in resolver._inner.asked  # type: ignore[attr-defined]
