"""Chart ranges and timeframes: which bars each range is drawn with, the cap on bars, where a page of older bars
begins and when the history ends (webui/timeframes.py, pure), and that every view holds what its live charts need."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS
from webui.timeframes import (
    DEFAULT_TIMEFRAME,
    MAX_BARS,
    RANGES,
    TICKS,
    TIMEFRAME_MS,
    WARMUP_BARS,
    allowed,
    bar_count,
    bucket_start,
    finest_for,
    older_page,
    page_bounds,
    refusal,
    span_ms,
    timeframes_by_range,
)
from webui.views import KEEP_MS, TICKS_KEEP_MS, VIEW_KEYS, all_specs


def ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("range_", "default", "bars"), [
    ("1h", "5s", 720), ("24h", "1m", 1440), ("7d", "5m", 2016), ("30d", "1h", 720), ("90d", "1h", 2160),
    ("1y", "1d", 365), ("all", "1d", MAX_BARS),
])
def test_every_range_has_a_default_that_fits_the_cap(range_, default, bars):
    assert DEFAULT_TIMEFRAME[range_] == default and default in allowed(range_)
    assert bar_count(span_ms(range_, default), default) == bars <= MAX_BARS


def test_a_range_offers_the_timeframes_that_fit_and_are_no_wider_than_it():
    assert allowed("1h") == ("5s", "1m", "5m", "15m", "1h")
    assert allowed("24h") == ("1m", "5m", "15m", "1h", "4h", "1d")
    assert allowed("7d") == ("5m", "15m", "1h", "4h", "1d", "1w")
    assert allowed("30d") == allowed("90d") == ("1h", "4h", "1d", "1w")
    assert allowed("1y") == ("4h", "1d", "1w")
    assert allowed("all") == ("1d", "1w")  # kept for ever; the newest MAX_BARS of them, older ones by scrolling
    assert span_ms("all", "1w") == MAX_BARS * 7 * DAY_MS
    assert timeframes_by_range()["7d"] == {"default": "5m", "allowed": list(allowed("7d"))}


def test_a_refusal_says_why_and_what_to_choose():
    assert refusal("24h", "1m") is None
    assert refusal("7d", "1m") == "10080 bars of 1m over 7d is more than 2200: choose one of 5m, 15m, 1h, 4h, 1d, 1w"
    assert refusal("24h", "1w") == "a 1w bar is wider than range 24h: choose one of 1m, 5m, 15m, 1h, 4h, 1d"
    assert refusal("all", "4h") == "range all is drawn in 1d or 1w bars (the intervals kept for ever)"


def test_a_window_of_any_length_gets_the_finest_timeframe_that_fits():
    assert finest_for(HOUR_MS) == TICKS and finest_for(36 * HOUR_MS) == "1m" and finest_for(2 * DAY_MS) == "5m"
    assert finest_for(40 * 365 * DAY_MS) == "1w" and finest_for(50 * 365 * DAY_MS) is None


def test_bars_start_where_the_candles_do_weeks_on_monday():
    thursday_noon = ms(2026, 3, 12, 12, 0, 7)
    assert bucket_start(thursday_noon, "1w") == ms(2026, 3, 9)  # Monday 00:00 UTC
    assert bucket_start(thursday_noon, "4h") == ms(2026, 3, 12, 12)
    assert bucket_start(thursday_noon, TICKS) == ms(2026, 3, 12, 12, 0, 5)


def test_a_page_is_the_limit_bars_that_begin_before_its_time():
    before = ms(2026, 3, 12, 12, 30)
    assert page_bounds(before, "1m", 3) == (ms(2026, 3, 12, 12, 27), ms(2026, 3, 12, 12, 29))
    assert page_bounds(before + 1, "1m", 1) == (ms(2026, 3, 12, 12, 30),) * 2  # the bar that began at `before`
    assert page_bounds(ms(2026, 3, 12), "1w", 2) == (ms(2026, 3, 2), ms(2026, 3, 9))  # this week's, and the last


def test_the_history_ends_at_its_floor_or_at_an_empty_page_unless_an_older_bar_is_known():
    first = ms(2026, 3, 12, 12)
    assert older_page(first, True, None, None) == first  # bars found: the next page ends where this one began
    assert older_page(first, True, first, None) is None  # the retention's floor reached
    assert older_page(first, False, None, None) is None  # nothing found, nothing known older: the end
    # nothing found, but a bar known to end on March 2nd (a daily candle of March 1st): the next page ends there
    assert older_page(first, False, None, ms(2026, 3, 2)) == ms(2026, 3, 2)
    assert older_page(first, False, None, ms(2026, 3, 13)) == first  # a bar that reaches into this page: no jump


def test_every_live_chart_is_answered_from_its_view_with_its_warm_up():
    """For every range and every timeframe it offers, the view of that timeframe holds the range and the indicators'
    warm-up of 50 bars: the live charts never read the store."""
    keep = {**KEEP_MS, TICKS: TICKS_KEEP_MS}
    for range_ in RANGES:
        for timeframe in allowed(range_):
            if keep[timeframe] is None:
                continue
            needed = span_ms(range_, timeframe) + (WARMUP_BARS * TIMEFRAME_MS[timeframe] if timeframe != TICKS else 0)
            assert keep[timeframe] >= needed, (range_, timeframe)


def test_each_view_states_its_memory_bound():
    specs = {spec.name: spec for spec in all_specs(Settings())}
    assert list(specs) == ["ticks", "1m", "5m", "15m", "1h", "4h", "1d", "1w"]
    assert specs["1m"].keep_ms == 26 * HOUR_MS and specs["1m"].max_rows == 1560 * VIEW_KEYS
    assert specs["1d"].keep_ms is None and specs["1d"].max_rows == 7300 * VIEW_KEYS  # "all" sized as 20 years
    assert specs["ticks"].keep_ms == 65 * MINUTE_MS and specs["ticks"].max_rows == 2_000_000
    assert specs["5m"].topic.endswith("-5m") and specs["ticks"].topic == Settings().prices_topic
