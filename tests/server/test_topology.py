"""The sharded source's pure decisions: shard owners, and what each link subscribes."""

from __future__ import annotations

from quotes_core import ShardMap
from quotes_server.sources.topology import assignment, owners_from_slots, wanted_shards

MAP = ShardMap("quotes.realtime", 4)
A, B, SEED = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("127.0.0.1", 7000)


def test_owners_follow_the_slot_ranges_and_every_named_node_is_known() -> None:
    reply = [
        [0, 8191, [b"10.0.0.1", 7000, b"id"], [b"10.0.0.9", 7009, b"r"]],
        [8192, 16383, [b"", 7001, b"id"]],  # an empty host: the node that answered
    ]
    owners, known = owners_from_slots(MAP, reply, asked=("10.0.0.2", 7000), seed=SEED)
    expected = {s: (A if slot <= 8191 else B) for s, slot in enumerate(MAP.slots)}
    assert owners == expected
    assert known == [SEED, A, ("10.0.0.9", 7009), B]


def test_a_slot_no_range_covers_leaves_its_shard_without_owner() -> None:
    first = min(MAP.slots)
    reply = [[first + 1, 16383, [b"10.0.0.1", 7000]]]
    owners, _ = owners_from_slots(MAP, reply, asked=A, seed=SEED)
    assert MAP.slots.index(first) not in owners
    assert len(owners) == MAP.shards - 1


def test_interest_becomes_shards_and_shards_become_each_links_channels() -> None:
    assert wanted_shards(MAP, True, set()) == {0, 1, 2, 3}
    some = wanted_shards(MAP, False, {"AAPL", "MSFT"})
    assert some == MAP.shards_of({"AAPL", "MSFT"})
    owners = {0: A, 1: A, 2: B}  # shard 3 has no owner (yet)
    plan = assignment(MAP, {0, 2, 3}, owners, [A, B, SEED])
    assert plan == {
        A: frozenset({MAP.channels[0]}),
        B: frozenset({MAP.channels[2]}),
        SEED: frozenset(),  # a link whose node owns no wanted shard subscribes to nothing
    }
