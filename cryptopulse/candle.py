"""The one candle type: a time bucket of one (symbol, source), made by the roll-up or read from an exchange."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptopulse.tick import Tick
from cryptopulse.times import MINUTE_MS

INTERVAL = "1m"


def candle_id(symbol: str, source: str, start: int, interval: str = INTERVAL) -> str:
    """The candle's `_id` and Kafka key: `symbol|source|interval|start_ms`."""
    return f"{symbol}|{source}|{interval}|{start}"


@dataclass(slots=True)
class Candle:
    """One minute of one (symbol, source) (schemas/candle.avsc).

    `origin` says where it comes from: "ticks" (rolled up by `streams`; `ticks` counts distinct tick times,
    `final` once its minute closed) or "ohlc" (an exchange's history: final, `ticks` 0, `volume` what traded
    in the minute in the quote currency). `volume_24h` is the rolling 24 h total at the close where a source
    says it; it is not part of the record.
    """

    symbol: str
    source: str
    start: int  # bucket start, epoch milliseconds (UTC)
    open: float
    high: float
    low: float
    close: float
    ticks: int = 0
    volume: float | None = None
    origin: str = "ticks"
    final: bool = False
    interval: str = INTERVAL
    quote: str = "USD"
    volume_24h: float | None = None

    @classmethod
    def ohlc(cls, symbol: str, source: str, start: int, open_: float, high: float, low: float, close: float,
             volume: float | None, quote: str = "USD", volume_24h: float | None = None) -> Candle:
        """An exchange's closed candle."""
        return cls(symbol, source, start, open_, high, low, close, 0, volume, "ohlc", True, INTERVAL, quote,
                   volume_24h)

    @property
    def id(self) -> str:
        return candle_id(self.symbol, self.source, self.start, self.interval)

    @property
    def close_ms(self) -> int:
        """The last millisecond of the minute (Binance's close time): when `close` was the price."""
        return self.start + MINUTE_MS - 1

    def tick(self) -> Tick:
        """The close as a `Tick`, so a caller that stores only ticks treats every source alike."""
        return Tick(self.symbol, self.source, self.close_ms, self.close, self.quote, volume_24h=self.volume_24h)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schemas/candle.avsc)."""
        return {"_id": self.id, "symbol": self.symbol, "source": self.source, "interval": self.interval,
                "start": self.start, "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "ticks": self.ticks, "volume": self.volume, "origin": self.origin, "final": self.final}
