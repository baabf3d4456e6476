"""
The key a client's address counts under for the per-address connection cap.

An IPv4 address is one key. An IPv6 host usually owns a whole ``/64`` (SLAAC,
privacy addresses: a laptop picks a new address whenever it likes, and one machine
can use millions), so keying IPv6 by the exact address would let one host fill the
process cap. IPv6 addresses are therefore keyed by their network of
``ipv6_prefix`` bits (default 64); ``128`` keys by the exact address. An
IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports
for an IPv4 peer) counts as its IPv4 address.

:func:`trusted_peer` says whether a peer may name its client in
``X-Forwarded-For``, by the same rule as uvicorn's proxy-headers middleware.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["DEFAULT_IPV6_PREFIX", "address_key", "trusted_peer"]

DEFAULT_IPV6_PREFIX = 64
"""Bits of an IPv6 address that name one client for the per-address cap."""


def address_key(host: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """
    The per-address cap's key of a client address.

    Args:
        host: the client's address as the server sees it (after a trusted proxy's
            ``X-Forwarded-For``); anything that is not an IP address is its own key.
        ipv6_prefix: bits of an IPv6 address that identify one client (1-128).

    Returns:
        The IPv4 address, or the IPv6 network (``2001:db8::/64``) as text; for
        ``ipv6_prefix=128`` the IPv6 address in its compressed form.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    # the zone of a link-local address names the interface, not the peer
    ip = ipaddress.IPv6Address(int(ip))
    if ipv6_prefix >= 128:
        return str(ip)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


def trusted_peer(host: str, trusted: Iterable[str]) -> bool:
    """
    Whether a peer is one of the proxies trusted with ``X-Forwarded-For``.

    The rule is uvicorn's (``--forwarded-allow-ips``), so the answer is what uvicorn
    did with the header: ``*`` trusts everyone; an IP address matches an address or
    network of the list; anything else (a unix socket path) only the same text.

    Args:
        host: the peer's address as the socket reports it.
        trusted: the trusted proxies (IPs, CIDR networks, literals or ``*``).
    """
    items = [item.strip() for item in trusted]
    if "*" in items:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host in items
    for item in items:
        try:
            if ip in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue  # a literal: never equal to an IP address's text here
    return False
