"""The simulated market: the offline default source.

A seeded geometric random walk per symbol. The same seed, symbols, start and
interval always give the same ticks, so tests and demos are reproducible, and
every tick says source=simulated so nobody mistakes it for a real price.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from producer.sources.base import Source
from producer.tick import Tick

SOURCE = "simulated"

# Rough levels of late 2026, so the demo looks plausible; unknown symbols start at 1.
START_PRICES = {"BTC": 95_000.0, "ETH": 3_400.0, "XRP": 2.2, "SOL": 190.0, "ADA": 0.8, "DOGE": 0.3}
START_VOLUMES = {"BTC": 35e9, "ETH": 18e9, "XRP": 4e9, "SOL": 3e9, "ADA": 0.8e9, "DOGE": 1.5e9}
ANNUAL_VOLATILITY = 0.6
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass
class _Walk:
    rng: random.Random
    price: float
    open_24h: float
    volume: float


class SimulatedMarket:
    """Ticks for `symbols`, one per symbol every `interval_ms` of event time from `start_ms` on."""

    def __init__(self, symbols: list[str], seed: int, start_ms: int, interval_ms: int = 1000) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.symbols = symbols
        self.start_ms = start_ms
        self.interval_ms = interval_ms
        self._sigma = ANNUAL_VOLATILITY * math.sqrt(interval_ms / 1000 / SECONDS_PER_YEAR)
        self._walks = {}
        for symbol in symbols:
            rng = random.Random(f"{seed}:{symbol}")
            price = START_PRICES.get(symbol, 1.0) * math.exp(rng.gauss(0, 0.02))
            self._walks[symbol] = _Walk(rng, price, price, START_VOLUMES.get(symbol, 1e8))

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

    async def ticks(self) -> AsyncIterator[Tick]:
        for tick in self.market.ticks():
            # sleep(0) in fast mode still lets the rest of the event loop run between ticks
            await self.sleep(0 if self.fast else max(0.0, (tick.ts - self.clock() * 1000) / 1000))
            yield tick
