"""A back-fill's own roll-ups (streams/history_rollup.py) and a point history rolled up at any interval
(streams/history.py `PointRollup`): buckets inside a gap from the new candles, edge buckets with their stored
children, what the store knows better kept, and no store read where none is needed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.history_window import candle_gaps
from cryptopulse.candle import INTERVAL_MS, INTERVALS, Candle, aggregate, bucket_of, child_of, parent_of
from cryptopulse.tick import Tick
from streams.history import PointRollup
from streams.history_rollup import HistoryRollup, Spans

MONDAY = 1_767_571_200_000  # 2026-01-05 00:00 UTC, a Monday
M, H, D, W = 60_000, 3_600_000, 86_400_000, 7 * 86_400_000
NOW = MONDAY + 5 * W  # the tests' wall clock: every bucket below has ended


class Store(dict):
    """Stored candles by (interval, start), read one `_id` at a time like MongoDB; counts the reads."""

    reads = 0

    def lookup(self, interval: str, start: int) -> Candle | None:
        self.reads += 1
        return self.get((interval, start))

    def put(self, candles: list[Candle]) -> None:
        self.update({(c.interval, c.start): c for c in candles})


def candle(start: int, interval: str, price: float, volume: float = 10.0, source: str = "binance") -> Candle:
    return Candle.ohlc("BTC", source, start, price, price + 2, price - 3, price + 1, volume, interval=interval)


def series(start: int, end: int, interval: str, base_price: float = 100.0) -> list[Candle]:
    width = INTERVAL_MS[interval]
    return [candle(t, interval, base_price + (t - start) // width % 17) for t in range(start, end, width)]


def cascade(candles: list[Candle], up_to: str = "1w", now: int = NOW) -> list[Candle]:
    """The reference: every coarser interval rolled up level by level from `candles`, as the cascade would."""
    out, level_candles, level = [], candles, parent_of(candles[0].interval)
    while level is not None and INTERVALS.index(level) <= INTERVALS.index(up_to):
        groups: dict[int, list[Candle]] = {}
        for c in level_candles:
            groups.setdefault(bucket_of(c.start, level), []).append(c)
        width = INTERVAL_MS[level]
        level_candles = [aggregate("BTC", "binance", level, s, g, final=s + width <= now)
                         for s, g in sorted(groups.items())]
        out += level_candles
        level = parent_of(level)
    return out


def rollup(store: Store, base: str, gaps: list[tuple[int, int]], window: tuple[int, int], now: int = NOW,
           **options) -> HistoryRollup:
    stored_base = {start for (interval, start) in store if interval == base and window[0] <= start < window[1]}
    return HistoryRollup("BTC", "binance", base, gaps, window, stored_base, store.lookup, now, **options)


# --- the spans ---------------------------------------------------------------------------------------------

def test_spans_are_the_gaps_as_whole_base_buckets_merged():
    spans = Spans([(5 * M, 7 * M), (M + 1, 3 * M - 1), (3 * M - 1, 4 * M), (9 * M + 10, 9 * M + 20)], "1m")
    # a minute is filled when its start is in a gap: (M + 1, ...) starts at 2M; (9M + 10, 9M + 20) holds none
    assert spans.spans == [(2 * M, 4 * M), (5 * M, 7 * M)]
    assert spans.cover(2 * M, 4 * M) and not spans.cover(2 * M, 5 * M) and not spans.cover(M, 3 * M)
    assert spans.overlap(3 * M, 6 * M) and spans.overlap(6 * M, 9 * M) and not spans.overlap(4 * M, 5 * M)
    assert spans.buckets("5m") == [0, 5 * M]


# --- roll-ups ------------------------------------------------------------------------------------------------

def test_a_gap_of_days_becomes_weeks_with_no_store_read_inside_it():
    store = Store()
    days = series(MONDAY, MONDAY + 3 * W, "1d")
    job = rollup(store, "1d", [(MONDAY, MONDAY + 3 * W)], (MONDAY, MONDAY + 3 * W))
    assert job.candles(days) == cascade(days)
    assert store.reads == 0  # every week lies inside the gap: nothing to read
    assert job.stats.published == {"1w": 3}


def test_edge_buckets_are_the_aggregate_of_their_stored_children_and_the_new_ones():
    old = series(MONDAY, MONDAY + 4 * W, "1d")
    store = Store()
    store.put(old + cascade(old))
    gap = (MONDAY + W + 5 * D, MONDAY + 2 * W + 2 * D)  # Saturday to Tuesday: two weeks' edges
    for day in range(*gap, D):
        del store[("1d", day)]  # the hole
    new = [candle(t, "1d", 500.0 + (t - gap[0]) // D, volume=3.0) for t in range(*gap, D)]  # other prices
    job = rollup(store, "1d", [gap], (MONDAY, MONDAY + 4 * W))
    weeks = job.candles(new)
    now_stored = [c for (interval, _), c in store.items() if interval == "1d"] + new
    reference = cascade(sorted(now_stored, key=lambda c: c.start))
    assert weeks == [w for w in reference if w.start in (MONDAY + W, MONDAY + 2 * W)]
    assert weeks[0].high == 501.0 + 2 and weeks[1].volume == 2 * 3.0 + 5 * 10.0  # Sunday's high; Mon-Tue new
    assert job.stats.kept == {}


def test_every_level_above_a_gap_of_hours_equals_the_reference_roll_up_of_what_is_stored():
    start, end = MONDAY, MONDAY + 2 * W
    old = series(start, end, "1h")
    gap = (MONDAY + 3 * D + 13 * H, MONDAY + 9 * D + 7 * H)  # from a Thursday afternoon into the next week
    store = Store()
    store.put([c for c in old if not gap[0] <= c.start < gap[1]])
    store.put(cascade(old))  # what the cascade made of them before the hole
    new = [candle(t, "1h", 900.0 + (t // H) % 5, volume=1.0) for t in range(*gap, H)]
    made = rollup(store, "1h", [gap], (start, end)).candles(new)
    after = sorted([c for (interval, _), c in store.items() if interval == "1h"] + new, key=lambda c: c.start)
    reference = {(c.interval, c.start): c for c in cascade(after)}
    assert made and all(reference[(c.interval, c.start)] == c for c in made)
    assert {c.interval for c in made} == {"4h", "1d", "1w"}
    touched = {(i, s) for i in ("4h", "1d", "1w") for s in range(bucket_of(gap[0], i), gap[1], INTERVAL_MS[i])}
    assert {(c.interval, c.start) for c in made} == touched  # every bucket overlapping the gap, and only those


def test_a_bucket_not_ended_yet_is_not_final():
    days = series(MONDAY, MONDAY + 10 * D, "1d")
    weeks = rollup(Store(), "1d", [(MONDAY, MONDAY + 10 * D)], (MONDAY, MONDAY + 10 * D),
                   now=MONDAY + 10 * D + H).candles(days)
    assert [(w.start, w.final) for w in weeks] == [(MONDAY, True), (MONDAY + W, False)]


def test_a_stored_minute_inside_a_tick_gap_that_the_history_did_not_give_is_read_and_used():
    """1m gaps come from ticks: a minute may have its candle stored while its ticks are gone."""
    store = Store()
    stored_minute = candle(MONDAY + 2 * M, "1m", 50.0)
    store.put([stored_minute])
    new = [candle(MONDAY + k * M, "1m", 100.0) for k in (0, 1, 3, 4)]  # the history skipped minute 2
    job = rollup(store, "1m", [(MONDAY, MONDAY + 5 * M)], (MONDAY, MONDAY + H), keep_ms=lambda i: None)
    five = job.candles(new)[0]
    assert five.interval == "5m" and five == aggregate("BTC", "binance", "5m", MONDAY, [*new, stored_minute], True)


def test_a_minute_replaced_in_a_tick_gap_counts_as_stored_for_the_bucket_above():
    """The 5 minutes before the window are not stored, the window's first minutes are (ticks gone, candles kept):
    the stored 5-minute candle was made of them, and is rolled up again from their new candles, not kept."""
    start = MONDAY + 3 * M
    old = [candle(start + k * M, "1m", 10.0) for k in range(2)]
    store = Store()
    store.put(old + cascade(old, up_to="5m"))
    new = [candle(start + k * M, "1m", 20.0) for k in range(2)]
    job = rollup(store, "1m", [(start, start + 2 * M)], (start, start + H))
    (five, *_) = job.candles(new)
    assert job.stats.kept == {} and five == aggregate("BTC", "binance", "5m", MONDAY, new, final=True)


def test_an_edge_bucket_whose_children_retention_may_have_deleted_is_kept_as_stored():
    """A 1m back-fill of the last 30 days: the 5-minute bucket at its start began before the minutes' horizon."""
    now = MONDAY + 30 * D + 2 * M
    start = now - 30 * D + M  # the window's first whole minute within the 30 days kept
    stored_five = candle(bucket_of(start, "5m"), "5m", 70.0, volume=99.0)  # made of minutes deleted since
    store = Store()
    store.put([stored_five])
    new = series(start, start + 10 * M, "1m")
    job = rollup(store, "1m", [(start, start + 10 * M)], (start, now - now % M), now=now,
                 keep_ms=lambda interval: 30 * D if interval == "1m" else None)
    made = job.candles(new)
    assert ("5m", stored_five.start) not in {(c.interval, c.start) for c in made}
    assert job.stats.kept == {"5m": 1}
    fifteen = next(c for c in made if c.interval == "15m")
    fives = [c for c in made if c.interval == "5m"]
    assert fifteen == aggregate("BTC", "binance", "15m", fifteen.start, [stored_five, *fives], final=True)


def test_a_stored_edge_bucket_from_a_coarser_history_is_kept_and_the_week_uses_it():
    """A year of exchange days first, then a month of hours starting mid-day: that day stays the exchange's."""
    days = series(MONDAY, MONDAY + W, "1d", base_price=200.0)
    store = Store()
    store.put(days + cascade(days))
    start, end = MONDAY + 2 * D + 14 * H, MONDAY + 4 * D  # Wednesday 14:00 to Friday 00:00
    hours = series(start, end, "1h", base_price=300.0)
    job = rollup(store, "1h", [(start, end)], (start, end))
    made = {(c.interval, c.start): c for c in job.candles(hours)}
    assert ("1d", MONDAY + 2 * D) not in made and job.stats.kept == {"1d": 1}  # Wednesday: the exchange's day
    thursday = made[("1d", MONDAY + 3 * D)]  # inside the gap: the hours' day
    assert thursday == cascade([h for h in hours if h.start >= MONDAY + 3 * D], up_to="1d")[-1]
    week = made[("1w", MONDAY)]
    assert week == aggregate("BTC", "binance", "1w", MONDAY, [*days[:2], days[2], thursday, *days[4:]], final=True)
    partial = made[("4h", MONDAY + 2 * D + 12 * H)]  # 12:00-16:00 holds only the window's 14:00 and 15:00
    assert partial == aggregate("BTC", "binance", "4h", partial.start, hours[:2], final=True)


def test_a_day_whose_only_stored_hours_share_a_4h_bucket_with_the_gap_is_rolled_up_again():
    """Live data since 21:00, and a back-fill of the hours before: the day's stored candle knew 21:00 and 22:00
    only, through the 20:00-24:00 bucket the gap also touches; it is rolled up again, not kept."""
    day = MONDAY + 2 * D
    live = series(day + 21 * H, day + 23 * H, "1h", base_price=700.0)
    store = Store()
    store.put(live + cascade(live))
    start = day - D
    new = series(start, day + 21 * H, "1h")
    job = rollup(store, "1h", [(start, day + 21 * H)], (start, day + 23 * H))
    made = {(c.interval, c.start): c for c in job.candles(new)}
    reference = {(c.interval, c.start): c for c in cascade(new + live)}
    assert job.stats.kept == {} and made[("1d", day)] == reference[("1d", day)]
    assert made[("1w", MONDAY)] == reference[("1w", MONDAY)]


@settings(max_examples=60, deadline=None)
@given(stored=st.sets(st.integers(0, 2 * 168 - 1)), missing=st.sets(st.integers(0, 2 * 168 - 1)),
       window=st.tuples(st.integers(0, 2 * 168), st.integers(0, 2 * 168)))
def test_after_a_back_fill_every_bucket_it_touched_is_the_aggregate_of_what_is_stored_below_it(stored, missing,
                                                                                             window):
    """Whatever the store held (made by the cascade from what it holds), whatever the history lacks, and wherever
    the window falls: each coarser bucket over the gaps equals the aggregate of its stored children afterwards."""
    start, end = MONDAY + min(window) * H, MONDAY + max(window) * H
    hours = {t: candle(t, "1h", 100.0 + t // H % 23, volume=float(t // H % 7))
             for t in range(MONDAY, MONDAY + 2 * W, H)}
    store = Store()
    before = [hours[MONDAY + k * H] for k in sorted(stored)]
    if before:
        store.put(before + cascade(before))
    gaps = candle_gaps([c.start for c in before], start, end, "1h")
    new = [candle(t, "1h", 300.0 + t // H % 11, volume=2.0) for low, high in gaps for t in range(low, high, H)
           if (t - MONDAY) // H not in missing]
    job = rollup(store, "1h", gaps, (start, end))
    made = job.candles(new)
    after = Store(store)
    after.put(new + made)
    assert job.stats.kept == {}  # what the store held was made from what it holds: nothing to keep
    for c in made:
        width = INTERVAL_MS[c.interval]
        children = [after[(child_of(c.interval), t)] for t in range(c.start, c.start + width, INTERVAL_MS[child_of(
            c.interval)]) if (child_of(c.interval), t) in after]
        assert c == aggregate("BTC", "binance", c.interval, c.start, children, final=c.start + width <= NOW)
    touched = {(i, b) for i in ("4h", "1d", "1w") for low, high in gaps for b in range(bucket_of(low, i), high,
                                                                                          INTERVAL_MS[i])}
    with_children = {(i, b) for i, b in touched if any(
        (child_of(i), t) in after for t in range(b, b + INTERVAL_MS[i], INTERVAL_MS[child_of(i)]))}
    assert with_children <= {(c.interval, c.start) for c in made} <= touched  # each one touched, and only those


def test_nothing_in_the_gap_and_nothing_stored_rolls_nothing_up():
    job = rollup(Store(), "1d", [(MONDAY, MONDAY + 2 * W)], (MONDAY, MONDAY + 2 * W))
    assert job.candles([]) == [] and job.stats.published == {}


# --- a point history at any interval -------------------------------------------------------------------------

def points(*times: int, source: str = "coingecko") -> list[Tick]:
    return [Tick("BTC", source, t, 100.0 + (t - MONDAY) / H) for t in times]


@pytest.mark.parametrize("interval", ["1h", "1d", "1w"])
def test_a_point_history_rolls_up_into_any_interval_holding_back_the_open_bucket(interval):
    width = INTERVAL_MS[interval]
    step = INTERVAL_MS[child_of(interval)]
    rollup_ = PointRollup(interval)
    first = points(*range(MONDAY, MONDAY + width + 2 * step, step))  # the page ends inside the second bucket
    candles, ready = rollup_.add(first)
    assert [(c.start, c.interval, c.ticks, c.open, c.close, c.origin, c.volume, c.final) for c in candles] == [
        (MONDAY, interval, width // step, first[0].price, first[width // step - 1].price, "ticks", None, True)]
    assert ready == first[:width // step]  # the second bucket's points wait for its candle
    candles, ready = rollup_.add(points(MONDAY + width + 3 * step))
    assert candles == [] and ready == []
    candles, ready = rollup_.finish()
    assert [(c.start, c.ticks, c.high, c.low) for c in candles] == [
        (MONDAY + width, 3, 100.0 + (width + 3 * step) / H, 100.0 + width / H)]
    assert [t.ts for t in ready] == [MONDAY + width, MONDAY + width + step, MONDAY + width + 3 * step]


def test_a_point_history_skips_the_buckets_asked_and_keeps_the_last_price_of_a_repeated_time():
    rollup_ = PointRollup("1d", skip=[MONDAY + D])
    candles, _ = rollup_.add([Tick("BTC", "coingecko", MONDAY, 5.0), Tick("BTC", "coingecko", MONDAY, 7.0),
                              *points(MONDAY + D, MONDAY + 2 * D)])
    assert [(c.start, c.open, c.ticks) for c in candles] == [(MONDAY, 7.0, 1)]  # day 2 is skipped, day 3 still open
