"""
The client's side of the stream protocol, sans I/O: frames in; quotes, events and
replies out.

:class:`ClientEngine` keeps what a client knows about its stream between and across
connections: the filter (and whether the next connection must ask for it), the
options, the resume position and its gaps. It builds each connection's URL
(:meth:`ClientEngine.next_url`), turns each frame into what the application sees
(:meth:`ClientEngine.feed`), and applies the filter changes the server confirms.
No sockets, tasks or clocks: :class:`~quotes_client.QuotesClient` moves the frames
and keeps time, as quotes-server does around quotes-core's stream engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from quotes_client.errors import ActionRejected
from quotes_client.events import ConnectionEvent, FilterChanged, Gap
from quotes_client.filters import change_filter, requested
from quotes_client.protocol import (
    Action,
    OtherControl,
    Pong,
    ProtocolOptions,
    Recovered,
    ServerError,
    Subscribed,
    WireQuote,
    decode_frame,
    encode_action,
)
from quotes_client.resume import ResumeTracker
from quotes_client.urls import stream_url, with_params
from quotes_core import InvalidQuote, Quote, QuotesError, TickerFilter
from quotes_core.query import parse_tickers_param

__all__ = ["Answer", "ClientEngine", "Output"]

logger = logging.getLogger("quotes_client")


@dataclass(frozen=True, slots=True)
class Answer:
    """The server's answer to the oldest unanswered filter change."""

    result: TickerFilter | ActionRejected
    """The whole filter now (``subscribed``), or why the change was refused."""


Output = Quote | InvalidQuote | ConnectionEvent | Answer
"""What a frame gives, in order: a quote for the application, a message that is not
one (to count and log), an event (``Gap``, ``Recovered``, ``ServerError``,
``FilterChanged``), or an answer to a filter change."""


class ClientEngine:
    """
    One client's protocol state.

    Args:
        url: the stream URL (its ``tickers`` and ``mode`` are read here).
        tickers: tickers to put in the URL (``None``: the URL's own).
        options: the opt-in stream options.
    """

    def __init__(
        self,
        url: str,
        tickers: Iterable[str] | str | None = None,
        options: ProtocolOptions | None = None,
    ) -> None:
        self.options = options if options is not None else ProtocolOptions()
        self.base_url = stream_url(url, tickers)
        query = parse_qs(urlsplit(self.base_url).query, keep_blank_values=True)
        try:
            self.filter: TickerFilter | None = parse_tickers_param(query.get("tickers", []))
        except QuotesError:
            self.filter = None  # the server will say why (400); no live changes then
        self.filter_changed = False
        """True once the filter differs from the URL's: later connections ask for it."""
        self.latest_mode = any(m.lower() == "latest" for m in query.get("mode", []))
        self.tracker = ResumeTracker() if self.options.resume else None
        """The resume position and gap counters (``resume=True`` only)."""
        self._asked: TickerFilter | None = None
        self._resuming = False

    # -- connections -------------------------------------------------------------

    def next_url(self) -> str:
        """The URL of the next connection: the filter, the options, ``since=`` if any."""
        params: dict[str, str | None] = {}
        if self.filter_changed and self.filter is not None:
            params["tickers"] = self.filter.to_query()
        params.update(self.options.params(self.since))
        return with_params(self.base_url, params)

    @property
    def since(self) -> str | None:
        """The ``since`` value the next connection sends (resume), or ``None``."""
        return self.tracker.since if self.tracker is not None else None

    @property
    def position(self) -> tuple[str, int] | None:
        """With ``resume``: the server's epoch and the highest seq received in it."""
        tracker = self.tracker
        if tracker is None or tracker.epoch is None or tracker.seq is None:
            return None
        return tracker.epoch, tracker.seq

    def connecting(self) -> str:
        """A connection attempt starts: its URL (what it asks for is remembered)."""
        self._asked = self.filter
        self._resuming = self.since is not None
        return self.next_url()

    def connected(self) -> str | None:
        """
        The connection attempt succeeded. Returns the action text to send at once when
        the filter changed while the handshake was under way (an answer will come).
        """
        if self.tracker is not None:
            # a snapshot without since= has no end marker: its older seqs are no gaps
            snapshot_first = self.options.snapshot and not self._resuming
            self.tracker.start(
                contiguous=self.contiguous() and not snapshot_first, resuming=self._resuming
            )
        if self.filter is not None and self.filter != self._asked:
            return encode_action("set", self.filter.tickers)
        return None

    def contiguous(self) -> bool:
        """True when every quote the server publishes reaches this client (a seq jump is a loss)."""
        return (
            self.filter is not None
            and self.filter.is_all
            and self.options.max_hz is None
            and not self.latest_mode
        )

    # -- filter changes ------------------------------------------------------------

    def change(
        self, action: Action, tickers: Iterable[str] | str | None
    ) -> tuple[TickerFilter, str]:
        """
        The filter ``action`` would give, and the action text that asks for it.

        Raises:
            ValueError: no tickers for ``subscribe``/``unsubscribe``, the URL's own
                ``tickers`` is invalid, or nothing would be left.
            quotes_core.InvalidTickers: a symbol is invalid, or too many in total.
        """
        if tickers is None and action != "set":
            raise ValueError(f"{action}() needs tickers")
        symbols = requested(tickers)
        if self.filter is None:
            raise ValueError("the URL's own tickers parameter is invalid: fix it first")
        return change_filter(self.filter, action, symbols), encode_action(action, symbols.tickers)

    def set_filter(self, new: TickerFilter) -> None:
        """Follow ``new`` from now on (confirmed, or for the next connection to ask)."""
        if new == self.filter:
            return
        self.filter_changed = True
        self.filter = new
        if self.tracker is not None:
            # with snapshot, newly added tickers start with older seqs: no checking
            self.tracker.restart(contiguous=self.contiguous() and not self.options.snapshot)

    # -- frames ------------------------------------------------------------------------

    def feed(self, raw: bytes) -> list[Output]:
        """What one frame gives, in order (see :data:`Output`)."""
        tracker = self.tracker
        out: list[Output] = []
        for item in decode_frame(raw, tracker is not None, self.options.batch):
            if isinstance(item, WireQuote):
                if tracker is not None:
                    gap = tracker.on_quote(item.seq, item.epoch)
                    if gap is not None:
                        out.append(gap)
                out.append(item.quote)
            elif isinstance(item, InvalidQuote):
                out.append(item)
            else:
                self._control(item, out)
        return out

    def _control(
        self,
        frame: Subscribed | Recovered | ServerError | Pong | OtherControl,
        out: list[Output],
    ) -> None:
        match frame:
            case Subscribed(filter=new):
                self.set_filter(new)
                out.append(Answer(new))
                out.append(FilterChanged(new))
            case ServerError(code=code, message=message):
                out.append(Answer(ActionRejected(code, message)))
                out.append(frame)
            case Recovered(recovered=recovered, epoch=epoch, seq=seq):
                gap: Gap | None = None
                if self.tracker is not None:
                    gap = self.tracker.on_recovered(recovered, epoch, seq)
                out.append(frame)
                if gap is not None:
                    out.append(gap)
            case _:
                logger.debug("quotes-client: ignored a control frame: %r", frame)
