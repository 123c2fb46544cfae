"""Pure. The egress policy: which URLs and addresses the worker may send to, and URLs with secrets redacted.

Every outbound request (sequence, action and SLA webhooks, the chat-completions responder, SMTP) is
checked twice: the URL when it is saved or used (`url_refusal`: scheme, and a host that is literally a
refused address), and the address actually connected to after one DNS resolution (`address_refusal`, in
`services.egress`), so a name that resolves to 127.0.0.1 is refused too.

Refused by default: loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16, fe80::/10),
carrier-grade NAT (100.64.0.0/10), multicast, unspecified, broadcast, and every other address Python's
`ipaddress` does not call globally reachable (documentation, benchmarking and reserved ranges). IPv6
addresses that embed an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, 6to4
`2002::/16` and NAT64 `64:ff9b::/96`) are judged by the embedded address. IPv4 literals are read as the
C library reads them when it connects (`2130706433`, `0177.0.0.1`, `0x7f.1` are all 127.0.0.1).

`SEGMENTFLOW_EGRESS_ALLOW` (comma-separated CIDRs, addresses and host names) opens exceptions: an address
inside an allowed network, or a URL whose host is an allowed name, passes. Leave it empty in production.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "EgressPolicy",
    "address_refusal",
    "first_url_refusal",
    "literal_address",
    "parse_allow",
    "redact_url",
    "url_refusal",
]

Location = tuple[str | int, ...]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What a secret reads as in an answer (URL userinfo, query values, token-like path segments).
REDACTED = "<redacted>"

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_PRIVATE: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_NUMBERS = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Exceptions to the default refusal: allowed networks and host names (lower-case, no trailing dot).
    The empty policy (the default) allows only globally reachable addresses."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_allow(text: str | None) -> EgressPolicy:
    """The policy of a `SEGMENTFLOW_EGRESS_ALLOW` value: comma-separated CIDRs (`127.0.0.0/8`), single
    addresses (`::1`) and host names (`localhost`). An entry that is none of these raises `ValueError`."""
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for raw in (text or "").split(","):
        entry = _normal_host(raw)
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if "/" in entry or not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", entry):
            raise ValueError(f"SEGMENTFLOW_EGRESS_ALLOW: {raw.strip()!r} is neither a CIDR nor a host name")
        hosts.add(entry)
    return EgressPolicy(networks=tuple(networks), hosts=frozenset(hosts))


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host literally names (None for a name to resolve): IPv6 in brackets or not, and
    IPv4 in every form `inet_aton` accepts (decimal, octal, hex, 1 to 4 parts)."""
    host = _normal_host(host)
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # a zone id (`fe80::1%eth0`) names no other host
    except ValueError:
        pass
    if _IPV4_NUMBERS.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: IPAddress) -> str | None:
    """Why an address is refused by default (None: globally reachable)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = _category(embedded)
            return None if inner is None else f"{inner} (it embeds {embedded})"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address == _BROADCAST:
        return "broadcast"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT"
    if any(address in network for network in _PRIVATE):
        return "private"
    if address.is_private or not address.is_global:
        return "reserved (not globally reachable)"
    return None


def address_refusal(address: IPAddress, policy: EgressPolicy, *, host: str | None = None) -> str | None:
    """Why connecting to `address` is refused (None: allowed). An allowed network, or an allowed host
    name the address was resolved from, opens an exception."""
    if (host is not None and policy.allows_host(host)) or policy.allows_address(address):
        return None
    category = _category(address)
    if category is None:
        return None
    named = f"{host} resolves to " if host is not None and literal_address(host) is None else ""
    return f"egress refused: {named}{address} is {category} (SEGMENTFLOW_EGRESS_ALLOW opens exceptions)"


def url_refusal(url: str, policy: EgressPolicy) -> str | None:
    """Why a URL can never be sent to (None: it may be, subject to the connect-time check): not http(s),
    no host, or a host that is literally a refused address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"egress refused: only http and https URLs are sent to, not {parts.scheme or 'a relative URL'}"
    host = parts.hostname
    if not host:
        return "egress refused: the URL has no host"
    if port == 0:
        return "egress refused: port 0"
    address = literal_address(host)
    if address is None:
        return None
    return address_refusal(address, policy, host=host)


def first_url_refusal(
    urls: Iterable[tuple[Location, str]], policy: EgressPolicy
) -> tuple[Location, str] | None:
    """The first (place, URL) whose URL can never be sent to, with the reason (None: all may be): what an
    import or an API write refuses (exit 2, 422 naming the field)."""
    for location, url in urls:
        reason = url_refusal(url, policy)
        if reason is not None:
            return location, reason
    return None


def _token_like(segment: str) -> bool:
    """A path segment that reads as a secret (Slack's `/services/T…/B…/<token>`, Discord's
    `/webhooks/<id>/<token>`, signed paths): 16+ URL-safe characters with both a letter and a digit, or
    24+ letters and digits with no separator. Readable names (`order-created-hook`) stay."""
    if re.fullmatch(r"[A-Za-z0-9_\-.~%]{16,}", segment) is None:
        return False
    has_digit = any(c.isdigit() for c in segment)
    has_letter = any(c.isalpha() for c in segment)
    return (has_digit and has_letter) or (len(segment) >= 24 and segment.isalnum())


def redact_url(url: str) -> str:
    """The URL as an answer may show it: userinfo, every query value, the fragment and token-like path
    segments (see `_token_like`) replaced by `<redacted>`; query names, host, port and the other path
    segments kept. A string that does not parse as a URL is redacted whole."""
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{REDACTED}@{host}{'' if port is None else f':{port}'}"
    path = "/".join(REDACTED if _token_like(s) else s for s in parts.path.split("/"))
    query = "&".join(
        f"{p.split('=', 1)[0]}={REDACTED}" if "=" in p else (REDACTED if p else p)
        for p in parts.query.split("&")
    )
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))
