"""The simulated market: the offline default source.

A seeded geometric random walk per symbol. The same seed, symbols, start and
interval always give the same ticks, so tests and demos are reproducible, and
every tick says source=simulated so nobody mistakes it for a real price.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

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
