"""
The key a client's address counts under for the per-address connection cap.

An IPv4 address is one key. An IPv6 host usually owns a whole ``/64`` (SLAAC,
privacy addresses: a laptop picks a new address whenever it likes, and one machine
can use millions), so keying IPv6 by the exact address would let one host fill the
process cap. IPv6 addresses are therefore keyed by their network of
``ipv6_prefix`` bits (default 64); ``128`` keys by the exact address. An
IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports
for an IPv4 peer) counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress

__all__ = ["DEFAULT_IPV6_PREFIX", "address_key"]

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
