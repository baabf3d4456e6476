"""The resume tracker against a reference model: position, gaps, snapshots and epochs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quotes_client.events import Gap
from quotes_client.resume import ResumeTracker


def runs(dropped: list[int]) -> int:
    """How many maximal runs of consecutive numbers ``dropped`` (sorted) holds."""
    return sum(1 for i, n in enumerate(dropped) if i == 0 or dropped[i - 1] != n - 1)


@given(st.integers(1, 200), st.data())
def test_a_contiguous_stream_counts_exactly_the_holes(total: int, data: st.DataObject) -> None:
    """Seqs 1..N, some dropped: one gap per run of holes after the first quote; all counted."""
    kept = data.draw(st.lists(st.booleans(), min_size=total, max_size=total))
    received = [seq for seq, keep in zip(range(1, total + 1), kept, strict=True) if keep]
    tracker = ResumeTracker()
    tracker.start(contiguous=True, resuming=False)
    gaps = [tracker.on_quote(seq, "e") for seq in received]
    if not received:
        assert tracker.since is None
        return
    first, last = received[0], received[-1]
    holes = [s for s in range(first, last + 1) if s not in set(received)]
    assert tracker.gaps == runs(holes) == sum(g is not None for g in gaps)
    assert tracker.missed == len(holes)
    assert tracker.since == f"e:{last}"
    assert all(g is None or (g.reason == "seq" and g.missed) for g in gaps)


@given(st.lists(st.integers(1, 10_000), unique=True, min_size=1, max_size=50))
def test_other_streams_never_count_jumps(seqs: list[int]) -> None:
    """A filtered (or max_hz) stream skips other seqs by design: no gaps; position = highest."""
    seqs.sort()
    tracker = ResumeTracker()
    tracker.start(contiguous=False, resuming=False)
    assert all(tracker.on_quote(s, "e") is None for s in seqs)
    assert (tracker.gaps, tracker.missed, tracker.since) == (0, 0, f"e:{seqs[-1]}")


def test_a_resumed_stream_must_continue_right_after_since() -> None:
    """After recovered: true the replay starts at seq+1; a hole there is a gap."""
    tracker = ResumeTracker()
    tracker.start(contiguous=True, resuming=False)
    tracker.on_quote(5, "e")
    tracker.start(contiguous=True, resuming=True)
    assert tracker.on_recovered(True, "e", 5) is None
    assert tracker.on_quote(6, "e") is None
    tracker.start(contiguous=True, resuming=True)
    tracker.on_recovered(True, "e", 6)
    assert tracker.on_quote(9, "e") == Gap("seq", 2, "e", 9)
    assert (tracker.recovered, tracker.gaps, tracker.missed) == (2, 1, 2)


def test_a_plain_reconnect_starts_a_new_run() -> None:
    """Without since= the first quote of a connection is the baseline, not a gap."""
    tracker = ResumeTracker()
    tracker.start(contiguous=True, resuming=False)
    tracker.on_quote(5, "e")
    tracker.start(contiguous=True, resuming=False)
    assert tracker.on_quote(50, "e") is None
    assert tracker.gaps == 0


@given(st.lists(st.integers(1, 40), unique=True, max_size=20), st.integers(40, 60))
def test_after_unrecovered_the_snapshot_is_no_gap(snapshot: list[int], floor: int) -> None:
    """recovered: false is one gap; snapshot seqs up to the frame's seq are none; live follows."""
    tracker = ResumeTracker()
    tracker.start(contiguous=True, resuming=False)
    tracker.on_quote(3, "old")
    tracker.start(contiguous=True, resuming=True)
    assert tracker.on_recovered(False, "new", floor) == Gap("unrecovered", None, "new", floor)
    assert all(tracker.on_quote(s, "new") is None for s in snapshot)
    assert tracker.on_quote(floor + 1, "new") is None
    assert tracker.on_quote(floor + 3, "new") == Gap("seq", 1, "new", floor + 3)
    assert (tracker.gaps, tracker.unrecovered, tracker.since) == (2, 1, f"new:{floor + 3}")


def test_an_epoch_change_is_a_gap_and_a_new_baseline() -> None:
    """A new epoch (restart, upstream outage) counts once; the new epoch's seqs follow on."""
    tracker = ResumeTracker()
    tracker.start(contiguous=False, resuming=False)
    assert tracker.on_quote(100, "a") is None  # the first epoch seen is no change
    assert tracker.on_quote(1, "b") == Gap("epoch", None, "b", 1)
    assert tracker.on_quote(2, "b") is None
    assert (tracker.gaps, tracker.since) == (1, "b:2")


def test_a_filter_change_restarts_the_run() -> None:
    """After restart() the next quote is a baseline (the filter just changed)."""
    tracker = ResumeTracker()
    tracker.start(contiguous=False, resuming=False)
    tracker.on_quote(4, "e")
    tracker.restart(contiguous=True)
    assert tracker.on_quote(10, "e") is None
    assert tracker.on_quote(12, "e") == Gap("seq", 1, "e", 12)


def test_quotes_without_position_change_nothing() -> None:
    """A server that ignores seq=1 sends no position: nothing is tracked."""
    tracker = ResumeTracker()
    tracker.start(contiguous=True, resuming=False)
    assert tracker.on_quote(None, None) is None
    assert (tracker.since, tracker.gaps) == (None, 0)
