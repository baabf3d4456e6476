"""The stream engine alone: publish, open, act and render, with the clock passed in."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from quotes_core import (
    TEXT_CODEC,
    Codec,
    Control,
    History,
    Mode,
    Position,
    Quote,
    Stream,
    StreamItem,
    StreamOptions,
    TickerFilter,
    encode_quote,
    render,
)
from quotes_core.testing import make_quote

CLOCK = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RESUME_E1_1 = StreamOptions(seq=True, since=Position("e1", 1))


def publish(stream: Stream[str], *quotes: Quote, now: float = 0.0) -> list[object]:
    woken: list[object] = []
    for q in quotes:
        woken += stream.publish(q, encode_quote(q), now)
    return woken


def shown(frames: list[str]) -> list[object]:
    """Each frame as ``ticker#volume`` (or a list of them), or its event name."""

    def one(obj: dict[str, object]) -> object:
        return f"{obj['ticker']}#{obj['volume']}" if "ticker" in obj else obj["event"]

    out: list[object] = []
    for frame in frames:
        obj = json.loads(frame)
        out.append([one(o) for o in obj] if isinstance(obj, list) else one(obj))
    return out


def out(stream: Stream[str], sub: object, now: float = 0.0) -> list[object]:
    assert hasattr(sub, "take")
    frames, _ = render(sub.take(now), sub.options, TEXT_CODEC)  # type: ignore[attr-defined]
    return shown(frames)


def f(*tickers: str) -> TickerFilter:
    return TickerFilter(frozenset(tickers))


def test_publish_positions_record_and_wake() -> None:
    """Each quote gets the next seq, lands in history and snapshot, wakes a subscription once."""
    stream: Stream[str] = Stream(epoch="e1")
    plain = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(), 0.0)
    seq = stream.open(TickerFilter(), Mode.FIFO, StreamOptions(seq=True), 0.0)
    assert (plain.hub, seq.hub) == (stream.plain, stream.sequenced)
    woken = publish(stream, make_quote("AAPL", 1), make_quote("MSFT", 2), make_quote("AAPL", 3))
    assert woken == [plain.sub, seq.sub]  # once each: after that they have quotes pending
    assert stream.seq == 3
    assert len(stream.history) == 3
    latest = stream.snapshot.get("AAPL")
    assert latest is not None
    assert latest.seq == 3
    assert out(stream, plain) == ["AAPL#1", "AAPL#3"]
    frames, quotes = render(seq.take(0.0), seq.options, TEXT_CODEC)
    assert quotes == 3
    assert [json.loads(x)["seq"] for x in frames] == [1, 2, 3]
    assert {json.loads(x)["epoch"] for x in frames} == {"e1"}


def test_sequenced_hub_is_published_only_with_subscribers() -> None:
    stream: Stream[str] = Stream()
    publish(stream, make_quote("AAPL", 1))
    assert stream.sequenced.published == 0
    sub = stream.open(TickerFilter(), Mode.FIFO, StreamOptions(batch=True), 0.0)
    publish(stream, make_quote("AAPL", 2))
    assert stream.sequenced.published == 1
    stream.close(sub)
    stream.close(sub)  # idempotent
    assert len(stream) == 0


def test_open_routes_and_queues_the_preface() -> None:
    """snapshot=1 alone stays on the plain hub; since= replays or says recovered false."""
    stream: Stream[str] = Stream(epoch="e1")
    publish(stream, make_quote("AAPL", 1), make_quote("MSFT", 2), make_quote("AAPL", 3))
    snap = stream.open(f("AAPL", "MSFT"), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    assert snap.hub is stream.plain
    assert out(stream, snap) == ["MSFT#2", "AAPL#3"]  # in publication order
    resumed = stream.open(f("AAPL"), Mode.FIFO, RESUME_E1_1, 0.0)
    assert resumed.hub is stream.sequenced
    assert out(stream, resumed) == ["recovered", "AAPL#3"]
    other = StreamOptions(seq=True, since=Position("e0", 1), snapshot=True)
    lost = stream.open(f("MSFT"), Mode.FIFO, other, 0.0)
    frames, _ = render(lost.take(0.0), lost.options, TEXT_CODEC)
    assert json.loads(frames[0]) == {
        "event": "recovered",
        "recovered": False,
        "epoch": "e1",
        "seq": 3,
    }
    assert shown(frames[1:]) == ["MSFT#2"]


def test_a_replay_over_the_limit_is_refused() -> None:
    stream: Stream[str] = Stream(epoch="e1", replay_limit=2)
    publish(stream, *(make_quote("AAPL", n) for n in range(5)))
    sub = stream.open(TickerFilter(), Mode.FIFO, RESUME_E1_1, 0.0)
    frames, quotes = render(sub.take(0.0), sub.options, TEXT_CODEC)
    assert (json.loads(frames[0])["recovered"], quotes) == (False, 0)


def test_new_epoch_ends_resumes() -> None:
    stream: Stream[str] = Stream(epoch="e1")
    publish(stream, make_quote("AAPL", 1), make_quote("AAPL", 2))
    assert stream.new_epoch("e2") == "e2"
    assert len(stream.history) == 0
    sub = stream.open(TickerFilter(), Mode.FIFO, RESUME_E1_1, 0.0)
    assert json.loads(render(sub.take(0.0), sub.options, TEXT_CODEC)[0][0])["recovered"] is False


def test_act_replies_after_pending_then_snapshot_then_new_filter() -> None:
    stream: Stream[str] = Stream()
    publish(stream, make_quote("MSFT", 1))
    sub = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    publish(stream, make_quote("AAPL", 2))  # pending in the hub when the action comes
    reply = stream.act(sub, '{"action":"subscribe","tickers":["msft"]}', now=0.0, clock=CLOCK)
    assert reply is not None
    assert reply.filter == f("AAPL", "MSFT")
    publish(stream, make_quote("MSFT", 3))
    assert out(stream, sub) == ["AAPL#2", "subscribed", "MSFT#1", "MSFT#3"]
    assert stream.tickers() == {"AAPL", "MSFT"}
    assert not stream.wants_all()


def test_act_errors_and_refused_charges_change_nothing() -> None:
    stream: Stream[str] = Stream()
    sub = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(), 0.0)
    reply = stream.act(sub, '{"action":"dance"}', now=0.0, clock=CLOCK)
    assert reply is not None
    assert reply.error is not None
    assert reply.filter is None
    big = json.dumps({"action": "set", "tickers": [f"T{i}" for i in range(100)]})
    assert stream.act(sub, big, now=0.0, clock=CLOCK, charge=lambda _: False) is None
    assert sub.filter == f("AAPL")
    granted = stream.act(
        sub, '{"action":"set","tickers":["MSFT"]}', now=0.0, clock=CLOCK, grant=frozenset()
    )
    assert granted is not None
    assert granted.error is not None
    assert granted.error.code == "forbidden"
    assert out(stream, sub) == ["error", "error"]


def test_max_hz_holds_releases_and_forgets() -> None:
    """
    One quote per ticker per interval; the newest held one goes out when due; a held
    quote is dropped with its ticker.
    """
    stream: Stream[str] = Stream()
    sub = stream.open(f("AAPL", "MSFT"), Mode.FIFO, StreamOptions(max_hz=1.0), 0.0)
    publish(
        stream,
        make_quote("AAPL", 1),
        make_quote("AAPL", 2),
        make_quote("AAPL", 3),
        make_quote("MSFT", 4),
    )
    assert out(stream, sub, now=10.0) == ["AAPL#1", "MSFT#4"]
    assert sub.next_due() == 11.0
    assert not sub.pending
    sub.due = True  # the transport's timer fired
    assert out(stream, sub, now=11.0) == ["AAPL#3"]
    publish(stream, make_quote("MSFT", 5))
    assert out(stream, sub, now=10.5) == []  # held until 11.0
    stream.act(sub, '{"action":"unsubscribe","tickers":["MSFT"]}', now=10.6, clock=CLOCK)
    assert sub.next_due() is None  # the held MSFT is gone with its ticker
    assert out(stream, sub, now=20.0) == ["subscribed"]


def test_a_long_queue_goes_out_in_chunks_and_counts_against_the_budget() -> None:
    stream: Stream[str] = Stream(queue_bytes=64 * 1024)
    publish(stream, *(make_quote(f"T{i}", i) for i in range(1000)))
    sub = stream.open(TickerFilter(), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    assert sub.over_budget  # ~200 KiB of snapshot queued against 64 KiB
    publish(stream, make_quote("LIVE", 1))
    chunks = []
    while sub.pending:
        chunk = sub.take(0.0, most=16 * 1024)
        assert chunk
        chunks.append(chunk)
    assert len(chunks) > 5
    every = [e for chunk in chunks for e in chunk]
    assert len(every) == 1001
    assert every[-1] == encode_quote(make_quote("LIVE", 1))  # live quotes wait behind the queue
    assert sub.queued == 0
    assert not sub.over_budget


elements = st.lists(
    st.one_of(
        st.builds(lambda n: Control(json.dumps({"event": "pong", "id": n})), st.integers(0, 9)),
        st.builds(
            lambda n: StreamItem(n, "e", "AAPL", encode_quote(make_quote("AAPL", n)), 0.0),
            st.integers(1, 99),
        ),
        st.builds(lambda n: encode_quote(make_quote("MSFT", n)), st.integers(1, 99)),
    ),
    max_size=20,
)


@given(elements, st.booleans(), st.booleans())
def test_render_keeps_order_and_never_puts_a_control_in_an_array(
    items: list[object], seq: bool, batch: bool
) -> None:
    frames, quotes = render(items, StreamOptions(seq=seq, batch=batch), TEXT_CODEC)  # type: ignore[arg-type]
    flat: list[dict[str, object]] = []
    for frame in frames:
        obj = json.loads(frame)
        if isinstance(obj, list):
            assert batch
            assert obj
            assert all("ticker" in o for o in obj)
            flat += obj
        else:
            assert not (batch and "ticker" in obj)
            flat.append(obj)
    assert quotes == sum("ticker" in o for o in flat)
    assert len(flat) == len(items)
    for element, obj in zip(items, flat, strict=True):
        if isinstance(element, Control):
            assert obj == json.loads(element.text)
        elif isinstance(element, StreamItem):
            assert ("seq" in obj) is seq
            assert obj["volume"] == element.seq
        else:
            assert "seq" not in obj


def test_render_through_a_codec_of_frames() -> None:
    """A transport whose payloads are frames: plain quotes go out as the very payload."""
    codec: Codec[bytes, bytes] = Codec(
        lambda text: b"F" + text.encode(), lambda p: p[1:].decode(), lambda p: p
    )
    payload = b"F" + encode_quote(make_quote("AAPL", 1)).encode()
    frames, _ = render([payload, Control("{}")], StreamOptions(), codec)
    assert frames[0] is payload
    assert frames[1] == b"F{}"
    frames, _ = render([StreamItem(7, "e", "AAPL", payload, 0.0)], StreamOptions(seq=True), codec)
    assert frames[0].endswith(b',"seq":7,"epoch":"e"}')


class CountingHistory(History[str]):
    """A second backend, as the resume-anywhere issue will add: here, History counting reads."""

    def __init__(self) -> None:
        super().__init__(10, 60.0)
        self.reads = 0

    def since(
        self,
        seq: int,
        last_seq: int,
        ticker_filter: TickerFilter,
        now: float,
        limit: int | None = None,
    ) -> list[StreamItem[str]] | None:
        self.reads += 1
        return super().since(seq, last_seq, ticker_filter, now, limit)


def test_the_resume_window_is_a_backend_the_engine_is_given() -> None:
    backend = CountingHistory()
    stream: Stream[str] = Stream(epoch="e1", history=backend)
    publish(stream, make_quote("AAPL", 1), make_quote("AAPL", 2))
    assert len(backend) == 2
    sub = stream.open(TickerFilter(), Mode.FIFO, RESUME_E1_1, 0.0)
    assert backend.reads == 1
    assert out(stream, sub) == ["recovered", "AAPL#2"]
    stream.new_epoch()
    assert len(backend) == 0


def at(stream: Stream[str], q: Quote, seq: int, epoch: str = "e1") -> list[object]:
    return list(stream.publish_at(q, encode_quote(q), seq, epoch, 0.0))


def test_positions_assigned_elsewhere_are_taken_as_given() -> None:
    """The deployment's positions: duplicates ignored, a hole ends resumes, an epoch restarts."""
    stream: Stream[str] = Stream(epoch="e1")
    live = stream.open(TickerFilter(), Mode.FIFO, StreamOptions(seq=True), 0.0)
    at(stream, make_quote("AAPL", 1), 41)  # the first position: a hole before it
    at(stream, make_quote("MSFT", 2), 42)
    assert at(stream, make_quote("MSFT", 2), 42) == []  # already published: ignored
    frames, quotes = render(live.take(0.0), live.options, TEXT_CODEC)
    assert [json.loads(x)["seq"] for x in frames] == [41, 42]
    resume = StreamOptions(seq=True, since=Position("e1", 41))
    assert out(stream, stream.open(TickerFilter(), Mode.FIFO, resume, 0.0)) == [
        "recovered",
        "MSFT#2",
    ]
    at(stream, make_quote("AAPL", 3), 45)  # 43 and 44 never arrived here
    lost = stream.open(TickerFilter(), Mode.FIFO, resume, 0.0)
    frames, quotes = render(lost.take(0.0), lost.options, TEXT_CODEC)
    assert (json.loads(frames[0])["recovered"], quotes) == (False, 0)  # not across the hole
    at(stream, make_quote("AAPL", 4), 7, epoch="e2")  # a new epoch may restart positions
    assert (stream.epoch, stream.seq, len(stream.history)) == ("e2", 7, 1)


def test_a_restored_window_answers_resumes_and_snapshots() -> None:
    stream: Stream[str] = Stream(epoch="local")
    quotes = [make_quote("AAPL", 1), make_quote("MSFT", 2), make_quote("AAPL", 3)]
    items = [
        StreamItem(10 + i, "dep", q.ticker, encode_quote(q), 0.0) for i, q in enumerate(quotes)
    ]
    stream.restore("dep", 12, items)
    assert (stream.epoch, stream.seq) == ("dep", 12)
    resume = StreamOptions(seq=True, since=Position("dep", 10), snapshot=True)
    assert out(stream, stream.open(f("AAPL"), Mode.FIFO, resume, 0.0)) == ["recovered", "AAPL#3"]
    snap = stream.open(f("AAPL", "MSFT"), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    assert out(stream, snap) == ["MSFT#2", "AAPL#3"]


def test_a_resume_from_a_position_not_reached_yet_is_told_to_wait() -> None:
    stream: Stream[str] = Stream(epoch="e1")
    at(stream, make_quote("AAPL", 1), 5)
    ahead = StreamOptions(seq=True, since=Position("e1", 7))
    assert stream.position_ahead(ahead) == 7
    assert stream.position_ahead(StreamOptions(seq=True, since=Position("e1", 5))) is None
    assert stream.position_ahead(StreamOptions(seq=True, since=Position("e0", 9))) is None
    assert stream.position_ahead(StreamOptions()) is None
    at(stream, make_quote("AAPL", 2), 6)
    at(stream, make_quote("AAPL", 3), 7)
    assert stream.position_ahead(ahead) is None
    reached = stream.open(TickerFilter(), Mode.FIFO, ahead, 0.0)
    assert json.loads(render(reached.take(0.0), reached.options, TEXT_CODEC)[0][0])["recovered"]
    from quotes_core.engine import AHEAD_LIMIT

    forged = StreamOptions(seq=True, since=Position("e1", 7 + AHEAD_LIMIT + 1))
    assert stream.position_ahead(forged) is None  # never given: not waited for


def test_a_plain_feed_reaches_plain_clients_before_positions_and_openings_stay_whole() -> None:
    """
    ``plain_feed``: plain clients get the upstream's quotes at once (publish_plain);
    positions, the window, the snapshot and every client with an opening follow the
    deployment's flow (publish_at), so a snapshot and the live quotes after it never
    come from two flows.
    """
    stream: Stream[str] = Stream(epoch="e1", plain_feed=True)
    plain = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(), 0.0)
    q1 = make_quote("AAPL", 1)
    stream.publish_plain(q1, encode_quote(q1))
    assert out(stream, plain) == ["AAPL#1"]  # no sequencer needed
    assert (stream.seq, len(stream.history), stream.snapshot.get("AAPL")) == (0, 0, None)
    snap = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    assert snap.hub is stream.sequenced
    at(stream, q1, 1)  # the deployment's position arrives
    assert out(stream, plain) == []  # not twice
    assert out(stream, snap) == ["AAPL#1"]  # live on the snapshot client's flow
    assert stream.snapshot.get("AAPL") is not None
    later = stream.open(f("AAPL"), Mode.FIFO, StreamOptions(snapshot=True), 0.0)
    assert out(stream, later) == ["AAPL#1"]  # from the snapshot
