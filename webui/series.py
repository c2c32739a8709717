"""Pure chart arithmetic: bucket sizes, OHLC buckets, LTTB downsampling and the side-panel statistics.

FerretDB has no $min/$max/$first/$last/$dateTrunc, so everything a chart needs is
computed here in one pass over rows sorted by time. No I/O, so it is unit tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptopulse.candle import INTERVAL_MS, WEEK_OFFSET_MS
from cryptopulse.times import DAY_MS

# Bucket widths a human reads easily; the smallest one that keeps a series under max_points is used.
NICE_STEPS_MS = (1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
                 1_800_000, 3_600_000, 7_200_000, 14_400_000, 21_600_000, 43_200_000, DAY_MS)


@dataclass(frozen=True, slots=True)
class TickRow:
    """One raw tick as the chart needs it (times in epoch ms)."""

    ts: int
    price: float
    volume_24h: float | None = None


@dataclass(frozen=True, slots=True)
class CandleRow:
    """One stored candle of any interval (crypto_db.candles_<interval>): `volume` is the volume traded in it."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None


@dataclass(slots=True)
class Bucket:
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None  # None: nothing says what traded (candles rolled up from ticks without a volume)


@dataclass(frozen=True, slots=True)
class Series:
    """What a snapshot carries: line points, OHLC candles and volume bars (none where the volume is unknown), all at
    most ~max_points long."""

    bucket_ms: int
    line: list[tuple[int, float]]
    candles: list[tuple[int, float, float, float, float]]
    volume: list[tuple[int, float]]


def bucket_ms_for(range_ms: int, max_points: int) -> int:
    """The smallest nice bucket width that cuts `range_ms` into at most `max_points` buckets."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    for step in NICE_STEPS_MS:
        if range_ms / step <= max_points:
            return step
    return -(-range_ms // max_points)


def aligned(ts: int, bucket_ms: int) -> int:
    """The start of the `bucket_ms` bucket holding `ts`: a multiple of its width from the epoch, but a week from
    Monday 00:00 UTC, as the 1w candles are (cryptopulse/candle.py)."""
    origin = WEEK_OFFSET_MS if bucket_ms == INTERVAL_MS["1w"] else 0
    return ts - (ts - origin) % bucket_ms


def ticks_to_buckets(ticks: Iterable[TickRow], bucket_ms: int) -> list[Bucket]:
    """OHLC per bucket (epoch-aligned), in one pass over ticks sorted by time.

    A tick's volume_24h is a rolling 24 h total, not a traded amount, so a bucket's
    volume is estimated as the last rolling total seen in it scaled to the bucket's
    width: volume_24h * bucket_ms / 24 h.
    """
    buckets: list[Bucket] = []
    current: Bucket | None = None
    last_volume: float | None = None
    for tick in ticks:
        start = aligned(tick.ts, bucket_ms)
        if current is None or start != current.start:
            if current is not None:
                current.volume = _scaled(last_volume, bucket_ms)
                buckets.append(current)
            current = Bucket(start, tick.price, tick.price, tick.price, tick.price)
            last_volume = None
        else:
            current.high = max(current.high, tick.price)
            current.low = min(current.low, tick.price)
            current.close = tick.price
        if tick.volume_24h is not None:
            last_volume = tick.volume_24h
    if current is not None:
        current.volume = _scaled(last_volume, bucket_ms)
        buckets.append(current)
    return buckets


def _scaled(volume_24h: float | None, bucket_ms: int) -> float | None:
    return None if volume_24h is None else volume_24h * bucket_ms / DAY_MS


def candles_to_buckets(candles: Iterable[CandleRow], bucket_ms: int) -> list[Bucket]:
    """Candles (sorted by start) as buckets of `bucket_ms`: one each when they are that wide, else merged (1-minute
    candles into a sparkline's half hours); volumes add up, unknown (None) when a merged candle has none."""
    buckets: list[Bucket] = []
    current: Bucket | None = None
    for c in candles:
        start = aligned(c.start, bucket_ms)
        if current is None or start != current.start:
            current = Bucket(start, c.open, c.high, c.low, c.close, c.volume)
            buckets.append(current)
        else:
            current.high = max(current.high, c.high)
            current.low = min(current.low, c.low)
            current.close = c.close
            current.volume = known_sum((current.volume, c.volume))
    return buckets


def dedupe_seconds(ticks: Iterable[TickRow]) -> list[tuple[int, float]]:
    """Line points at most one per second (the last one), because the chart's time axis is in whole seconds."""
    points: list[tuple[int, float]] = []
    for tick in ticks:
        second = tick.ts - tick.ts % 1000
        if points and points[-1][0] == second:
            points[-1] = (second, tick.price)
        else:
            points.append((second, tick.price))
    return points


def lttb(points: Sequence[tuple[int, float]], threshold: int) -> list[tuple[int, float]]:
    """Largest-Triangle-Three-Buckets: keeps the line's visual shape with `threshold` points (keeps both ends)."""
    n = len(points)
    if threshold >= n or threshold < 3:
        return list(points) if threshold >= n else [points[0], points[-1]][:threshold]
    sampled = [points[0]]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        avg_start = int((i + 1) * every) + 1
        avg_end = min(int((i + 2) * every) + 1, n)
        span = points[avg_start:avg_end]
        avg_x = sum(p[0] for p in span) / len(span)
        avg_y = sum(p[1] for p in span) / len(span)
        range_start = int(i * every) + 1
        range_end = int((i + 1) * every) + 1
        ax, ay = points[a]
        best, best_area = range_start, -1.0
        for j in range(range_start, range_end):
            x, y = points[j]
            area = abs((ax - avg_x) * (y - ay) - (ax - x) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        sampled.append(points[best])
        a = best
    sampled.append(points[-1])
    return sampled


def series_from_ticks(ticks: Sequence[TickRow], range_ms: int, max_points: int,
                      bucket_ms: int | None = None) -> Series:
    """The chart's series over raw ticks: buckets of `bucket_ms` if given, else the nice width for max_points."""
    bucket = bucket_ms or bucket_ms_for(range_ms, max_points)
    buckets = ticks_to_buckets(ticks, bucket)
    return Series(bucket, lttb(dedupe_seconds(ticks), max_points), _ohlc(buckets), _volume(buckets))


def series_from_candles(candles: Sequence[CandleRow], range_ms: int, max_points: int,
                        bucket_ms: int | None = None) -> Series:
    """The chart's series over candles: buckets of `bucket_ms` (at least a minute: the candles' own interval) if
    given, else the nice width for max_points."""
    bucket = max(bucket_ms or bucket_ms_for(range_ms, max_points), 60_000)
    buckets = candles_to_buckets(candles, bucket)
    return Series(bucket, [(b.start, b.close) for b in buckets], _ohlc(buckets), _volume(buckets))


def _ohlc(buckets: list[Bucket]) -> list[tuple[int, float, float, float, float]]:
    return [(b.start, b.open, b.high, b.low, b.close) for b in buckets]


def _volume(buckets: list[Bucket]) -> list[tuple[int, float]]:
    return [(b.start, b.volume) for b in buckets if b.volume is not None]


def known_sum(volumes: Iterable[float | None]) -> float | None:
    """The sum of the volumes when each is known, else None: a minute without a volume is not a minute of no
    trading, so it is never counted as 0."""
    total = 0.0
    for volume in volumes:
        if volume is None:
            return None
        total += volume
    return total


def stats_from_ticks(ticks: Sequence[TickRow], bucket_ms: int) -> dict[str, float | int | None]:
    """Side-panel numbers over raw ticks; volume is the sum of the bucket estimates (see ticks_to_buckets)."""
    if not ticks:
        return empty_stats()
    low = high = ticks[0].price
    for tick in ticks:
        low = min(low, tick.price)
        high = max(high, tick.price)
    volume = _sum_of_known(b.volume for b in ticks_to_buckets(ticks, bucket_ms))
    return _stats(ticks[0].price, ticks[-1].price, low, high, volume, ticks[-1].ts, len(ticks))


def stats_from_candles(candles: Sequence[CandleRow]) -> dict[str, float | int | None]:
    """Side-panel numbers over candles; the last update is the last candle's start."""
    if not candles:
        return empty_stats()
    low = min(c.low for c in candles)
    high = max(c.high for c in candles)
    volume = _sum_of_known(c.volume for c in candles)
    return _stats(candles[0].open, candles[-1].close, low, high, volume, candles[-1].start, len(candles))


def _sum_of_known(volumes: Iterable[float | None]) -> float | None:
    """The panel's volume: what is known added up; None (shown as absent) when no bar of the window has one."""
    known = [v for v in volumes if v is not None]
    return math.fsum(known) if known else None


def _stats(first: float, last: float, low: float, high: float, volume: float | None, last_ts: int,
           count: int) -> dict[str, float | int | None]:
    change = last - first
    return {
        "price": last,
        "first": first,
        "change": change,
        "change_pct": (change / first * 100.0) if first else None,
        "min": low,
        "max": high,
        "volume": volume,
        "last_update": last_ts,
        "count": count,
    }


def empty_stats() -> dict[str, float | int | None]:
    keys = ("price", "first", "change", "change_pct", "min", "max", "volume", "last_update")
    return {**dict.fromkeys(keys), "count": 0}


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sound_tick(row: TickRow) -> TickRow | None:
    """The row if a chart can show it: a finite price (a NaN would make the snapshot unreadable JSON); a
    volume that is not a finite number is left out. None for a row to skip (a foreign producer's NaN)."""
    if not _finite(row.price):
        return None
    if row.volume_24h is not None and not _finite(row.volume_24h):
        return TickRow(row.ts, row.price, None)
    return row


def sound_candle(row: CandleRow) -> CandleRow | None:
    """Like `sound_tick` for a candle: open, high, low and close finite, a volume that is not is left out."""
    if not all(_finite(v) for v in (row.open, row.high, row.low, row.close)):
        return None
    if row.volume is not None and not _finite(row.volume):
        return CandleRow(row.start, row.open, row.high, row.low, row.close, None)
    return row
