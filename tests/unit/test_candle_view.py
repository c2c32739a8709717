"""The dashboard's in-memory candle view: which rows a window gets (no service needed)."""

from __future__ import annotations

import time

from cryptopulse.settings import Settings
from webui.candles import CandleView
from webui.series import CandleRow

M = 60_000


def row(start: int, price: float = 1.0) -> CandleRow:
    return CandleRow(start, price, price, price, price)


def test_a_window_is_one_source_sorted_and_within_its_bounds():
    now = int(time.time() * 1000) // M * M
    view = CandleView(Settings())
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
    view = CandleView(Settings())
    view.put("BTC", "simulated", row(now, 1.0))
    view.put("BTC", "simulated", row(now, 2.0))
    assert view.window("BTC", now, now)[1] == [row(now, 2.0)]


def test_old_candles_are_not_kept_and_old_windows_are_not_covered():
    now = int(time.time() * 1000)
    view = CandleView(Settings(), keep_ms=10 * M)
    assert not view.covers(now - M)  # nothing is answered from memory before the load
    view.ready.set()
    assert view.covers(now - 9 * M) and not view.covers(now - 11 * M)
    view.put("BTC", "simulated", row(now - 20 * M))  # older than it keeps: ignored
    view.put("BTC", "simulated", row(now - 5 * M))
    assert [r.start for r in view.window("BTC", 0, now)[1]] == [now - 5 * M]
    view.forget_old(now + 6 * M)
    assert view.window("BTC", 0, now) == (None, [])
