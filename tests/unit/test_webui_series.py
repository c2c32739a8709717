"""Bucketing, OHLC, LTTB and side-panel statistics of the dashboard (pure code, no services)."""

from __future__ import annotations

import random

import pytest

from webui.series import (
    DAY_MS,
    CandleRow,
    TickRow,
    bucket_ms_for,
    candles_to_buckets,
    dedupe_seconds,
    lttb,
    series_from_candles,
    series_from_ticks,
    stats_from_candles,
    stats_from_ticks,
    ticks_to_buckets,
)
from webui.timeframes import RANGES_MS


@pytest.mark.parametrize(("range_", "expected"), [("1h", 5_000), ("24h", 60_000), ("7d", 600_000)])
def test_bucket_width_keeps_every_range_under_1500_points(range_, expected):
    width = bucket_ms_for(RANGES_MS[range_], 1500)
    assert width == expected
    assert RANGES_MS[range_] / width <= 1500


def test_bucket_width_beyond_the_nice_steps_still_fits():
    assert 365 * DAY_MS / bucket_ms_for(365 * DAY_MS, 10) <= 10


def test_ohlc_buckets_in_one_pass():
    ticks = [TickRow(0, 10.0, 2400.0), TickRow(1_000, 12.0), TickRow(2_000, 9.0, 4800.0), TickRow(4_999, 11.0),
             TickRow(5_000, 20.0), TickRow(12_000, 21.0, 240.0)]
    buckets = ticks_to_buckets(ticks, 5_000)
    assert [(b.start, b.open, b.high, b.low, b.close) for b in buckets] == [
        (0, 10.0, 12.0, 9.0, 11.0), (5_000, 20.0, 20.0, 20.0, 20.0), (10_000, 21.0, 21.0, 21.0, 21.0)]
    # last rolling-24h volume in the bucket, scaled to the bucket's width; none seen means 0
    assert [b.volume for b in buckets] == [pytest.approx(4800.0 * 5_000 / DAY_MS), None,
                                           pytest.approx(240.0 * 5_000 / DAY_MS)]


def test_candles_merge_into_wider_buckets():
    candles = [CandleRow(60_000 * i, 10.0 + i, 20.0 + i, 5.0 - i, 11.0 + i, 1.5) for i in range(12)]
    buckets = candles_to_buckets(candles, 600_000)
    assert [(b.start, b.open, b.high, b.low, b.close, b.volume) for b in buckets] == [
        (0, 10.0, 29.0, -4.0, 20.0, 15.0), (600_000, 20.0, 31.0, -6.0, 22.0, 3.0)]


def test_line_keeps_one_point_per_second_the_last():
    assert dedupe_seconds([TickRow(1_000, 1.0), TickRow(1_999, 2.0), TickRow(2_000, 3.0)]) == [(1_000, 2.0),
                                                                                            (2_000, 3.0)]


def test_lttb_keeps_ends_peaks_and_size():
    rng = random.Random(7)
    points = [(i * 1000, rng.random()) for i in range(10_000)]
    points[5_000] = (5_000_000, 50.0)  # a spike must survive downsampling
    sampled = lttb(points, 1500)
    assert len(sampled) == 1500
    assert sampled[0] == points[0] and sampled[-1] == points[-1]
    assert (5_000_000, 50.0) in sampled
    assert [p[0] for p in sampled] == sorted({p[0] for p in sampled})
    assert lttb(points[:10], 1500) == points[:10]


def test_series_from_a_full_day_of_ticks_is_bounded():
    ticks = [TickRow(i * 1000, 100.0 + i % 7, 1e9) for i in range(86_400)]
    series = series_from_ticks(ticks, DAY_MS, 1500)
    assert len(series.line) <= 1500 and len(series.candles) <= 1500 and len(series.volume) == len(series.candles)
    assert series.bucket_ms == 60_000
    assert max(c[2] for c in series.candles) == 106.0 and min(c[3] for c in series.candles) == 100.0


def test_series_from_candles_uses_closes_for_the_line():
    candles = [CandleRow(60_000 * i, 1.0, 3.0, 0.5, 2.0 + i, 1.0) for i in range(3)]
    series = series_from_candles(candles, DAY_MS, 1500)
    assert series.line == [(0, 2.0), (60_000, 3.0), (120_000, 4.0)]


def test_stats_from_ticks():
    ticks = [TickRow(0, 100.0, DAY_MS / 60_000), TickRow(30_000, 90.0), TickRow(61_000, 120.0, 2 * DAY_MS / 60_000),
             TickRow(62_000, 110.0)]
    stats = stats_from_ticks(ticks, 60_000)
    assert stats == {"price": 110.0, "first": 100.0, "change": 10.0, "change_pct": 10.0, "min": 90.0, "max": 120.0,
                     "volume": pytest.approx(1.0 + 2.0), "last_update": 62_000, "count": 4}


def test_stats_from_candles_and_empty():
    candles = [CandleRow(0, 10.0, 12.0, 8.0, 11.0, 5.0), CandleRow(60_000, 11.0, 15.0, 9.0, 14.0, None)]
    assert stats_from_candles(candles[1:])["volume"] is None  # no volume known: absent, never 0
    stats = stats_from_candles(candles)
    assert (stats["price"], stats["first"], stats["min"], stats["max"], stats["volume"]) == (14.0, 10.0, 8.0, 15.0,
                                                                                             5.0)
    assert stats["change_pct"] == pytest.approx(40.0)
    assert stats_from_ticks([], 1000)["price"] is None and stats_from_candles([])["count"] == 0
