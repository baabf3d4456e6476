"""
What a stream connection gets when it opens, before its live quotes.

A client that asked for ``since=<epoch>:<seq>`` first gets a ``recovered`` control
frame, then the quotes it missed (a *replay*) when they can be replayed, or the
snapshot when it asked for one and they cannot; a client that asked for
``snapshot=1`` alone gets the snapshot. :func:`opening` decides which, the same
way for every server (``quotes-server`` and the scripted test server), in the same
synchronous step as the subscription, so nothing is lost or sent twice.

A replay is bounded: one that would hold more than ``replay_limit`` quotes, or
more than ``replay_bytes`` bytes of payload, is answered like one the window
cannot serve (``recovered: false``, then the snapshot when asked), so a resume
request never costs a server more than those bounds.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TypeVar

from quotes_core.actions import recovered_event
from quotes_core.history import HistoryBackend, StreamItem
from quotes_core.query import StreamOptions
from quotes_core.snapshot import Snapshot
from quotes_core.tickers import TickerFilter

__all__ = ["DEFAULT_QUEUE_BYTES", "DEFAULT_REPLAY_LIMIT", "Opening", "opening"]

S = TypeVar("S", bound=Sized)

DEFAULT_REPLAY_LIMIT = 2000
"""Most quotes one resume replays by default; past it the answer is ``recovered: false``."""

DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
"""Most bytes a server queues for one client by default, outside the hub's bounded
buffer (replay, snapshot, control replies); a replay must fit in it."""

Opening = tuple[str | None, list[StreamItem[S]]]
"""The ``recovered`` control frame (``None`` without ``since``) and the quotes to send first."""


def opening(
    options: StreamOptions,
    ticker_filter: TickerFilter,
    history: HistoryBackend[S],
    snapshot: Snapshot[S],
    *,
    epoch: str,
    last_seq: int,
    now: float,
    replay_limit: int = DEFAULT_REPLAY_LIMIT,
    replay_bytes: int = DEFAULT_QUEUE_BYTES,
) -> Opening[S]:
    """
    The control frame and the quotes a new connection gets before its live stream.

    Args:
        options: what the client asked for at the handshake.
        ticker_filter: the client's filter.
        history: the resume window.
        snapshot: the latest quote of every ticker.
        epoch: the stream's current epoch.
        last_seq: the newest position published in it.
        now: the current time, on the history's clock.
        replay_limit: most quotes a replay may hold.
        replay_bytes: most payload bytes (``len`` of each payload) a replay may hold.
    """
    since = options.since
    if since is None:
        return None, snapshot.select(ticker_filter) if options.snapshot else []
    replay = None
    if since.epoch == epoch:
        replay = history.since(since.seq, last_seq, ticker_filter, now, replay_limit)
        if replay is not None and sum(len(i.payload) for i in replay) > replay_bytes:
            replay = None
    event = recovered_event(replay is not None, epoch, last_seq)
    if replay is not None:
        return event, replay
    return event, snapshot.select(ticker_filter) if options.snapshot else []
