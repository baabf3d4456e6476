"""
Where a client is in the server's stream, and the gaps it has seen: pure state, no I/O.

With ``seq=1`` every quote carries ``seq`` (per server process, strictly
increasing in publication order across all tickers) and ``epoch`` (new when the
process starts or its upstream lost quotes). :class:`ResumeTracker` keeps the
highest ``seq`` of the current epoch, which is what ``since=<epoch>:<seq>``
sends on the next connection, and counts *gaps*:

* the epoch changed (a new server process, or its upstream had an outage);
* the server answered ``since=`` with ``recovered: false`` (too old, other epoch);
* on a *contiguous* connection (every ticker, no ``max_hz``, FIFO mode: the
  client is meant to see every seq), a seq that jumps over numbers; ``missed``
  adds the numbers jumped over. On other connections a jump is just other
  tickers' quotes (or conflation the client asked for), so it is not a gap.

Snapshot quotes are never gaps: they are the latest quote per ticker, with older
seqs. After ``recovered: false`` the frame's ``seq`` is the server's position at
that moment: quotes at or below it are the snapshot, the live stream continues
right after it. A connection that opens with a snapshot but without ``since=``
has no such marker, so the client marks it not contiguous.
"""

from __future__ import annotations

from quotes_client.events import Gap

__all__ = ["ResumeTracker"]


class ResumeTracker:
    """
    The resume position (epoch, highest seq) and the gap counters of one client.

    Call :meth:`start` when a connection opens, :meth:`on_recovered` with the
    server's ``recovered`` frame and :meth:`on_quote` with each quote's position.
    """

    def __init__(self) -> None:
        self.epoch: str | None = None
        """The epoch of the last quote (or ``recovered`` frame)."""
        self.seq: int | None = None
        """The highest seq seen in :attr:`epoch`."""
        self.gaps = 0
        """Gaps detected (see the module's docstring)."""
        self.missed = 0
        """Seq numbers jumped over on contiguous connections (a lower bound of losses)."""
        self.recovered = 0
        """Resumes the server honoured (``recovered: true``)."""
        self.unrecovered = 0
        """Resumes the server could not honour (``recovered: false``)."""
        self._contiguous = False
        self._chain: int | None = None  # last seq of the contiguous run; None: next one starts it
        self._floor: int | None = None  # seqs up to here are a snapshot (after recovered: false)

    @property
    def since(self) -> str | None:
        """The ``since`` value for the next connection, or ``None`` before the first quote."""
        if self.epoch is None or self.seq is None:
            return None
        return f"{self.epoch}:{self.seq}"

    def start(self, *, contiguous: bool, resuming: bool) -> None:
        """
        A connection opened.

        Args:
            contiguous: every quote the server publishes reaches this connection,
                so a seq jump is a loss.
            resuming: the connection asked ``since=`` :attr:`since`; the replay
                must continue right after :attr:`seq`.
        """
        self._contiguous = contiguous
        self._chain = self.seq if resuming else None
        self._floor = None

    def restart(self, *, contiguous: bool) -> None:
        """
        The filter changed on the open connection: a new run starts with the next quote.

        Args:
            contiguous: whether the connection now receives every quote (and no
                snapshot of newly added tickers comes first).
        """
        self._contiguous = contiguous
        self._chain = None

    def on_recovered(self, recovered: bool, epoch: str | None, seq: int | None) -> Gap | None:
        """The server's answer to ``since=``; returns the gap when it could not replay."""
        if recovered:
            self.recovered += 1
            return None
        self.unrecovered += 1
        self.gaps += 1
        if epoch is not None:
            self.epoch = epoch
        self.seq = seq
        self._chain = seq
        self._floor = seq
        return Gap("unrecovered", None, self.epoch, self.seq)

    def on_quote(self, seq: int | None, epoch: str | None) -> Gap | None:
        """One quote's position (``None``: the server sent none); returns a gap it reveals."""
        if seq is None or epoch is None:
            return None
        if epoch != self.epoch:
            changed = self.epoch is not None
            self.epoch, self.seq, self._chain, self._floor = epoch, seq, seq, None
            if changed:
                self.gaps += 1
                return Gap("epoch", None, epoch, seq)
            return None
        if self.seq is None or seq > self.seq:
            self.seq = seq
        if self._floor is not None and seq <= self._floor:
            return None  # a snapshot quote: older by design
        if not self._contiguous:
            return None
        chain, self._chain = self._chain, seq if self._chain is None else max(self._chain, seq)
        if chain is not None and seq > chain + 1:
            jumped = seq - chain - 1
            self.gaps += 1
            self.missed += jumped
            return Gap("seq", jumped, epoch, seq)
        return None
