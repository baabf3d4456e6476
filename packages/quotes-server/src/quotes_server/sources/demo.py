"""
The built-in demo feed: synthetic random-walk quotes for a few hundred symbols.

Used when no Redis URL is configured (so ``quotes-server`` streams out of the
box) and by ``quotes-publish`` (which stands in for the upstream streamer).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from quotes_core import format_timestamp
from quotes_server.sources import Sink, SourceState

__all__ = ["SYMBOLS", "DemoFeed", "DemoSource"]

# Real, widely known symbols (US large caps, ETFs, indices, FX and crypto pairs).
SYMBOLS: tuple[str, ...] = tuple(
    """
     AAPL MSFT GOOGL GOOG AMZN NVDA META TSLA BRK.B BRK.A JPM V MA UNH XOM JNJ WMT PG HD
     CVX LLY AVGO MRK ABBV KO PEP COST ORCL BAC ADBE CRM TMO MCD CSCO ACN NFLX ABT DHR
     LIN WFC DIS AMD TXN PM NEE VZ CMCSA INTC UPS RTX HON QCOM BMY LOW SPGI UNP AMGN IBM
     INTU CAT GS SBUX BA GE DE PLD MS ISRG NOW BLK ELV AMAT MDT LMT GILD T AXP SYK BKNG
     ADI MDLZ TJX CVS C CB MMC ADP VRTX SCHW PGR REGN LRCX MO ZTS SO CI ETN BSX EOG FI
     DUK SLB BDX NOC ITW AON CME PANW MU KLAC SNPS CDNS WM CSX HUM ICE APD SHW CL MCK
     EQIX FCX PYPL MPC ORLY PSX USB TGT GD EMR PNC NSC MAR APH ROP HCA AJG MCO CMG NXPI
     AZO PH TT MSI ECL AIG ADSK TDG PSA CARR MET SRE WELL TRV OKE KMB CTAS PCAR F GM DXCM
     AFL FTNT O MCHP HLT ROST TEL DLR NUE KMI IQV JCI PAYX STZ BK SPG MNST ALL AMP LHX
     KDP YUM KHC COF CPRT EW OXY IDXX GIS MSCI PRU ODFL CTVA FAST DOW HES CMI EXC PCG AME
     VRSK A GWW KR CNC OTIS DD CSGP SYY LULU IT BKR XEL ED FANG EA DG VICI MLM ACGL HAL
     ON ROK DVN CDW GEHC PPG RMD EFX IR MTD WEC KEYS DAL BIIB TSCO WTW FICO DFS ANSS FTV
     TTWO HPQ GPN EBAY CBRE XYL HSY AWK ZBH NVR CAH BR DOV CHD WST STT TROW GRMN BF-B
     BF.B SPY QQQ IWM DIA VTI VOO GLD SLV TLT HYG XLF XLK XLE XLV XLY XLI XLP XLU ^GSPC
     ^DJI ^IXIC ^RUT ^VIX EURUSD=X GBPUSD=X USDJPY=X AUDUSD=X USDCAD=X BTC-USD ETH-USD
     SOL-USD ES=F NQ=F CL=F GC=F SI=F ZN=F ZB=F SHOP SQ UBER ABNB SNOW PLTR COIN RBLX
     DDOG ZS CRWD NET MDB OKTA TEAM TWLO DOCU ZM ROKU PINS SNAP SPOT SE MELI
    """.split()
)


@dataclass
class _Walk:
    ticker: str
    open: float
    high: float
    low: float
    close: float
    volume: int


class DemoFeed:
    """
    A deterministic-when-seeded random walk producing raw quote messages.

    Args:
        tickers: how many symbols to quote (real symbols first, then synthetic
            ``SYMnnn`` ones if more are asked for than :data:`SYMBOLS` holds).
        seed: seed of the random walk; ``None`` for a fresh one.
    """

    def __init__(self, tickers: int = 300, seed: int | None = None) -> None:
        if tickers < 1:
            raise ValueError("tickers must be at least 1")
        self._rng = random.Random(seed)
        names = list(SYMBOLS[:tickers])
        names += [f"SYM{i:03d}" for i in range(tickers - len(names))]
        self._walks = []
        for name in names:
            price = round(self._rng.uniform(5, 900), 2)
            self._walks.append(_Walk(name, price, price, price, price, 0))

    @property
    def tickers(self) -> list[str]:
        """The symbols this feed quotes."""
        return [w.ticker for w in self._walks]

    def next_message(self, now: datetime | None = None) -> bytes:
        """The next quote of a random symbol, as raw JSON bytes (like the upstream's)."""
        rng = self._rng
        w = self._walks[rng.randrange(len(self._walks))]
        w.close = max(0.01, round(w.close * (1 + rng.gauss(0, 0.0005)), 2))
        w.high = max(w.high, w.close)
        w.low = min(w.low, w.close)
        w.volume += rng.randrange(1, 500) * 100
        spread = max(0.01, round(w.close * 0.0002, 2))
        msg = {
            "ticker": w.ticker,
            "timestamp": format_timestamp(now or datetime.now(UTC)),
            "open": w.open,
            "high": w.high,
            "low": w.low,
            "close": w.close,
            "volume": w.volume,
            "bid": round(w.close - spread, 2),
            "ask": round(w.close + spread, 2),
        }
        return json.dumps(msg, separators=(",", ":")).encode()


class DemoSource:
    """
    The demo feed as a :class:`~quotes_server.sources.QuoteSource` (always up).

    Messages are paced on a fixed schedule of ``rate`` per second, in small bursts
    so the event loop is not woken thousands of times a second.
    """

    name = "demo"
    assigns_positions = False

    def __init__(self, rate: float = 200.0, tickers: int = 300, seed: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.feed = DemoFeed(tickers, seed)

    @property
    def state(self) -> SourceState:
        return SourceState.UP

    @property
    def reconnects(self) -> int:
        return 0  # nothing to reconnect to

    @property
    def interest(self) -> None:
        return None  # every ticker, always

    @property
    def sequencing(self) -> None:
        return None

    async def run(self, sink: Sink) -> None:
        sink.on_state(SourceState.UP)
        tick = max(0.01, min(0.1, 1.0 / self.rate))
        start = time.monotonic()
        sent = 0
        while True:
            due = int((time.monotonic() - start) * self.rate) + 1
            # after a long stall, skip ahead instead of bursting the backlog
            sent = max(sent, due - int(self.rate))
            while sent < due:
                sink.on_message(self.feed.next_message())
                sent += 1
            await asyncio.sleep(tick)
