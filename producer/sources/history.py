"""Past market data for back-fills: pages of `Tick`s (and `Candle`s of the interval asked where the API has OHLC).

A back-fill shows progress per symbol and must resume after a crash, so history comes in pages in
time order, each saying up to when its symbol is done (`covered_until_ms`): store the page, then
remember that time, and resume with `history(symbol, covered_until_ms, end_ms, interval)`. Pages are half-open
windows [start, covered_until_ms), so a row an API returns at the boundary of two requests comes once.
Rows that cannot be read, or fail `reject_reason`, are skipped and counted in the source's `rejected`.

Any interval of `cryptopulse.candle.INTERVALS` can be asked for; where a provider's history cannot serve one as
far back as asked (a plan's limit, points too sparse for the interval), `history_reach(interval)` says how far it
reaches and what to do instead, so the back-fill refuses before it fetches anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from cryptopulse.candle import Candle, bucket_of
from cryptopulse.errors import SourceError
from cryptopulse.tick import Tick
from producer.sources import make_source
from producer.sources.base import PAYLOAD_ERRORS, Source
from producer.sources.http import OnWait
from producer.sources.validation import reject_reason

T = TypeVar("T")
# Sources that cannot back-fill, and why; checked before building the source (cmc would first ask for a key).
NO_HISTORY = {"cmc": "CoinMarketCap's free plan has no historical quotes; back-fill from coingecko, binance, "
                     "coinbase or simulated"}


@dataclass(frozen=True, slots=True)
class HistoryReach:
    """How far back a source's history serves candles of one interval: `days` before now, because `why`; what to
    do for more: `instead`."""

    days: float
    why: str
    instead: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One symbol's history for [previous page's covered_until_ms, covered_until_ms), oldest first.

    `points` are always filled (for OHLC sources: each candle's close); `candles` (of the interval asked) is None
    for sources whose history is points (coingecko). A page may be empty (no trades, or an API gap); it still
    moves `covered_until_ms` on.
    """

    symbol: str
    points: list[Tick]
    candles: list[Candle] | None
    covered_until_ms: int


class HistorySource(Protocol):
    """What `history_source` returns: a source that can also page through its past."""

    name: str
    symbols: list[str]
    rejected: int

    def history(self, symbol: str, start_ms: int, end_ms: int, interval: str = "1m") -> AsyncIterator[HistoryPage]:
        """Pages covering [start_ms, end_ms) in time order, with candles of `interval` (points: as fine as
        `interval` needs)."""
        ...

    def history_reach(self, interval: str) -> HistoryReach | None:
        """How far back `history` serves `interval`; None: as far as the provider has data."""
        ...


def history_source(name: str, symbols: list[str], *, on_wait: OnWait | None = None, **options: Any) -> HistorySource:
    """The source `name` (as `make_source` builds it) for `history()`; `on_wait(seconds, why)` is called before
    every wait between retries (a rate limit's Retry-After can be minutes), so the caller can show it.

    Raises SourceError for a source without history, ValueError for an unknown name or symbol.
    """
    if name in NO_HISTORY:
        raise SourceError(f"{name}: {NO_HISTORY[name]}")
    if on_wait is not None and name != "simulated":  # the simulated market never waits
        options["on_wait"] = on_wait
    return cast(HistorySource, make_source(name, symbols, **options))


def own_symbol(source: Source, symbol: str) -> str:
    """`symbol` upper-cased, if `source` was built for it (its names for the symbol were checked then)."""
    symbol = symbol.strip().upper()
    if symbol not in source.symbols:
        raise ValueError(f"{source.name} was built for {', '.join(source.symbols)}, not {symbol}; "
                         f"build it with {symbol} in its symbols")
    return symbol


def windows(start_ms: int, end_ms: int, size_ms: int) -> Iterator[tuple[int, int]]:
    """[start, end) cut into consecutive windows of at most `size_ms`: one request (or page) each."""
    for low in range(start_ms, end_ms, size_ms):
        yield low, min(low + size_ms, end_ms)


def read_rows(source: Source, rows: object, read: Callable[[Any], T]) -> list[T]:
    """`read` applied to each row of a JSON array; unreadable rows (or a reply that is no array) skipped, counted."""
    if not isinstance(rows, list):
        source._skip(rows, TypeError("expected a JSON array of rows"))
        return []
    out = []
    for row in rows:
        try:
            out.append(read(row))
        except PAYLOAD_ERRORS as e:
            source._skip(row, e)
    return out


def candle_reject_reason(candle: Candle, now_ms: int) -> str | None:
    """Why `candle` must not be stored (the tick rules for each price and its volume, or a low above a high)."""
    for price in (candle.open, candle.high, candle.low, candle.close):
        tick = Tick(candle.symbol, candle.source, candle.close_ms, price, candle.quote, candle.volume)
        if reason := reject_reason(tick, now_ms):
            return reason
    if reason := reject_reason(candle.tick(), now_ms):  # the close as published, with its rolling 24 h volume
        return reason
    ok = candle.low <= min(candle.open, candle.close) and candle.high >= max(candle.open, candle.close)
    return None if ok else "high/low outside open/close"


def tick_page(source: Source, symbol: str, ticks: Iterable[Tick], start_ms: int, until_ms: int,
              now_ms: int) -> HistoryPage:
    """The page for [start_ms, until_ms): one tick per timestamp, oldest first, implausible ones skipped."""
    kept = {t.ts: t for t in ticks if start_ms <= t.ts < until_ms and _plausible(source, t, reject_reason(t, now_ms))}
    return HistoryPage(symbol, [kept[ts] for ts in sorted(kept)], None, until_ms)


def candle_page(source: Source, symbol: str, candles: Iterable[Candle], start_ms: int, until_ms: int,
                now_ms: int, interval: str = "1m") -> HistoryPage:
    """Like `tick_page` for candles of `interval`; the bucket `now_ms` is in has not closed yet, so it and later
    ones are left for the next back-fill (and `covered_until_ms` stops before them). A candle that does not start
    on a bucket of `interval` (a mirror's other time zone, a wrong interval) is skipped and counted."""
    until_ms = max(start_ms, min(until_ms, bucket_of(now_ms, interval)))
    kept = {c.start: c for c in candles
            if start_ms <= c.start < until_ms and _plausible(source, c, _candle_reason(c, interval, now_ms))}
    ordered = [kept[start] for start in sorted(kept)]
    return HistoryPage(symbol, [c.tick() for c in ordered], ordered, until_ms)


def _candle_reason(candle: Candle, interval: str, now_ms: int) -> str | None:
    if candle.interval != interval or bucket_of(candle.start, interval) != candle.start:
        return f"not a {interval} candle (interval {candle.interval}, start {candle.start})"
    return candle_reject_reason(candle, now_ms)


def _plausible(source: Source, item: Tick | Candle, reason: str | None) -> bool:
    if reason:
        source._skip(item, ValueError(reason))
    return reason is None
