"""A back-fill's window and its gaps, at any interval: how far back it may go, and which buckets it fills. Pure.

The window is the last span asked (`--hours` or `--days`) before the bucket of the interval still open (never
that one), widened to whole buckets, so runs close together share one grid. Two bounds, each stated before
anything is fetched: the interval's retention (a back-fill of 90 days at 1m, which is kept 30 days, would be
deleted as it lands) and the source's reach (`history_reach`: CoinGecko's plans, the spacing of its points). A span
longer than a bound is refused with one line saying what to ask instead; a span within it whose whole buckets
would begin a little before it (a day's window starts at 00:00, up to a day before the 365 days a plan serves)
starts at the first whole bucket within it, and says so.

Gaps: at 1m, as before, where the ticks are kept (`RETENTION_TICKS_HOURS`, 48 h): gaps in the stored tick times
longer than twice the source's resolution, filled with candles and ticks (the 1 h chart's raw ticks); before that,
and at every coarser interval, a bucket is a gap when its collection holds no candle of that (symbol, source).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_at_or_after, bucket_of, buckets_over
from cryptopulse.errors import ConfigError
from cryptopulse.store import PRICES, Retention, candle_collection
from cryptopulse.times import DAY_MS, HOUR_MS
from producer.sources.history import HistoryReach


@dataclass(frozen=True)
class Window:
    """[start, end) at `interval`, whole buckets; at 1m, ticks are filled from `ticks_from` on (else it is `end`)."""

    interval: str
    start: int
    end: int
    ticks_from: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gap:
    """[low, high) to fill; `with_ticks`: its ticks are published too (1m, where ticks are kept)."""

    low: int
    high: int
    with_ticks: bool


def history_window(interval: str, span_ms: int, now_ms: int, retention: Retention, source: str,
                   reach: HistoryReach | None) -> Window:
    """The window of a back-fill of `span_ms` at `interval` from `source` at `now_ms`.

    Raises ConfigError (one line: the bound, and what to ask instead) when the span is longer than the interval's
    retention or the source's reach."""
    if interval not in INTERVAL_MS:
        raise ConfigError(f"--interval {interval!r}: one of {', '.join(INTERVALS)}")
    end = bucket_of(now_ms, interval)
    start = bucket_of(end - span_ms, interval)
    notes = []
    keep = retention.keep_ms(candle_collection(interval))
    if keep is not None:
        if span_ms > keep:
            raise ConfigError(_retention_refusal(interval, span_ms, keep, retention))
        start, note = _within(start, now_ms - keep, interval,
                              f"the {span_text(keep)} {interval} candles are kept (RETENTION_{interval.upper()}_DAYS)")
        notes += note
    if reach is not None:
        if span_ms > reach.days * DAY_MS:
            raise ConfigError(f"{source} cannot back-fill {span_text(span_ms)} at {interval}: {reach.why}; ask "
                              f"{_option(int(reach.days * DAY_MS))} or less at {interval}, or {reach.instead}")
        start, note = _within(start, now_ms - int(reach.days * DAY_MS), interval,
                              f"what {source} serves at {interval} ({reach.why})")
        notes += note
    ticks_from = end
    if interval == INTERVALS[0]:
        ticks_keep = retention.keep_ms(PRICES)
        ticks_from = start if ticks_keep is None else max(start, bucket_at_or_after(now_ms - ticks_keep, interval))
        if ticks_from > start:
            notes.append(f"ticks for the last {span_text(ticks_keep)} only, which is how long they are kept "
                         f"(RETENTION_TICKS_HOURS); 1m candles alone before {_when(ticks_from)}")
    return Window(interval, start, end, ticks_from, tuple(notes))


def gaps(times: list[int], start: int, end: int, max_gap: int) -> list[tuple[int, int]]:
    """The parts of [start, end) farther than `max_gap` from any of the sorted `times`, as [from, to) windows."""
    found, previous = [], start - 1
    for t in [*times, end]:
        if t - previous > max_gap:
            found.append((previous + 1, t))
        previous = t
    return found


def candle_gaps(stored: Iterable[int], start: int, end: int, interval: str) -> list[tuple[int, int]]:
    """The runs of `interval` buckets in [start, end) (whole buckets) with no stored candle, as [from, to)."""
    have, found = set(stored), []
    run_from = None
    for bucket in buckets_over(bucket_at_or_after(start, interval), end, interval):
        if bucket in have:
            if run_from is not None:
                found.append((run_from, bucket))
            run_from = None
        elif run_from is None:
            run_from = bucket
    if run_from is not None:
        found.append((run_from, end))
    return found


def window_gaps(window: Window, tick_times: list[int], candle_starts: Iterable[int], max_gap: int) -> list[Gap]:
    """The gaps of one symbol in `window`: in the tick times from `ticks_from` on (1m), in the candles before."""
    starts = set(candle_starts)
    found = [Gap(low, high, False) for low, high in candle_gaps(starts, window.start, window.ticks_from,
                                                               window.interval)]
    if window.ticks_from < window.end:
        found += [Gap(low, high, True) for low, high in gaps(tick_times, window.ticks_from, window.end, max_gap)]
    return found


def _within(start: int, oldest: int, interval: str, what: str) -> tuple[int, list[str]]:
    """`start`, or the first whole bucket from `oldest` on if it is later, with a note saying why."""
    first = bucket_at_or_after(oldest, interval)
    if first <= start:
        return start, []
    return first, [f"starting at {_when(first)}, the first whole {interval} bucket within {what}"]


def _retention_refusal(interval: str, span_ms: int, keep: int, retention: Retention) -> str:
    coarser = next((i for i in INTERVALS[INTERVALS.index(interval) + 1:]
                    if (k := retention.keep_ms(candle_collection(i))) is None or k >= span_ms), None)
    if coarser is None:
        instead = ""
    else:
        kept = retention.keep_ms(candle_collection(coarser))
        instead = f", or a coarser interval (--interval {coarser} keeps " + (
            "them for ever)" if kept is None else f"{span_text(kept)})")
    return (f"{interval} candles are kept {span_text(keep)} (RETENTION_{interval.upper()}_DAYS), so "
            f"{span_text(span_ms)} at {interval} would be deleted as they land: ask {_option(keep)} or less at "
            f"{interval}{instead}")


def span_text(ms: int) -> str:
    """A span as a person says it: `30 days`, `36 h`."""
    return f"{ms / DAY_MS:g} days" if ms % DAY_MS == 0 and ms > 2 * DAY_MS else f"{ms / HOUR_MS:g} h"


def _option(ms: int) -> str:
    """The option that asks for a span: `--days 30`, `--hours 24`."""
    return f"--days {ms / DAY_MS:g}" if ms % DAY_MS == 0 and ms > 2 * DAY_MS else f"--hours {ms / HOUR_MS:g}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
