"""The simulated market: the offline default source.

A seeded geometric random walk per symbol. The same seed, symbols, start and
interval always give the same ticks, so tests and demos are reproducible, and
every tick says source=simulated so nobody mistakes it for a real price.

History joins the live walk: a walk's start price depends on (seed, symbol) only, and history for
[start, end) is that walk run backwards from the start price as OHLC candles of any interval (with a traded
volume) like an exchange's klines; the last one closes just before `end`. So history up to `end` followed by a
live market starting at `end` is one continuous walk, and every candle is a function of (seed, symbol, interval,
end, its bucket): resuming with a later `start` gives the same candles. A bucket's moves are drawn from its own start
time, so a back-fill ending later is at another level but never repeats the minutes of one that ended earlier.
A minute is 12 steps of 5 seconds; a coarser bucket is 60 steps of a 60th of it (a day: 24-minute steps), with
the same 60 %/year volatility, so a candle's range and the moves between candles are those of one walk seen at that
interval; its volume is the bucket's share of the 24 h volume, give or take, and the 24 h volume itself drifts as
slowly as the live one.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptopulse.candle import INTERVAL_MS, Candle, bucket_at_or_after, bucket_of
from cryptopulse.tick import Tick
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS
from producer.sources.base import Source
from producer.sources.history import HistoryPage, HistoryReach, candle_page, own_symbol, windows

SOURCE = "simulated"

# Rough levels of late 2026, so the demo looks plausible; unknown symbols start at 1.
START_PRICES = {"BTC": 95_000.0, "ETH": 3_400.0, "XRP": 2.2, "SOL": 190.0, "ADA": 0.8, "DOGE": 0.3}
START_VOLUMES = {"BTC": 35e9, "ETH": 18e9, "XRP": 4e9, "SOL": 3e9, "ADA": 0.8e9, "DOGE": 1.5e9}
ANNUAL_VOLATILITY = 0.6
SECONDS_PER_YEAR = 365 * 24 * 3600
HISTORY_PAGE_MS = HOUR_MS  # a page of minutes; a page of a coarser interval holds HISTORY_PAGE_CANDLES
HISTORY_PAGE_CANDLES = 60
HISTORY_STEPS = 12  # 5-second steps in a minute of history
COARSE_STEPS = 60  # steps in a bucket of any coarser interval


@dataclass
class _Walk:
    rng: random.Random
    price: float
    open_24h: float
    volume: float


def _walk(seed: int, symbol: str) -> _Walk:
    """Where the walk of `symbol` starts: the same for every start time, which is what lets history join it."""
    rng = random.Random(f"{seed}:{symbol}")
    price = START_PRICES.get(symbol, 1.0) * math.exp(rng.gauss(0, 0.02))
    return _Walk(rng, price, price, START_VOLUMES.get(symbol, 1e8))


def _sigma(interval_ms: int) -> float:
    """The standard deviation of one step's log-return."""
    return ANNUAL_VOLATILITY * math.sqrt(interval_ms / 1000 / SECONDS_PER_YEAR)


def simulated_history(symbol: str, seed: int, start_ms: int, end_ms: int, interval: str = "1m") -> list[Candle]:
    """Candles of `interval` for its whole buckets within [start_ms, end_ms), oldest first; the newest closes at
    the start price of a live `SimulatedMarket` for `seed` (its first tick, at the end of that bucket, is one step
    away). Each bucket is a number of steps of the walk (`HISTORY_STEPS` for a minute, `COARSE_STEPS` for coarser),
    run backwards from its close."""
    width = INTERVAL_MS[interval]
    steps = HISTORY_STEPS if interval == "1m" else COARSE_STEPS
    walk, sigma = _walk(seed, symbol), _sigma(width // steps)
    # each bucket's own draws, from its start: a back-fill that ends later (after a restart) walks other minutes, never
    # the earlier back-fill's again shifted in time; the live walk's draws stay as they were
    stream = f"{seed}:{symbol}:history:{interval}"
    per_day, spread = DAY_MS / width, 0.5 if interval == "1m" else 0.25  # buckets a day; their volumes' spread
    drift = 0.001 * math.sqrt(width / MINUTE_MS)  # the 24 h volume's random drift over a bucket
    price, volume, candles = walk.price, walk.volume, []
    for start in range(bucket_of(end_ms, interval) - width, bucket_at_or_after(start_ms, interval) - 1, -width):
        close, path, rng = price, [price], random.Random(f"{stream}:{start}")
        for _ in range(steps):
            price /= math.exp(rng.gauss(-0.5 * sigma**2, sigma))  # one live step, undone
            path.append(price)
        traded = volume / per_day * math.exp(rng.gauss(0, spread))  # its share of the 24 h volume, give or take
        candles.append(Candle.ohlc(symbol, SOURCE, start, round(price, 8), round(max(path), 8), round(min(path), 8),
                                   round(close, 8), round(traded, 2), volume_24h=round(volume, 2), interval=interval))
        volume /= math.exp(rng.gauss(0, drift))
    return candles[::-1]


class SimulatedMarket:
    """Ticks for `symbols`, one per symbol every `interval_ms` of event time from `start_ms` on."""

    def __init__(self, symbols: list[str], seed: int, start_ms: int, interval_ms: int = 1000) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.symbols = symbols
        self.start_ms = start_ms
        self.interval_ms = interval_ms
        self._sigma = _sigma(interval_ms)
        self._walks = {symbol: _walk(seed, symbol) for symbol in symbols}

    def ticks(self) -> Iterator[Tick]:
        """An endless stream of ticks in event-time order (round-robin over the symbols)."""
        step = 0
        while True:
            ts = self.start_ms + step * self.interval_ms
            for symbol in self.symbols:
                yield self._next(symbol, ts)
            step += 1

    def _next(self, symbol: str, ts: int) -> Tick:
        walk = self._walks[symbol]
        # Geometric Brownian motion without drift: log-returns are normal.
        walk.price *= math.exp(walk.rng.gauss(-0.5 * self._sigma**2, self._sigma))
        walk.volume = max(walk.volume * math.exp(walk.rng.gauss(0, 0.001)), 0.0)
        return Tick(
            symbol=symbol,
            source=SOURCE,
            ts=ts,
            price=round(walk.price, 8),
            volume_24h=round(walk.volume, 2),
            change_24h_pct=round((walk.price / walk.open_24h - 1) * 100, 4),
        )


class SimulatedSource(Source):
    """The simulated market behind the `Source` interface, so the caller treats it like a real feed.

    Ticks are released when their event time comes (`fast=False`), like a live feed, or at once
    (`fast=True`) for back-fills and load tests; `start_ms` defaults to now.
    """

    name = SOURCE
    known = None  # any symbol gets a walk

    def __init__(self, symbols: Iterable[str], *, seed: int = 42, start_ms: int | None = None, interval_ms: int = 1000,
                 fast: bool = False, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        super().__init__(symbols)
        start_ms = int(clock() * 1000) if start_ms is None else start_ms
        self.market = SimulatedMarket(self.symbols, seed=seed, start_ms=start_ms, interval_ms=interval_ms)
        self.fast, self.clock, self.sleep = fast, clock, sleep
        self.seed = seed

    async def ticks(self) -> AsyncIterator[Tick]:
        for tick in self.market.ticks():
            # sleep(0) in fast mode still lets the rest of the event loop run between ticks
            await self.sleep(0 if self.fast else max(0.0, (tick.ts - self.clock() * 1000) / 1000))
            yield tick

    async def history(self, symbol: str, start_ms: int, end_ms: int,
                      interval: str = "1m") -> AsyncIterator[HistoryPage]:
        """Candles of `interval` that lead into the live walk starting at `end_ms`, a page per hour of minutes
        (per `HISTORY_PAGE_CANDLES` candles of a coarser interval)."""
        symbol = own_symbol(self, symbol)
        candles = simulated_history(symbol, self.seed, start_ms, end_ms, interval)
        page = HISTORY_PAGE_MS if interval == "1m" else HISTORY_PAGE_CANDLES * INTERVAL_MS[interval]
        for low, high in windows(start_ms, end_ms, page):
            await self.sleep(0)  # the candles are computed at once; let the event loop run between pages
            yield candle_page(self, symbol, candles, low, high, int(self.clock() * 1000), interval)

    def history_reach(self, interval: str) -> HistoryReach | None:
        """None: the walk goes back as far as asked, at any interval."""
        return None
