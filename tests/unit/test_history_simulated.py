"""Simulated history: deterministic, resumable, and one continuous walk with the live market after it."""

from __future__ import annotations

import math
import statistics
from itertools import islice

import pytest

from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_of
from producer.sources.simulated import ANNUAL_VOLATILITY, SECONDS_PER_YEAR, SimulatedMarket, SimulatedSource
from tests.fakes import Sleeps, run

END = 1_748_865_600_000
DAY, HOUR, MINUTE = 86_400_000, 3_600_000, 60_000


def history(symbol: str = "BTC", start: int = END - DAY, end: int = END, seed: int = 42, interval: str = "1m",
            **options):
    source = SimulatedSource(["BTC", "ETH"], seed=seed, clock=lambda: END / 1000, sleep=Sleeps(), **options)

    async def collect():
        return [page async for page in source.history(symbol, start, end, interval)]

    return run(collect())


def test_a_day_is_a_candle_a_minute_in_hourly_pages_with_its_close_as_a_tick():
    pages = history()
    assert [p.covered_until_ms for p in pages] == [END - DAY + k * HOUR for k in range(1, 25)]
    candles = [c for p in pages for c in p.candles]
    ticks = [t for p in pages for t in p.points]
    assert [c.start for c in candles] == list(range(END - DAY, END, MINUTE))
    assert all(len(p.candles) == len(p.points) == 60 for p in pages)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
    assert sum(c.high > c.low for c in candles) == len(candles)  # a minute of a walk moves: real candles
    assert all(c.volume > 0 and c.volume_24h > c.volume for c in candles)
    assert [(t.ts, t.price, t.volume_24h) for t in ticks] == [(c.close_ms, c.close, c.volume_24h) for c in candles]
    assert all(t.source == "simulated" and t.symbol == "BTC" and t.price > 0 for t in ticks)


def test_history_is_deterministic_per_seed_and_resumes_with_the_same_points():
    ticks = [t for p in history() for t in p.points]
    assert ticks == [t for p in history() for t in p.points]
    assert [t.price for t in ticks] != [t.price for p in history(seed=43) for t in p.points]
    resumed = [t for p in history(start=END - 5 * HOUR) for t in p.points]
    assert resumed == ticks[-5 * 60:]


def test_history_leads_into_the_live_walk_starting_at_its_end():
    for symbol in ("BTC", "ETH"):
        past = [t for p in history(symbol) for t in p.points]
        live = list(islice(SimulatedMarket([symbol], seed=42, start_ms=END).ticks(), 3))
        assert past[-1].ts == END - 1 and live[0].ts == END
        steps = [abs(b.price / a.price - 1) for a, b in zip(past, past[1:], strict=False)]
        join = abs(live[0].price / past[-1].price - 1)
        assert join < 0.001 and join <= max(steps)  # one live step of a second, no jump
        assert abs(live[0].volume_24h / past[-1].volume_24h - 1) < 0.01
        assert 0 < max(steps) < 0.01


def test_each_candle_opens_where_the_one_before_closed_a_step_earlier():
    candles = [c for p in history(start=END - HOUR) for c in p.candles]
    gaps = [abs(b.open / a.close - 1) for a, b in zip(candles, candles[1:], strict=False)]
    assert max(gaps) < 0.002  # one 5-second step of the walk, no jump between minutes


@pytest.mark.parametrize("interval", INTERVALS[1:])
def test_every_interval_is_whole_buckets_of_one_walk_as_volatile_as_the_live_one(interval):
    width, end = INTERVAL_MS[interval], bucket_of(END, interval)
    pages = history(start=end - 300 * width + 1, end=end, interval=interval)  # the first bucket is not whole
    candles = [c for p in pages for c in p.candles]
    assert [c.start for c in candles] == list(range(end - 299 * width, end, width))
    assert [p.covered_until_ms for p in pages][-1] == end and all(len(p.candles) <= 60 for p in pages)
    assert all(c.interval == interval and c.origin == "ohlc" and c.final for c in candles)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high and c.high > c.low for c in candles)
    moves = [math.log(b.close / a.close) for a, b in zip(candles, candles[1:], strict=False)]
    expected = ANNUAL_VOLATILITY * math.sqrt(width / 1000 / SECONDS_PER_YEAR)
    assert 0.8 < statistics.pstdev(moves) / expected < 1.25  # a walk with the live market's volatility
    opens = [abs(b.open / a.close - 1) for a, b in zip(candles, candles[1:], strict=False)]
    assert max(opens) < 4 * expected / math.sqrt(60)  # each opens one step after the one before closed
    shares = [c.volume / (c.volume_24h * width / DAY) for c in candles]
    assert 0.7 < statistics.mean(shares) < 1.4  # the bucket's share of the 24 h volume, give or take
    assert [c.tick() for c in candles] == [t for p in pages for t in p.points]


@pytest.mark.parametrize("interval", INTERVALS)
def test_every_interval_is_deterministic_and_leads_into_the_live_walk(interval):
    width, end = INTERVAL_MS[interval], bucket_of(END, interval)
    candles = [c for p in history(start=end - 20 * width, end=end, interval=interval) for c in p.candles]
    assert candles == [c for p in history(start=end - 20 * width, end=end, interval=interval) for c in p.candles]
    assert candles[-5:] == [c for p in history(start=end - 5 * width, end=end, interval=interval)
                            for c in p.candles]  # a resume gives the same candles
    live = next(iter(SimulatedMarket(["BTC"], seed=42, start_ms=end).ticks()))
    assert abs(live.price / candles[-1].close - 1) < 0.001  # one live step of a second from the last close


def test_a_window_that_does_not_end_on_a_minute_gives_its_whole_minutes_only():
    """A gap between two ticks ends a millisecond before a minute's close: its candles still start on minutes."""
    candles = [c for p in history(start=END - 30 * MINUTE, end=END - 1) for c in p.candles]
    assert [c.start for c in candles] == list(range(END - 30 * MINUTE, END - MINUTE, MINUTE))


def test_a_backfill_ending_later_never_repeats_the_minutes_of_one_ending_earlier():
    """A restart back-fills up to a later end: its minutes are new ones, not the earlier ones shifted (issue 22)."""
    def shapes(end: int) -> dict[tuple[float, ...], int]:  # a minute's moves, whatever its level
        candles = [c for p in history(start=end - 2 * HOUR, end=end) for c in p.candles]
        return {(round(c.open / c.close, 9), round(c.high / c.close, 9), round(c.low / c.close, 9)): c.start
                for c in candles}

    first, later = shapes(END - 41 * MINUTE), shapes(END)
    assert len(first) == len(later) == 120
    assert all(first[shape] == later[shape] for shape in set(first) & set(later))  # only a minute with itself
