"""The cascade's arithmetic (streams/cascade.py): every coarser interval equals the reference aggregation of the
1-minute candles it covers, whatever their order within the grace, their origin, their volumes and the gaps;
late children are dropped; a checkpoint and a replay give the same candles; state stays bounded."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptopulse.candle import INTERVAL_MS, INTERVALS, Candle, aggregate, bucket_of
from cryptopulse.times import DAY_MS, MINUTE_MS
from streams.cascade import CascadeBook

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a Thursday


def minutes(count: int, seed: int = 1, gaps: float = 0.05, ohlc: float = 0.2, start: int = T0) -> list[Candle]:
    """`count` final 1-minute candles of one key with some gaps, some exchange-OHLC minutes (with volume), the rest
    rolled up from ticks (no volume)."""
    rng = random.Random(seed)
    out, price = [], 100.0
    for i in range(count):
        if rng.random() < gaps:
            continue
        o = price
        c = max(1.0, o + rng.uniform(-2, 2))
        h, low = max(o, c) + rng.uniform(0, 1), min(o, c) - rng.uniform(0, 1)
        price = c
        if rng.random() < ohlc:
            out.append(Candle.ohlc("BTC", "sim", start + i * MINUTE_MS, o, h, low, c, rng.uniform(1, 100)))
        else:
            out.append(Candle("BTC", "sim", start + i * MINUTE_MS, o, h, low, c, rng.randint(1, 60), final=True))
    return out


def reference(minute_candles: list[Candle], interval: str) -> dict[int, Candle]:
    """Each bucket of `interval` made straight from the minutes it covers."""
    groups: dict[int, list[Candle]] = {}
    for m in minute_candles:
        groups.setdefault(bucket_of(m.start, interval), []).append(m)
    return {start: aggregate("BTC", "sim", interval, start, group, final=True) for start, group in groups.items()}


def same(got: dict[int, Candle], expected: dict[int, Candle]) -> bool:
    """Equal candles, the volume within a rounding (a sum of sums is not bit for bit the sum of the parts)."""
    if got.keys() != expected.keys():
        return False
    for start, a in got.items():
        b = expected[start]
        if (a.volume is None) != (b.volume is None) or (a.volume is not None and not math.isclose(a.volume, b.volume,
                                                                                                   rel_tol=1e-12)):
            return False
        if dataclasses.replace(a, volume=None) != dataclasses.replace(b, volume=None):
            return False
    return True


def finals(candles: list[Candle]) -> dict[str, dict[int, Candle]]:
    out: dict[str, dict[int, Candle]] = {}
    for c in candles:
        if c.final:
            out.setdefault(c.interval, {})[c.start] = c
    return out


def run(book: CascadeBook, inputs: list[Candle], now: float = 0.0) -> list[Candle]:
    published = []
    for candle in inputs:
        book.add(candle, now)
        published += book.poll(now)
    return published + book.close_all(now)


def test_every_interval_equals_the_reference_aggregation_of_its_minutes():
    ms = minutes(3 * 10_080 // 2, seed=7)  # ten and a half days: every interval has whole and partial buckets
    got = finals(run(CascadeBook(), ms))
    for interval in INTERVALS[1:]:
        assert same(got[interval], reference(ms, interval)), interval


def test_updates_of_open_minutes_and_out_of_order_finals_change_nothing_in_the_end():
    # The tick roll-up publishes updates of an open minute, and the next minute opens while the last one is in its
    # grace period: the coarser candles still end up as the reference says.
    ms = minutes(600, seed=3, gaps=0.0)
    inputs = []
    for m, nxt in zip(ms, ms[1:] + [None], strict=True):
        inputs.append(Candle(m.symbol, m.source, m.start, m.open, m.high, m.low, m.open, 1, origin="ticks"))
        if nxt is not None:
            inputs.append(Candle(nxt.symbol, nxt.source, nxt.start, nxt.open, nxt.open, nxt.open, nxt.open, 1))
        inputs.append(m)
    ms_as_ticks = [Candle(m.symbol, m.source, m.start, m.open, m.high, m.low, m.close, m.ticks, m.volume, m.origin,
                          True) for m in ms]
    got = finals(run(CascadeBook(), inputs))
    for interval in ("5m", "15m", "1h", "4h"):
        assert same(got[interval], reference(ms_as_ticks, interval)), interval


def test_a_child_of_a_closed_bucket_is_late_and_changes_nothing():
    ms = minutes(20, gaps=0.0)
    book = CascadeBook()
    published = run(book, ms)
    late = Candle("BTC", "sim", ms[2].start, 1.0, 1e9, 0.5, 1.0, 1, final=True)
    assert book.is_late(late) and not book.add(late)
    assert book.stats.late == 1 and book.poll(0.0) == []
    assert finals(published)["5m"][T0] == reference(ms, "5m")[T0]


def test_a_checkpoint_and_a_replay_from_it_give_the_same_candles():
    ms = minutes(2_000, seed=11)
    whole = finals(run(CascadeBook(), ms))
    book = CascadeBook()
    cut = 1_234
    first = run_without_close(book, ms[:cut])
    saved = {key: book.state(key) for key in book.keys()}
    again = CascadeBook()
    for key, record in saved.items():
        again.restore(key, record)
    replayed = run(again, ms[cut - 50:])  # a replay re-reads some children it has seen: they replace themselves
    got = finals(first + replayed)
    for interval in INTERVALS[1:]:
        assert same(got.get(interval, {}), whole.get(interval, {})), interval


def run_without_close(book: CascadeBook, inputs: list[Candle]) -> list[Candle]:
    published = []
    for candle in inputs:
        book.add(candle)
        published += book.poll(0.0)
    return published


def test_weeks_start_on_monday_and_days_at_midnight_utc():
    monday = T0 + 4 * DAY_MS  # 2026-01-05
    assert bucket_of(T0 + 12 * 3_600_000, "1w") == monday - 7 * DAY_MS
    assert bucket_of(monday, "1w") == monday and bucket_of(monday - 1, "1d") == monday - DAY_MS


def test_updates_are_throttled_per_interval_and_a_quiet_key_closes_after_its_width():
    book = CascadeBook()
    m = Candle("BTC", "sim", T0, 1.0, 2.0, 0.5, 1.5, 3, final=True)
    book.add(m, now=0.0)
    first = book.poll(0.0)
    assert {c.interval for c in first} == set(INTERVALS[1:]) and not any(c.final for c in first)
    book.add(Candle("BTC", "sim", T0 + MINUTE_MS, 1.5, 3.0, 1.0, 2.0, 2, final=True), now=0.5)
    assert [c.interval for c in book.poll(0.5)] == []  # within a second of the last update: nothing yet
    assert [c.interval for c in book.poll(1.0)] == ["5m"]
    idle = book.poll(5 * 60 + 31.0)  # the 5-minute bucket of a quiet key closes after 5 min + 30 s
    assert [(c.interval, c.final) for c in idle if c.final] == [("5m", True)]


def test_state_stays_bounded_however_long_it_runs():
    book = CascadeBook()
    for m in minutes(40_000, seed=5, gaps=0.01):
        book.add(m)
        book.poll(0.0)
    record = book.state(("BTC", "sim"))
    buckets = sum(len(level["buckets"]) for level in record["levels"])
    children = sum(len(b["children"]) for level in record["levels"] for b in level["buckets"])
    assert buckets <= 2 * len(INTERVALS) and children <= 7 * buckets


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=0.5),
       st.floats(min_value=0, max_value=1), st.integers(min_value=1, max_value=3_000))
def test_any_history_of_minutes_rolls_up_as_the_reference_says(seed, gaps, ohlc, count):
    ms = minutes(count, seed=seed, gaps=gaps, ohlc=ohlc, start=T0 + seed * MINUTE_MS)
    got = finals(run(CascadeBook(), ms))
    for interval in INTERVALS[1:]:
        assert same(got.get(interval, {}), reference(ms, interval)), interval


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_bucket_is_a_whole_number_of_its_children(interval):
    i = INTERVALS.index(interval)
    if i:
        assert INTERVAL_MS[interval] % INTERVAL_MS[INTERVALS[i - 1]] == 0
