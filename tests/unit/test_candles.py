"""The candle arithmetic of streams/candles.py: boundaries, out-of-order and late ticks, gaps, restarts."""

from __future__ import annotations

import random

from cryptopulse.candle import Candle, candle_id
from cryptopulse.times import bucket_start
from streams.candles import CandleBook

M = 60_000
T0 = 1_086_000_000_000 - 1_086_000_000_000 % M  # a whole minute in 2004


def finals(out: list[Candle]) -> list[Candle]:
    return [c for c in out if c.final]


def feed(book: CandleBook, ticks: list[tuple[int, float]], symbol: str = "AAA", source: str = "simulated",
         now: float = 0.0) -> list[Candle]:
    out: list[Candle] = []
    for i, (ts, price) in enumerate(ticks):
        book.add(symbol, source, ts, price, now=now, position=(0, i))
        out += book.poll(now)
    return out


def test_bucket_boundaries():
    assert bucket_start(T0) == T0
    assert bucket_start(T0 + M - 1) == T0
    assert bucket_start(T0 + M) == T0 + M
    assert bucket_start(-1) == -M  # floor, not truncation
    assert candle_id("BTC", "binance", T0) == f"BTC|binance|1m|{T0}"


def test_ticks_at_the_edges_go_to_their_own_minute_and_the_watermark_closes_it():
    book = CandleBook(grace_ms=10_000)
    out = feed(book, [(T0, 1.0), (T0 + M - 1, 2.0), (T0 + M, 3.0), (T0 + M + 9_999, 4.0)])
    assert finals(out) == []  # the first minute's end is not yet 10 s behind the newest tick
    out = feed(book, [(T0 + M + 10_000, 5.0)])
    (closed,) = finals(out)
    assert (closed.start, closed.open, closed.high, closed.low, closed.close, closed.ticks) == (T0, 1.0, 2.0, 1.0,
                                                                                                2.0, 2)
    assert closed.origin == "ticks" and closed.volume is None and closed.id == f"AAA|simulated|1m|{T0}"


def test_a_minute_with_one_tick():
    book = CandleBook()
    feed(book, [(T0 + 30_000, 7.5)])
    (closed,) = book.close_all()
    assert (closed.open, closed.high, closed.low, closed.close, closed.ticks, closed.final) == (7.5, 7.5, 7.5, 7.5,
                                                                                                1, True)


def test_out_of_order_within_grace_updates_the_candle_and_open_close_follow_event_time():
    book = CandleBook(grace_ms=10_000)
    out = feed(book, [(T0 + 20_000, 2.0), (T0 + 5_000, 1.0), (T0 + 50_000, 3.0), (T0 + M + 5_000, 9.0),
                      (T0 + 40_000, 0.5), (T0 + 59_999, 4.0)])  # the last two arrive in the next minute's grace
    assert finals(out) == []
    (closed,) = finals(feed(book, [(T0 + M + 10_000, 9.5)]))
    assert (closed.open, closed.high, closed.low, closed.close, closed.ticks) == (1.0, 4.0, 0.5, 4.0, 5)


def test_late_ticks_are_counted_and_never_touch_a_closed_candle():
    book = CandleBook(grace_ms=10_000)
    out = feed(book, [(T0 + 1_000, 1.0), (T0 + M + 10_000, 2.0)])
    (closed,) = finals(out)
    assert book.add("AAA", "simulated", T0 + 30_000, 100.0) is False
    assert book.stats.late == 1
    later = book.close_all()
    assert [c.start for c in later] == [T0 + M]  # no second version of the closed minute
    assert closed.high == 1.0


def test_a_gap_produces_no_candles():
    book = CandleBook()
    out = feed(book, [(T0, 1.0), (T0 + 5 * M, 2.0)])
    out += book.close_all()
    assert [c.start for c in finals(out)] == [T0, T0 + 5 * M]


def test_keys_are_independent_past_windows_are_not_late_because_of_live_ticks():
    book = CandleBook()
    book.add("LIVE", "simulated", 1_800_000_000_000, 1.0)
    assert book.add("OLD", "simulated", T0, 2.0) is True
    assert book.add("LIVE", "binance", T0, 2.0) is True  # another source is another key
    assert sorted(c.symbol + c.source for c in book.close_all()) == ["LIVEbinance", "LIVEsimulated", "OLDsimulated"]


def test_updates_at_most_once_a_second_per_open_candle_and_the_final_at_once():
    book = CandleBook(grace_ms=10_000, update_every=1.0, idle_close=1e9)
    book.add("AAA", "s", T0, 1.0)
    assert [c.final for c in book.poll(100.0)] == [False]
    book.add("AAA", "s", T0 + 1_000, 2.0)
    assert book.poll(100.5) == []  # too soon
    (update,) = book.poll(101.0)
    assert (update.close, update.ticks, update.final) == (2.0, 2, False)
    assert book.poll(105.0) == []  # nothing changed: nothing to say
    book.add("AAA", "s", T0 + M + 10_000, 3.0)
    out = book.poll(105.1)
    assert [(c.start, c.final) for c in out] == [(T0, True), (T0 + M, False)]


def test_an_idle_key_is_closed_by_the_wall_clock_and_then_its_minute_is_late():
    book = CandleBook(idle_close=30.0)
    book.add("AAA", "s", T0, 1.0, now=0.0)
    assert finals(book.poll(29.0)) == []
    (closed,) = finals(book.poll(30.0))
    assert closed.start == T0
    assert book.add("AAA", "s", T0 + 2_000, 5.0, now=31.0) is False
    assert book.stats.idle_closed == 1


def test_a_repeated_tick_time_replaces_its_price_like_the_sink_does():
    book = CandleBook()
    feed(book, [(T0, 1.0), (T0 + 1_000, 9.0), (T0 + 1_000, 2.0)])
    (closed,) = book.close_all()
    assert (closed.high, closed.close, closed.ticks) == (2.0, 2.0, 2)


def test_replay_from_is_the_first_tick_of_the_oldest_open_candle():
    book = CandleBook(grace_ms=10_000)
    book.add("AAA", "s", T0, 1.0, position=(0, 10))
    book.add("BBB", "s", T0 + 5_000, 1.0, position=(0, 11))
    book.add("AAA", "s", T0 + M + 10_000, 1.0, position=(0, 12))  # closes AAA's first minute
    assert book.replay_from() == {0: 11}


def test_restart_in_the_middle_of_a_minute_yields_identical_candles():
    rng = random.Random(4)
    ticks = []
    for second in range(0, 300):  # five minutes, one tick a second, a few out of order, some late, a gap
        if 120 <= second < 180:
            continue
        ticks.append((T0 + second * 1000 + rng.randrange(1000), round(100 + rng.random(), 4)))
    for i in range(5, len(ticks) - 3, 17):
        ticks[i], ticks[i + 2] = ticks[i + 2], ticks[i]
    ticks.insert(200, (T0 + 10_000, 1.0))  # late

    whole = CandleBook()
    expected = finals(feed(whole, ticks)) + whole.close_all()

    crash_at = 95  # mid second minute
    first = CandleBook()
    before = finals(feed(first, ticks[:crash_at]))
    replay = first.replay_from()[0]  # the processor commits this offset; a new process reads on from there
    assert replay < crash_at
    closed_ids = {c.id for c in before}
    second = CandleBook()
    after: list[Candle] = []
    for i, (ts, price) in enumerate(ticks[replay:], start=replay):
        if f"AAA|simulated|1m|{bucket_start(ts)}" in closed_ids:
            second.observe("AAA", "simulated", ts)  # a final candle on the topic: leave it alone
        else:
            second.add("AAA", "simulated", ts, price, position=(0, i))
        after += finals(second.poll(0.0))
    after += second.close_all()
    assert before + after == expected
    assert len(expected) == 4  # minutes 0, 1, 3, 4: none invented for the gap


def test_a_replay_started_from_the_committed_event_times_drops_the_late_ticks_it_dropped_before():
    ticks = [("AAA", T0 + M + 5_000), ("AAA", T0 + M + 50_000),
             ("BBB", T0 + M + 1_000),   # BBB's minute stays open: the partition's replay point
             ("AAA", T0 + 20_000),      # late for AAA (its event time is past minute 0), a minute without a candle
             ("AAA", T0 + 2 * M + 15_000)]  # AAA's minute 1 closes

    def run(book: CandleBook, start: int, decided: set[str]) -> list[Candle]:
        out: list[Candle] = []
        for i, (symbol, ts) in enumerate(ticks[start:], start=start):
            if candle_id(symbol, "s", bucket_start(ts)) in decided:  # final on the candles topic: only observed
                book.observe(symbol, "s", ts, position=(0, i))
            else:
                book.add(symbol, "s", ts, 1.0 + i, position=(0, i))
            out += finals(book.poll(0.0))
        return out

    first = CandleBook()
    before = run(first, 0, set())
    assert [c.start for c in before] == [T0 + M] and first.stats.late == 1
    replay, times = first.replay_from()[0], first.event_times(0)
    assert replay == 2 and set(times) == {("AAA", "s"), ("BBB", "s")}
    expected = before + first.close_all()

    again = CandleBook()
    again.restore(times)  # what the commit recorded
    after = run(again, replay, {c.id for c in before})
    assert before + after + again.close_all() == expected
    assert again.stats.late == 1

    afresh = CandleBook()  # without them, the late tick opens a minute one process never had
    assert T0 in [c.start for c in run(afresh, replay, {c.id for c in before}) + afresh.close_all()]


def test_event_times_are_those_of_the_keys_last_seen_on_the_partition():
    book = CandleBook()
    book.add("AAA", "s", T0, 1.0, position=(0, 1))
    book.observe("BBB", "s", T0 + 5_000, position=(1, 1))
    book.add("CCC", "s", T0, 1.0)  # no position (a back-fill's book): on no partition
    assert book.event_times(0) == {("AAA", "s"): (T0, -(2**62))}
    assert book.event_times(1) == {("BBB", "s"): (T0 + 5_000, -(2**62))}


def test_an_exchange_candle_is_a_final_ohlc_candle_with_its_volume():
    candle = Candle.ohlc("BTC", "binance", T0, 1.0, 3.0, 0.5, 2.0, 1234.5, quote="USDT")
    assert candle.tick().ts == T0 + 59_999 and candle.tick().price == 2.0
    record = candle.to_record()
    assert record == {"_id": f"BTC|binance|1m|{T0}", "symbol": "BTC", "source": "binance", "interval": "1m",
                      "start": T0, "open": 1.0, "high": 3.0, "low": 0.5, "close": 2.0, "ticks": 0,
                      "volume": 1234.5, "origin": "ohlc", "final": True}


def test_a_point_history_is_rolled_up_page_by_page_and_its_points_wait_for_their_candle():
    from cryptopulse.tick import Tick
    from streams.history import PointRollup

    def ticks(*offsets: int) -> list[Tick]:
        return [Tick("BTC", "coingecko", T0 + o, 100.0 + o / 1000) for o in offsets]

    rollup = PointRollup(skip=[T0 + 2 * M])  # MongoDB holds something for minute 2: not rolled up
    candles, ready = rollup.add(ticks(0, 20_000, 50_000, M + 10_000))  # the page ends inside minute 1
    assert [(c.start, c.open, c.close, c.ticks, c.final, c.origin) for c in candles] == [
        (T0, 100.0, 150.0, 3, True, "ticks")]
    assert [t.ts for t in ready] == [T0, T0 + 20_000, T0 + 50_000]  # minute 1's point waits for its candle
    candles, ready = rollup.add(ticks(M + 40_000, 2 * M + 5_000, 5 * M))  # minute 1 ends; 2 is skipped; 3, 4: gap
    assert [(c.start, c.ticks, c.high) for c in candles] == [(T0 + M, 2, 100.0 + 100.0)]
    assert [t.ts - T0 for t in ready] == [M + 10_000, M + 40_000, 2 * M + 5_000]
    candles, ready = rollup.finish()  # the end of the gap: the last minute is whole
    assert [c.start for c in candles] == [T0 + 5 * M] and [t.ts for t in ready] == [T0 + 5 * M]


def test_records_match_the_candle_schema():
    import json
    from pathlib import Path

    import fastavro

    schema = fastavro.parse_schema(json.loads((Path(__file__).parents[2] / "schemas" / "candle.avsc").read_text()))
    book = CandleBook()
    book.add("AAA", "s", T0, 1.0)
    (candle,) = book.close_all()
    assert fastavro.validate(candle.to_record(), schema, raise_errors=True)


def test_event_times_read_as_datetimes_come_back_as_exact_milliseconds():
    from datetime import UTC, datetime, timedelta

    from cryptopulse.times import epoch_ms

    assert epoch_ms(datetime(2004, 5, 19, 12, 0, 9, 999_000, tzinfo=UTC)) == 1_084_968_009_999
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC) - timedelta(milliseconds=1)) == -1
    assert epoch_ms(T0) == T0
