"""A back-fill's window at every interval (control/history_window.py): whole buckets before the open one, the
retention and the source's reach stated as bounds (refused in one line, or met by starting within them), ticks
only where they are kept, and the gaps at the interval."""

from __future__ import annotations

import pytest

from control.history_window import Gap, Window, candle_gaps, history_window, window_gaps
from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_at_or_after, bucket_of, buckets_over
from cryptopulse.errors import ConfigError
from cryptopulse.store import CANDLE_DAYS, Retention
from producer.sources.coingecko import CoinGecko
from producer.sources.history import HistoryReach

NOW = 1_767_891_296_789  # 2026-01-08 16:54:56.789 UTC, a Thursday
MONDAY = 1_767_571_200_000  # 2026-01-05 00:00 UTC
M, H, D, W = 60_000, 3_600_000, 86_400_000, 7 * 86_400_000
RETENTION = Retention(ticks_hours=48, candle_days={i: d for i, d in CANDLE_DAYS.items()})
YEAR = HistoryReach(365, "the public plan serves the last 365 days of history only",
                    "set a paid key in COINGECKO_PRO_API_KEY")


def window(interval: str, span_ms: int, reach: HistoryReach | None = None, retention: Retention = RETENTION,
           source: str = "binance") -> Window:
    return history_window(interval, span_ms, NOW, retention, source, reach)


def test_buckets_over_and_at_or_after_are_the_interval_s_grid():
    assert list(buckets_over(MONDAY + 3 * D, MONDAY + 10 * D, "1w")) == [MONDAY, MONDAY + W]
    assert list(buckets_over(MONDAY, MONDAY, "1d")) == []
    assert bucket_at_or_after(MONDAY + 1, "1w") == MONDAY + W and bucket_at_or_after(MONDAY, "1w") == MONDAY


@pytest.mark.parametrize("interval", INTERVALS)
def test_the_window_is_whole_buckets_before_the_one_still_open(interval):
    w = window(interval, 20 * D)
    assert w.end == bucket_of(NOW, interval) and w.end <= NOW < w.end + INTERVAL_MS[interval]
    assert bucket_of(w.start, interval) == w.start and w.start <= w.end - 20 * D
    assert w.start > w.end - 20 * D - INTERVAL_MS[interval]  # widened by less than a bucket
    assert w.ticks_from > w.start if interval == "1m" else w.ticks_from == w.end  # no ticks but at 1m


def test_a_day_window_of_a_year_is_365_days_to_the_last_midnight_and_weeks_start_on_monday():
    days = window("1d", 365 * D)
    assert (days.start, days.end) == (MONDAY + 3 * D - 365 * D, MONDAY + 3 * D) and days.notes == ()
    weeks = window("1w", 365 * D)
    assert weeks.end == MONDAY and weeks.start == bucket_of(MONDAY - 365 * D, "1w") == MONDAY - 53 * W


def test_a_minute_window_fills_ticks_where_they_are_kept_and_only_candles_before():
    short = window("1m", 6 * H)
    assert short.ticks_from == short.start and short.notes == ()  # as before: ticks everywhere
    month = window("1m", 30 * D)
    assert month.ticks_from == bucket_at_or_after(NOW - 48 * H, "1m") > month.start
    assert any("ticks for the last 48 h only" in note and "RETENTION_TICKS_HOURS" in note for note in month.notes)


def test_more_days_than_the_interval_is_kept_is_refused_in_one_line_naming_a_coarser_interval():
    with pytest.raises(ConfigError) as refused:
        window("1m", 90 * D)
    assert str(refused.value) == (
        "1m candles are kept 30 days (RETENTION_1M_DAYS), so 90 days at 1m would be deleted as they land: ask "
        "--days 30 or less at 1m, or a coarser interval (--interval 5m keeps 180 days)")
    with pytest.raises(ConfigError, match=r"--interval 4h keeps them for ever\)$"):
        window("1h", 1000 * D)


def test_exactly_the_days_kept_starts_at_the_first_whole_bucket_within_them_and_says_so():
    w = window("1m", 30 * D)
    assert w.start == bucket_at_or_after(NOW - 30 * D, "1m") == w.end - 30 * D + M
    assert any(note.startswith("starting at 2025-12-09 16:55 UTC, the first whole 1m bucket within the 30 days")
               for note in w.notes)
    forever = Retention(ticks_hours=48, candle_days={**CANDLE_DAYS, "1m": None})  # RETENTION_1M_DAYS=0
    assert window("1m", 90 * D, retention=forever).start == bucket_of(NOW, "1m") - 90 * D


def test_a_source_s_reach_is_a_bound_too():
    with pytest.raises(ConfigError) as refused:
        window("1d", 400 * D, YEAR, source="coingecko")
    assert str(refused.value) == (
        "coingecko cannot back-fill 400 days at 1d: the public plan serves the last 365 days of history only; ask "
        "--days 365 or less at 1d, or set a paid key in COINGECKO_PRO_API_KEY")
    year = window("1d", 365 * D, YEAR, source="coingecko")  # 365 days to the last midnight begin before the plan's
    assert year.start == bucket_at_or_after(NOW - 365 * D, "1d") == year.end - 364 * D
    assert any("within what coingecko serves at 1d" in note for note in year.notes)


def test_coingecko_refuses_minutes_beyond_its_five_minute_points_and_says_what_to_ask():
    source = CoinGecko(["BTC"], api_key="", pro_api_key="")
    with pytest.raises(ConfigError) as refused:
        window("1m", 30 * D, source.history_reach("1m"), source="coingecko")
    message = str(refused.value)
    assert message.startswith("coingecko cannot back-fill 30 days at 1m: its points are 5 minutes apart for the "
                              "last 24 hours only")
    assert message.endswith("ask --hours 24 or less at 1m, or use --interval 1h (hourly points)")
    assert window("1m", 24 * H, source.history_reach("1m"), source="coingecko").start == bucket_at_or_after(
        NOW - 24 * H, "1m")
    assert window("1h", 365 * D, source.history_reach("1h"), source="coingecko").end == bucket_of(NOW, "1h")


def test_an_unknown_interval_is_refused():
    with pytest.raises(ConfigError, match="one of 1m, 5m, 15m, 1h, 4h, 1d, 1w"):
        window("2h", D)


# --- gaps ------------------------------------------------------------------------------------------------

def test_candle_gaps_are_the_runs_of_buckets_with_no_stored_candle():
    assert candle_gaps([], MONDAY, MONDAY + 3 * D, "1d") == [(MONDAY, MONDAY + 3 * D)]
    stored = [MONDAY + D, MONDAY + 4 * D, MONDAY + 5 * D]
    assert candle_gaps(stored, MONDAY, MONDAY + 7 * D, "1d") == [
        (MONDAY, MONDAY + D), (MONDAY + 2 * D, MONDAY + 4 * D), (MONDAY + 6 * D, MONDAY + 7 * D)]
    weeks = [MONDAY - W]
    assert candle_gaps(weeks, MONDAY - 3 * W, MONDAY + W, "1w") == [(MONDAY - 3 * W, MONDAY - W), (MONDAY, MONDAY + W)]
    assert candle_gaps([MONDAY + k * H for k in range(24)], MONDAY, MONDAY + D, "1h") == []


def test_window_gaps_at_1m_are_tick_gaps_where_ticks_are_kept_and_candle_gaps_before():
    w = Window("1m", MONDAY, MONDAY + 10 * M, MONDAY + 5 * M)
    ticks = [MONDAY + k * M - 1 for k in (6, 9)]  # closes of minutes 5 and 8
    candles = [MONDAY + k * M for k in (0, 1, 3, 5, 6, 7, 8)]  # minutes 6 and 7 have candles but no ticks
    assert window_gaps(w, ticks, candles, 2 * M) == [
        Gap(MONDAY + 2 * M, MONDAY + 3 * M, False), Gap(MONDAY + 4 * M, MONDAY + 5 * M, False),
        Gap(MONDAY + 6 * M, MONDAY + 9 * M - 1, True)]  # as before: minutes 6 and 7, found by their ticks
    days = Window("1d", MONDAY, MONDAY + 3 * D, MONDAY + 3 * D)
    assert window_gaps(days, [], [MONDAY + D], 2 * M) == [Gap(MONDAY, MONDAY + D, False),
                                                          Gap(MONDAY + 2 * D, MONDAY + 3 * D, False)]
