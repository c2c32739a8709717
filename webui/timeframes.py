"""Chart ranges and timeframes: which bars a chart of a range is drawn with, how many it may hold, and where the page
before a bar begins. Pure code.

A chart shows a range (the last hour ... all of it) in bars of one timeframe: 5-second bars made from raw ticks, or
the candles of one interval, 1m ... 1w, as the roll-ups store them (cryptopulse/candle.py). A chart holds at most
MAX_BARS bars, so each range has the timeframes that fit it (and are no wider than it), and a default; older bars
come a page at a time when the chart is scrolled back (docs/webui.md).
"""

from __future__ import annotations

from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_of
from cryptopulse.times import DAY_MS, HOUR_MS

TICKS = "5s"  # bars of raw ticks: the last hour's chart, from the ticks held in memory
TIMEFRAME_MS = {TICKS: 5_000, **INTERVAL_MS}
TIMEFRAMES = tuple(TIMEFRAME_MS)

# A range's length; "all" is the newest MAX_BARS bars of a timeframe kept for ever, older ones by scrolling back.
RANGES_MS: dict[str, int | None] = {"1h": HOUR_MS, "24h": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS,
                                    "90d": 90 * DAY_MS, "1y": 365 * DAY_MS, "all": None}
RANGES = tuple(RANGES_MS)
FOR_EVER = ("1d", "1w")  # the timeframes of "all": the intervals the store keeps for ever at every age

# Bars in one chart or one answer at most: what a chart shows legibly, and what the store reads in well under a
# second where memory does not hold it (docs/webui.md). 2,200 lets 90 d of 1h (2,160), 7 d of 5m (2,016) and 1 y of
# 4h (2,190) through.
MAX_BARS = 2_200
DEFAULT_TIMEFRAME = {"1h": TICKS, "24h": "1m", "7d": "5m", "30d": "1h", "90d": "1h", "1y": "1d", "all": "1d"}
# Indicators are computed over this many bars before the first one shown as well (SMA50 and EMA50 need 50), so
# that they are defined from the chart's first bar wherever the history goes back that far.
WARMUP_BARS = 50


def span_ms(range_: str, timeframe: str) -> int:
    """How far back a chart of `range_` reaches: the range, or for "all" the newest MAX_BARS bars."""
    return RANGES_MS[range_] or MAX_BARS * TIMEFRAME_MS[timeframe]


def bar_count(span: int, timeframe: str) -> int:
    """Bars of `timeframe` in `span` ms, a partial one counted."""
    return -(-span // TIMEFRAME_MS[timeframe])


def allowed(range_: str) -> tuple[str, ...]:
    """The timeframes a chart of `range_` may use: at most MAX_BARS bars, none wider than the range."""
    span = RANGES_MS[range_]
    if span is None:
        return FOR_EVER
    return tuple(t for t in TIMEFRAMES if TIMEFRAME_MS[t] <= span and bar_count(span, t) <= MAX_BARS)


def refusal(range_: str, timeframe: str) -> str | None:
    """Why `timeframe` does not go with `range_` (a plain sentence for the client), or None when it does."""
    fits = allowed(range_)
    if timeframe in fits:
        return None
    if range_ == "all":
        return f"range all is drawn in {' or '.join(FOR_EVER)} bars (the intervals kept for ever)"
    span = RANGES_MS[range_] or 0
    if TIMEFRAME_MS[timeframe] > span:
        return f"a {timeframe} bar is wider than range {range_}: choose one of {', '.join(fits)}"
    return (f"{bar_count(span, timeframe)} bars of {timeframe} over {range_} is more than {MAX_BARS}: choose one of "
            f"{', '.join(fits)}")


def finest_for(span: int) -> str | None:
    """The finest timeframe that draws a window `span` ms long in at most MAX_BARS bars (None: even 1w does not)."""
    return next((t for t in TIMEFRAMES if bar_count(span, t) <= MAX_BARS), None)


def bucket_start(ts: int, timeframe: str) -> int:
    """The start of the `timeframe` bar holding `ts` (weeks from Monday 00:00 UTC, as the 1w candles)."""
    if timeframe == TICKS:
        return ts - ts % TIMEFRAME_MS[TICKS]
    return bucket_of(ts, timeframe)


def page_bounds(before: int, timeframe: str, limit: int) -> tuple[int, int]:
    """The first and the last bar start of the page before `before`: the `limit` bars that begin before it."""
    last = bucket_start(before - 1, timeframe)
    return last - (limit - 1) * TIMEFRAME_MS[timeframe], last


def older_page(first: int, found: bool, floor: int | None, data_until: int | None) -> int | None:
    """Where the page after this one (older) ends, given this page's first bar start `first`; None: the history
    ends here.

    `floor` is where the history of this timeframe begins as far as its retention says; `data_until` the end of the
    newest bar (of this timeframe or a coarser one) known to hold data before `first`, None when none is known. A
    page that found nothing ends the history unless such a bar says there is more: then the next page ends with that
    bar, skipping the gap between.
    """
    if floor is not None and first <= floor:
        return None
    if found:
        return first
    return None if data_until is None else min(first, data_until)


def timeframes_by_range() -> dict[str, dict[str, object]]:
    """Per range, its default timeframe and those allowed: what the chart page offers (its `data-timeframes`)."""
    return {r: {"default": DEFAULT_TIMEFRAME[r], "allowed": list(allowed(r))} for r in RANGES}


def is_candles(timeframe: str) -> bool:
    """Whether `timeframe` is one of the stored intervals (else the ticks' own bars)."""
    return timeframe in INTERVALS
