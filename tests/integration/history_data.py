"""Days of candles of every interval for a coin of a test's own, published as a back-fill publishes them and stored
by the test namespace's candle sink: what the history tests chart and page through."""

from __future__ import annotations

import time
from collections import defaultdict

from pymongo import MongoClient

from cryptopulse.candle import INTERVALS, Candle, bucket_of
from cryptopulse.settings import Settings
from cryptopulse.store import candle_collection
from cryptopulse.times import DAY_MS, MINUTE_MS
from producer.sources.simulated import simulated_history
from streams.cascade import aggregate
from streams.history import CandlePublisher
from tests.integration.conftest import wait_for


def roll_up(minutes: list[Candle], interval: str, now: int) -> list[Candle]:
    """The candles of `interval` made of `minutes`, as the cascade makes them: the bucket holding `now` open."""
    buckets: dict[int, list[Candle]] = defaultdict(list)
    for minute in minutes:
        buckets[bucket_of(minute.start, interval)].append(minute)
    return [aggregate(m[0].symbol, m[0].source, interval, start, m, final=start != bucket_of(now, interval))
            for start, m in sorted(buckets.items())]


def publish_history(settings: Settings, mongo: MongoClient, symbol: str, days: float,
                    timeout: float = 300) -> dict[str, list[Candle]]:
    """`days` of 1-minute candles of `symbol` ending with the current minute, and every coarser interval rolled up
    from them, on the candle topics; returns them per interval once MongoDB holds them all."""
    now = int(time.time() * 1000)
    end = now - now % MINUTE_MS + MINUTE_MS
    minutes = simulated_history(symbol, end // 1000, end - int(days * DAY_MS), end)
    candles = {"1m": minutes, **{i: roll_up(minutes, i, now) for i in INTERVALS[1:]}}
    CandlePublisher(settings).publish([c for interval in INTERVALS for c in candles[interval]], timeout=120)
    database = mongo[settings.database]
    for interval in INTERVALS:
        wait_for(lambda i=interval: database[candle_collection(i)].count_documents({"symbol": symbol})
                 == len(candles[i]), timeout, f"{len(candles[interval])} {interval} candles of {symbol} in MongoDB")
    return candles


def as_row(candle: Candle) -> list[float | int | None]:
    """A candle as the history API's row: time, open, high, low, close, volume."""
    return [candle.start, candle.open, candle.high, candle.low, candle.close, candle.volume]
