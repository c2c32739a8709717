"""The dashboard's in-memory views: which rows a window gets (no service needed)."""

from __future__ import annotations

import time
from dataclasses import replace

from cryptopulse.settings import Settings
from webui.series import CandleRow, TickRow
from webui.views import WindowView, candle_spec, tick_spec

M = 60_000


def row(start: int, price: float = 1.0) -> CandleRow:
    return CandleRow(start, price, price, price, price)


def test_a_window_is_one_source_sorted_and_within_its_bounds():
    now = int(time.time() * 1000) // M * M
    view = WindowView(Settings(), candle_spec(Settings()))
    for start in (now - 3 * M, now - M, now - 2 * M, now - 10 * M):
        view.put("BTC", "coingecko", row(start))
    view.put("BTC", "binance", row(now - 5 * M))
    view.put("ETH", "binance", row(now))
    source, rows = view.window("BTC", now - 4 * M, now)
    assert source == "coingecko"  # the source of the newest row in the window: never two sources mixed
    assert [r.start for r in rows] == [now - 3 * M, now - 2 * M, now - M]
    assert view.window("BTC", now - 6 * M, now - 4 * M) == ("binance", [row(now - 5 * M)])
    assert view.window("XRP", now - 6 * M, now) == (None, [])


def test_a_replaced_candle_keeps_its_latest_version():
    now = int(time.time() * 1000) // M * M
    view = WindowView(Settings(), candle_spec(Settings()))
    view.put("BTC", "simulated", row(now, 1.0))
    view.put("BTC", "simulated", row(now, 2.0))
    assert view.window("BTC", now, now)[1] == [row(now, 2.0)]


def test_old_candles_are_not_kept_and_old_windows_are_not_covered():
    now = int(time.time() * 1000)
    view = WindowView(Settings(), replace(candle_spec(Settings()), keep_ms=10 * M))
    assert not view.covers(now - M)  # nothing is answered from memory before the load
    view.ready.set()
    assert view.covers(now - 9 * M) and not view.covers(now - 11 * M)
    view.put("BTC", "simulated", row(now - 20 * M))  # older than it keeps: ignored
    view.put("BTC", "simulated", row(now - 5 * M))
    assert [r.start for r in view.window("BTC", 0, now)[1]] == [now - 5 * M]
    view.forget_old(now + 6 * M)
    assert view.window("BTC", 0, now) == (None, [])


def test_a_tick_view_keeps_an_hour_and_stops_answering_when_full():
    now = int(time.time() * 1000)
    view = WindowView(Settings(), replace(tick_spec(Settings()), max_rows=3))
    view.ready.set()
    assert view.covers(now - 3_600_000) and not view.covers(now - 2 * 3_600_000)
    for i in range(3):
        view.put("BTC", "binance", TickRow(now - 1000 * i, 100.0 + i))
    view.put("BTC", "binance", TickRow(now, 99.0))  # the same time again replaces, and does not count
    assert view.window("BTC", now - 5000, now) == ("binance", [TickRow(now - 2000, 102.0), TickRow(now - 1000, 101.0),
                                                               TickRow(now, 99.0)])
    assert view.covers(now - 1000)
    view.put("BTC", "binance", TickRow(now + 1, 98.0))  # a fourth row: more than it may hold
    assert view.full and not view.covers(now - 1000)  # the dashboard reads MongoDB instead
