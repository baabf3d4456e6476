"""
The sharded source's pure decisions: who owns each shard, and what each link subscribes.

:func:`owners_from_slots` reads a ``CLUSTER SLOTS`` reply into the master that owns
each shard channel's hash slot (and every node address it names, to ask next time);
:func:`wanted_shards` turns the clients' interest into shards; :func:`assignment`
says which channels each link (one per owning master) subscribes to. No I/O: the
source asks Redis and runs the links.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Set
from typing import Any

from quotes_core import ShardMap

__all__ = ["Address", "assignment", "owners_from_slots", "wanted_shards"]

Address = tuple[str, int]
"""A Redis node: host and port."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def owners_from_slots(
    shard_map: ShardMap, reply: Iterable[Any], asked: Address, seed: Address
) -> tuple[dict[int, Address], list[Address]]:
    """
    The owner of each shard, and every node the reply names (the seed first).

    Args:
        shard_map: the shard channels and their hash slots.
        reply: ``CLUSTER SLOTS``: ``[first, last, [host, port, ...], *replicas]`` per range.
        asked: the node that answered (an empty host in the reply means that node's).
        seed: the configured node, always kept in the list of nodes to ask.

    Returns:
        ``{shard: master}`` for the shards whose slot some range covers (a slot no
        range covers leaves its shard without an owner), and the known nodes.
    """
    ranges: list[tuple[int, int, Address]] = []
    known: list[Address] = [seed]
    for entry in reply:
        first, last, master, *replicas = entry
        for node in (master, *replicas):
            addr = (_text(node[0]) or asked[0], int(node[1]))
            if addr not in known:
                known.append(addr)
        ranges.append((int(first), int(last), (_text(master[0]) or asked[0], int(master[1]))))
    ranges.sort()
    starts = [r[0] for r in ranges]
    owners: dict[int, Address] = {}
    for shard, slot in enumerate(shard_map.slots):
        i = bisect.bisect_right(starts, slot) - 1
        if i >= 0 and ranges[i][0] <= slot <= ranges[i][1]:
            owners[shard] = ranges[i][2]
    return owners, known


def wanted_shards(shard_map: ShardMap, wants_all: bool, tickers: Set[str]) -> frozenset[int]:
    """Every shard while some client wants every ticker, else the shards of ``tickers``."""
    if wants_all:
        return frozenset(range(shard_map.shards))
    return shard_map.shards_of(tickers)


def assignment(
    shard_map: ShardMap,
    wanted: Iterable[int],
    owners: Mapping[int, Address],
    links: Iterable[Address],
) -> dict[Address, frozenset[str]]:
    """
    The channels each link subscribes to: the wanted shards its node owns (a link
    whose node owns none of them subscribes to nothing; a shard without a live link
    waits for one).
    """
    by_node: dict[Address, set[str]] = {a: set() for a in links}
    for shard in wanted:
        owner = owners.get(shard)
        if owner in by_node:
            by_node[owner].add(shard_map.channels[shard])
    return {address: frozenset(channels) for address, channels in by_node.items()}
