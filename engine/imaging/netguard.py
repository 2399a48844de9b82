"""Where an image fetch may connect: public addresses on allowed ports, checked on every hop.

Anyone can paste any URL into a prompt, and the bot fetches it from the machine that runs
the GPU. Without a guard that machine becomes a proxy into its own network: the cloud
metadata service (169.254.169.254), admin pages on 127.0.0.1, the Redis queue on a private
address. So a fetch may only reach an address that is public (`is_public_address`), on a port
the operator allows (80 and 443 by default).

Two gates enforce it, and they share one policy:

* `FetchPolicy.check_url` runs before each request (and again on every redirect). It refuses
  other schemes and ports, and hosts written as numbers in any spelling (`127.1`,
  `0x7f000001`, `2130706433`, `0177.0.0.1`, `[::ffff:127.0.0.1]`, ...) that name a
  non-public address. aiohttp connects to literal addresses without asking a resolver, so
  this is the only gate they pass.
* `GuardedResolver` is the resolver of the connector that does the fetch. It resolves names
  off the event loop (getaddrinfo in a thread) and returns only public addresses, so aiohttp
  connects to exactly the addresses that were checked; there is no second lookup that DNS
  rebinding could answer differently.

`FetchPolicy.allowed_hosts` names hosts (the operator's `IMAGE_FETCH_ALLOWED_HOSTS`) that may
resolve to private addresses, for an image server on the operator's own network. The rule is
per host name as written in the URL, so a redirect from an allowed host to any other name or
address is checked like any other URL.

Refusals raise `BlockedDestination` (an `OSError`, so aiohttp wraps it like any connection
failure). Its message is for the log: users only ever see a neutral "could not fetch".
"""

from __future__ import annotations

import ipaddress
import socket
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

__all__ = ["DEFAULT_PORTS", "MAX_REDIRECTS", "BlockedDestination", "FetchPolicy", "GuardedResolver",
           "IPAddress", "is_public_address", "normalise_host", "parse_ip_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS: frozenset[int] = frozenset({80, 443})
MAX_REDIRECTS = 3
_MAX_HOST = 253  # longest DNS name

# IPv6 ranges that carry an IPv4 address inside, or that Python (3.11) calls global while they
# reach private networks through a translator.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: v4 address in the low 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use translation
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
_HEX = frozenset(string.hexdigits)
_OCT = frozenset("01234567")


class BlockedDestination(OSError):
    """A URL or address the fetch policy refuses; the message says why, for the log only."""


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address, looking inside IPv6 wrappers.

    `ipaddress`'s `is_global` alone is not enough: in Python 3.11 it is True for multicast
    (`ff02::1`), for NAT64 and 6to4 addresses that wrap 127.0.0.1, and for `::127.0.0.1`.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False  # a zone index only makes sense for link-local addresses
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64_WELL_KNOWN:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None or ip in _NAT64_LOCAL or ip in _V4_COMPATIBLE or ip.is_site_local:
            return False
    return bool(ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                      or ip.is_link_local or ip.is_private))


def _ipv4_number(part: str) -> int | None:
    """One part of a numeric IPv4 host as the URL standard (and `inet_aton`) read it, or None."""
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        return int(digits, 16) if all(c in _HEX for c in digits) and digits else (0 if not digits else None)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8) if all(c in _OCT for c in part) else None
    return int(part) if part.isascii() and part.isdigit() else None


def _looks_numeric(part: str) -> bool:
    return part.isascii() and (part.isdigit() or (part[:2] in ("0x", "0X") and all(c in _HEX for c in part[2:])))


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a URL host names when written as a number, else None (a name).

    Reads every spelling resolvers accept: dotted quads, fewer parts (`127.1`), one integer
    (`2130706433`), hex (`0x7f.0.0.1`, `0x7f000001`), octal (`0177.0.0.1`), a trailing dot,
    brackets and IPv6 (v4-mapped, zone ids). Raises `BlockedDestination` for a host that is
    numeric but no valid address (`1.2.3.4.5`, `0x1g`, `256.1.1.1`): resolvers disagree on
    those, so they are refused rather than guessed at. Linear in the host's length.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise BlockedDestination(f"invalid IPv6 host {host[:80]!r}") from None
    if text.endswith(".") and len(text) > 1:
        text = text[:-1]
    parts = text.split(".")
    if not parts or not _looks_numeric(parts[-1]):
        return None  # a name (names may contain digit-only labels, but never end in one)
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise BlockedDestination(f"invalid numeric host {host[:80]!r}")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise BlockedDestination(f"numeric host out of range {host[:80]!r}")
    address = last
    for index, n in enumerate(head):
        address += n << (8 * (3 - index))
    return ipaddress.IPv4Address(address)


def normalise_host(host: str) -> str:
    """A host name as yarl (and so aiohttp) spells it: lower case, IDNA, no trailing dot."""
    host = host.strip().rstrip(".")
    if not host:
        return ""
    try:
        parsed = URL.build(scheme="http", host=host).host or host
    except ValueError:
        parsed = host
    return parsed.lower().rstrip(".")


@dataclass(frozen=True)
class FetchPolicy:
    """What an image fetch may reach. The default is public addresses on ports 80 and 443.

    `allowed_hosts`: host names (or literal addresses) that may be private, e.g. an image
    server on the operator's LAN. `ports`: the ports a URL may name. `max_redirects`: hops
    followed after the first request; each is checked again from scratch.
    """

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    ports: frozenset[int] = DEFAULT_PORTS
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def build(cls, allowed_hosts: Iterable[str] = (), ports: Iterable[int] = DEFAULT_PORTS,
              max_redirects: int = MAX_REDIRECTS) -> FetchPolicy:
        """A policy from settings' lists (host names are normalised like URL hosts)."""
        hosts = frozenset(h for h in (normalise_host(h) for h in allowed_hosts) if h)
        return cls(allowed_hosts=hosts, ports=frozenset(int(p) for p in ports), max_redirects=max_redirects)

    def host_may_be_private(self, host: str) -> bool:
        return normalise_host(host) in self.allowed_hosts

    def check_host(self, host: str) -> IPAddress | None:
        """Refuse a literal address that is not public (unless its host is allowed).

        Returns the address for a numeric host, None for a name (the resolver checks names)."""
        if not host or len(host) > _MAX_HOST:
            raise BlockedDestination("missing or overlong host")
        address = parse_ip_host(host)
        if address is not None and not is_public_address(address) and not self.host_may_be_private(host):
            raise BlockedDestination(f"address {address} is not public")
        return address

    def check_url(self, url: str | URL) -> URL:
        """The URL to request, after the checks that need no network: scheme, port, host.

        Raises `BlockedDestination` (with the reason, for the log) when refused."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError):
            raise BlockedDestination("unparsable URL") from None
        if parsed.scheme not in ("http", "https"):
            raise BlockedDestination(f"scheme {parsed.scheme[:20]!r} is not http(s)")
        if parsed.user is not None or parsed.password is not None:
            raise BlockedDestination("credentials in the URL")
        host = parsed.raw_host or ""
        port = parsed.port
        if port is None or port not in self.ports:
            raise BlockedDestination(f"port {port} is not allowed")
        self.check_host(host)
        return parsed.with_fragment(None)

    def filter_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The resolved addresses a fetch of `host` may connect to (all, for an allowed host)."""
        if self.host_may_be_private(host):
            return list(addresses)
        kept = []
        for text in addresses:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if is_public_address(ip):
                kept.append(text)
        return kept


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: getaddrinfo off the loop, then only the addresses the policy allows.

    aiohttp connects to the addresses a resolver returns, so the addresses checked here are
    the ones connected to. A name with no allowed address raises `BlockedDestination`.
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self._policy.check_host(host)  # numeric spellings aiohttp did not recognise as literals
        results = await self._inner.resolve(host, port, family)
        allowed = set(self._policy.filter_addresses(host, (r["host"] for r in results)))
        kept = [r for r in results if r["host"] in allowed]
        if not kept:
            raise BlockedDestination(f"{host[:80]!r} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()
