"""The shard mapping: a stable ticker hash, channel names and their cluster slot spread."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot as redis_key_slot

from quotes_core import MAX_SHARDS, ShardMap, key_slot, shard_channel, shard_of
from quotes_core.sharding import CLUSTER_SLOTS, crc16
from quotes_core.testing.strategies import any_case_tickers, tickers

# the slot ranges `redis-cli --cluster create` gives 3 masters
THREE_MASTERS = [(0, 5460), (5461, 10922), (10923, 16383)]


def test_crc16_matches_the_redis_cluster_specification_vector() -> None:
    """The cluster spec's check value: CRC16-XMODEM("123456789") = 0x31C3."""
    assert crc16(b"123456789") == 0x31C3


def test_shard_of_is_crc32_of_the_upper_case_ticker() -> None:
    """The documented example holds: crc32("AAPL") = 0xB665575C, shard 12 of 16."""
    assert zlib.crc32(b"AAPL") == 0xB665575C
    assert shard_of("AAPL", 16) == 12
    assert shard_of("aapl", 16) == 12
    assert ShardMap().channel("AAPL") == "quotes.realtime.{12}"


@given(tickers(), st.integers(1, MAX_SHARDS))
def test_shard_of_is_in_range_and_case_insensitive(ticker: str, shards: int) -> None:
    """Every ticker maps to one shard in range, whatever its case."""
    s = shard_of(ticker, shards)
    assert 0 <= s < shards
    assert shard_of(ticker.lower(), shards) == s
    assert ShardMap(shards=shards).shard(ticker) == s


@given(any_case_tickers())
def test_shard_map_agrees_with_shard_of(ticker: str) -> None:
    """The map's method and the free function are the same function."""
    assert ShardMap(shards=7).shard(ticker) == shard_of(ticker, 7)


@given(st.binary(max_size=40) | st.text(alphabet="ab{}c.", max_size=12))
def test_key_slot_matches_redis_py(key: bytes | str) -> None:
    """Our pure slot function agrees with redis-py's, hash tags included."""
    data = key.encode() if isinstance(key, str) else key
    assert key_slot(key) == redis_key_slot(data)
    assert 0 <= key_slot(key) < CLUSTER_SLOTS


def test_hash_tag_rules() -> None:
    """Only a non-empty first {...} is hashed; the slot of a shard ignores the prefix."""
    assert key_slot("a.{7}") == key_slot("other.prefix.{7}") == key_slot("7")
    assert key_slot("a{}b") == crc16(b"a{}b") % CLUSTER_SLOTS
    assert key_slot("{x}{y}") == key_slot("x")


def test_channel_names_have_one_tag_each() -> None:
    """Channel n is prefix.{n}: no tag is shared by two shards."""
    m = ShardMap("feed", 4)
    assert m.channels == ("feed.{0}", "feed.{1}", "feed.{2}", "feed.{3}")
    assert shard_channel("feed", 3) == "feed.{3}"


@pytest.mark.parametrize("shards", [1, 16, 64, 256, MAX_SHARDS])
def test_shard_channels_have_distinct_slots(shards: int) -> None:
    """No two shard channels share a hash slot (so none is forced onto one master)."""
    slots = ShardMap(shards=shards).slots
    assert len(set(slots)) == shards


def test_default_shards_spread_over_three_masters() -> None:
    """The default 16 shards put 6/6/4 channels on the three masters of a default cluster."""
    assert ShardMap().spread(THREE_MASTERS) == [6, 6, 4]


@pytest.mark.parametrize("shards", [16, 32, 64, 128, 256])
def test_spread_is_roughly_even(shards: int) -> None:
    """From 16 shards up, no master of a 3-master cluster gets less than half its share."""
    counts = ShardMap(shards=shards).spread(THREE_MASTERS)
    assert sum(counts) == shards
    assert min(counts) >= shards / 3 / 2


def test_tickers_spread_over_shards() -> None:
    """3,000 synthetic symbols fill every one of 16 shards within 25% of the mean."""
    m = ShardMap()
    counts = [0] * m.shards
    for i in range(3000):
        counts[m.shard(f"T{i:04d}")] += 1
    assert min(counts) > 0.75 * 3000 / 16
    assert max(counts) < 1.25 * 3000 / 16


def test_shards_of() -> None:
    """Every ticker (None) needs every shard; a list needs exactly the shards of its tickers."""
    m = ShardMap(shards=16)
    assert m.shards_of(None) == frozenset(range(16))
    assert m.shards_of(["AAPL", "aapl"]) == {12}
    assert m.shards_of([]) == frozenset()


@pytest.mark.parametrize("bad", [0, -1, MAX_SHARDS + 1])
def test_bad_shard_counts_are_refused(bad: int) -> None:
    """A shard count out of range is a clear ValueError."""
    with pytest.raises(ValueError, match="shards must be between"):
        ShardMap(shards=bad)
    with pytest.raises(ValueError, match="shards must be between"):
        shard_of("AAPL", bad)


def test_empty_prefix_and_negative_shard_are_refused() -> None:
    """Channel names need a prefix and a non-negative shard."""
    with pytest.raises(ValueError, match="prefix"):
        ShardMap("")
    with pytest.raises(ValueError, match="non-negative"):
        shard_channel("p", -1)
