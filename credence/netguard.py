"""Where a webhook may point: public HTTP(S) addresses only, checked when it is set and again when it is called.

A webhook URL is chosen by a client, but the request is made by the server, from inside the
deployment's network: without a check, `http://169.254.169.254/` reads the cloud's instance
metadata and `http://[::1]:6379/` talks to the Redis next to the API (server-side request
forgery). So the URL must be `http` or `https`, and every address its host resolves to must be
globally routable: not loopback, link-local, private (RFC 1918, ULA, CGNAT), multicast, reserved
or unspecified, and not such an address wrapped in IPv6 (IPv4-mapped, NAT64, 6to4, Teredo).

The check at configuration time (`check_webhook_url`) catches mistakes early; the one that
protects is at delivery (`resolve_target`): the host is resolved once, every address is checked,
and the request is made to the checked address itself (the URL's host goes in `Host` and in TLS
SNI, so certificates are still verified against the name). A name that resolves to a public
address when checked and to 127.0.0.1 a second later (DNS rebinding) therefore never reaches
127.0.0.1. An operator who really wants an internal receiver says so per client
(`--allow-private-webhook`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Blocks that Python's `is_global` misses in some versions, or that are never a webhook receiver.
_EXTRA_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "255.255.255.255/32",
    "64:ff9b:1::/48", "100::/64", "2001:db8::/32",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class WebhookURLRefused(ValueError):
    """A webhook URL that the server will not call (the message says why)."""


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address (None when it is one)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"{inner} (wrapped in IPv6 as {address})" if inner else None
    kinds = [("loopback", address.is_loopback), ("link-local", address.is_link_local),
             ("unspecified", address.is_unspecified), ("multicast", address.is_multicast),
             ("private", address.is_private), ("reserved", address.is_reserved)]
    for name, hit in kinds:
        if hit:
            return f"{address} is a {name} address"
    if any(address in network for network in _EXTRA_BLOCKED) or not address.is_global:
        return f"{address} is not a globally routable address"
    return None


@dataclass(frozen=True)
class WebhookURL:
    """A parsed webhook URL: scheme, host (no brackets) and port."""

    url: str
    scheme: str
    host: str
    port: int


def parse_webhook_url(url: str) -> WebhookURL:
    """The URL's parts, or `WebhookURLRefused` for what is not an absolute http(s) URL with a host."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookURLRefused("the webhook URL is empty")
    url = url.strip()
    if len(url) > 2000:
        raise WebhookURLRefused("the webhook URL is longer than 2000 characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise WebhookURLRefused("the webhook URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookURLRefused(f"the webhook URL does not parse ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        named = f"{scheme}:" if scheme else "a relative URL"
        raise WebhookURLRefused(f"the webhook URL must be http:// or https://, not {named}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookURLRefused("the webhook URL has no host")
    return WebhookURL(url, scheme, host, port or (443 if scheme == "https" else 80))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def resolve_addresses(host: str, port: int, resolver: Resolver = socket.getaddrinfo) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself), in the resolver's order."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookURLRefused(f"the webhook host {host!r} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = _literal(str(info[4][0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookURLRefused(f"the webhook host {host!r} resolves to no address")
    return addresses


def _refuse_private(parsed: WebhookURL, addresses: list[IPAddress]) -> None:
    for address in addresses:
        why = address_problem(address)
        if why is not None:
            named = "" if _literal(parsed.host) is not None else f" ({parsed.host} resolves to it)"
            raise WebhookURLRefused(f"the webhook URL points inside the network: {why}{named}; an operator may "
                                    "allow it for this client with --allow-private-webhook")


def check_webhook_url(url: str, *, allow_private: bool = False, resolver: Resolver = socket.getaddrinfo) -> str:
    """Refuse a webhook URL the server must not call (`WebhookURLRefused`); returns it, stripped.

    Run when a client's webhook is set. The host is resolved now so that a name pointing inside
    the network is refused at once; delivery checks again (`resolve_target`), since DNS answers change.
    With `allow_private` only the scheme and shape are checked.
    """
    parsed = parse_webhook_url(url)
    if not allow_private:
        _refuse_private(parsed, resolve_addresses(parsed.host, parsed.port, resolver))
    return parsed.url


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL with the checked address as its host, and the real host name."""

    url: str
    address: str
    host_header: str
    sni_hostname: str | None


def resolve_target(url: str, *, allow_private: bool = False, resolver: Resolver = socket.getaddrinfo) -> Target:
    """Resolve the webhook's host once, check every address, and aim the request at the first one.

    Connecting to the address checked here (not to the name, which the HTTP library would
    resolve again) is what defeats DNS rebinding.
    """
    import httpx

    parsed = parse_webhook_url(url)
    addresses = resolve_addresses(parsed.host, parsed.port, resolver)
    if not allow_private:
        _refuse_private(parsed, addresses)
    address = addresses[0]
    original = httpx.URL(parsed.url)
    default_port = 443 if parsed.scheme == "https" else 80
    named = f"[{original.host}]" if ":" in original.host else original.host
    host_header = named if parsed.port == default_port else f"{named}:{parsed.port}"
    aimed = original.copy_with(host=str(address))
    sni = original.host if parsed.scheme == "https" and _literal(original.host) is None else None
    return Target(str(aimed), str(address), host_header, sni)


__all__ = ["Target", "WebhookURL", "WebhookURLRefused", "address_problem", "check_webhook_url",
           "parse_webhook_url", "resolve_addresses", "resolve_target"]
