"""The one candle type: a time bucket of one (symbol, source) at one interval, made by the roll-ups or read from an
exchange; and the intervals, from 1 minute to 1 week, each rolled up from the one below it (docs/rollups.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptopulse.tick import Tick
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS, epoch_ms

INTERVAL = "1m"  # the finest: rolled up from ticks

# Every interval, finest first, with its width. Each is a whole number of the one before it, so each is rolled up
# from the one below: 5 x 1m, 3 x 5m, 4 x 15m, 4 x 1h, 6 x 4h, 7 x 1d.
INTERVAL_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "1h": HOUR_MS, "4h": 4 * HOUR_MS,
               "1d": DAY_MS, "1w": 7 * DAY_MS}
INTERVALS = tuple(INTERVAL_MS)
# Weeks start on Monday 00:00 UTC, as exchanges' and TradingView's weekly candles do; 1970-01-01 was a Thursday,
# so a week bucket is offset by 4 days from the epoch. Every other bucket starts at a multiple of its width.
WEEK_OFFSET_MS = 4 * DAY_MS


def parent_of(interval: str) -> str | None:
    """The interval rolled up from `interval` (None for the coarsest)."""
    i = INTERVALS.index(interval)
    return INTERVALS[i + 1] if i + 1 < len(INTERVALS) else None


def child_of(interval: str) -> str | None:
    """The interval `interval` is rolled up from (None for 1m, which is rolled up from ticks)."""
    i = INTERVALS.index(interval)
    return INTERVALS[i - 1] if i else None


def bucket_of(ts: int, interval: str) -> int:
    """The start of the `interval` bucket holding `ts` (epoch ms, floor, right before 1970 too)."""
    width = INTERVAL_MS[interval]
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return ts - (ts - offset) % width


def bucket_at_or_after(ts: int, interval: str) -> int:
    """The start of the first whole `interval` bucket starting at or after `ts`."""
    start = bucket_of(ts, interval)
    return start if start == ts else start + INTERVAL_MS[interval]


def buckets_over(start: int, end: int, interval: str) -> range:
    """The starts of the `interval` buckets that overlap [start, end), oldest first."""
    return range(bucket_of(start, interval), end, INTERVAL_MS[interval]) if end > start else range(0)


def candle_id(symbol: str, source: str, start: int, interval: str = INTERVAL) -> str:
    """The candle's `_id` and Kafka key: `symbol|source|interval|start_ms`."""
    return f"{symbol}|{source}|{interval}|{start}"


@dataclass(slots=True)
class Candle:
    """One bucket of one (symbol, source) at one interval (schemas/candle.avsc).

    `origin` says where it comes from: "ticks" (rolled up by `streams`, from ticks or from candles that were;
    `ticks` counts distinct tick times, `final` once its bucket closed) or "ohlc" (an exchange's history, or rolled
    up from it alone: final, `ticks` 0, `volume` what traded in the bucket in the quote currency). `volume_24h` is
    the rolling 24 h total at the close where a source says it; it is not part of the record.
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
             volume: float | None, quote: str = "USD", volume_24h: float | None = None,
             interval: str = INTERVAL) -> Candle:
        """An exchange's closed candle."""
        return cls(symbol, source, start, open_, high, low, close, 0, volume, "ohlc", True, interval, quote,
                   volume_24h)

    @property
    def id(self) -> str:
        return candle_id(self.symbol, self.source, self.start, self.interval)

    @property
    def end(self) -> int:
        """Where the bucket ends (exclusive), epoch ms."""
        return self.start + INTERVAL_MS[self.interval]

    @property
    def close_ms(self) -> int:
        """The last millisecond of the bucket (Binance's close time): when `close` was the price."""
        return self.end - 1

    def tick(self) -> Tick:
        """The close as a `Tick`, so a caller that stores only ticks treats every source alike."""
        return Tick(self.symbol, self.source, self.close_ms, self.close, self.quote, volume_24h=self.volume_24h)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Candle:
        """The candle in an Avro record (start as epoch ms or a datetime)."""
        return cls(record["symbol"], record["source"], epoch_ms(record["start"]), record["open"], record["high"],
                   record["low"], record["close"], record.get("ticks", 0), record.get("volume"),
                   record.get("origin", "ticks"), record.get("final", True), record.get("interval", INTERVAL))

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schemas/candle.avsc)."""
        return {"_id": self.id, "symbol": self.symbol, "source": self.source, "interval": self.interval,
                "start": self.start, "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "ticks": self.ticks, "volume": self.volume, "origin": self.origin, "final": self.final}


class Child(Protocol):
    """What `aggregate` reads of a child candle (a `Candle`, or what the cascade keeps of one)."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    ticks: int
    origin: str


def aggregate(symbol: str, source: str, interval: str, start: int, children: Iterable[Child], final: bool) -> Candle:
    """The candle of one bucket made of its children (any order; at least one): open of the first, close of the last,
    the highest high, the lowest low, the sum of the ticks, the sum of the volumes when every child has one (a
    partial sum would read as a quiet bucket), origin "ohlc" when every child is an exchange's own candle. It is
    associative, so every interval equals the same aggregation of the minutes it covers, whatever path they took:
    the cascade (streams/cascade.py), a back-fill's roll-ups and an exchange's candles rolled up all use it."""
    ordered = sorted(children, key=lambda c: c.start)
    volumes = [c.volume for c in ordered]
    volume = math.fsum(volumes) if all(v is not None for v in volumes) else None  # type: ignore[arg-type]
    origin = "ohlc" if all(c.origin == "ohlc" for c in ordered) else "ticks"
    return Candle(symbol, source, start, ordered[0].open, max(c.high for c in ordered), min(c.low for c in ordered),
                  ordered[-1].close, sum(c.ticks for c in ordered), volume, origin, final, interval)
