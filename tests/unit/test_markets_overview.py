"""The markets overview: each coin's row (the 24 h chart's numbers, a sparkline, the newest live tick) and the one
WebSocket subscription that brings every coin's overview and live ticks (in-process, no service)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, MINUTE_MS
from webui.app import create_app
from webui.history import SPARK_POINTS, build_snapshot, overview_coin
from webui.live import tick_message
from webui.series import CandleRow
from webui.state import state
from webui.views import WindowView, candle_spec

NOW = 1_790_000_000_000 // MINUTE_MS * MINUTE_MS


def day_of_candles(first_price: float, start: int, count: int = 1440) -> list[CandleRow]:
    rows, price = [], first_price
    for i in range(count):
        close = price * (1.001 if i % 3 else 0.998)
        rows.append(CandleRow(start + i * MINUTE_MS, price, max(price, close) + 1, min(price, close) - 1, close, 2.0))
        price = close
    return rows


def test_a_coins_row_is_its_24h_charts_numbers_with_a_sparkline():
    rows = day_of_candles(100.0, NOW - DAY_MS + MINUTE_MS)
    coin = overview_coin("BTC", NOW, ("simulated", rows), (None, []), [])
    chart = build_snapshot("BTC", "24h", NOW, ("simulated", rows), (None, []), [], 1500)["stats"]
    assert (coin["price"], coin["first"], coin["change"], coin["change_pct"]) == \
        (chart["price"], chart["first"], chart["change"], chart["change_pct"])
    assert (coin["high"], coin["low"], coin["volume"], coin["last_update"]) == \
        (chart["max"], chart["min"], chart["volume"], chart["last_update"])
    assert coin["source"] == "simulated" and coin["simulated"] and coin["basis"] == "candles_1m"
    assert coin["spark_ms"] == 1_800_000 and len(coin["spark"]) == SPARK_POINTS == 48  # as docs/webui.md says
    assert coin["spark"][-1][1] == rows[-1].close  # the last bucket's close is the last candle's


def test_a_newer_live_tick_sets_the_price_and_moves_change_high_and_low():
    rows = day_of_candles(100.0, NOW - DAY_MS + MINUTE_MS)
    top = max(r.high for r in rows)
    tick = {"symbol": "BTC", "source": "simulated", "ts": NOW + 5_000, "price": top + 10, "volume_24h": 1.0}
    foreign = {**tick, "source": "binance", "ts": NOW + 6_000, "price": 1.0}
    coin = overview_coin("BTC", NOW + 7_000, ("simulated", rows), (None, []), [tick, foreign])
    assert coin["price"] == top + 10 and coin["last_update"] == NOW + 5_000 and coin["high"] == top + 10
    assert coin["change"] == pytest.approx(top + 10 - rows[0].open)


def test_a_coin_without_data_is_a_row_of_nothing():
    coin = overview_coin("XRP", NOW, (None, []), (None, []), [])
    assert coin["price"] is None and coin["spark"] == [] and coin["source"] is None and coin["change_pct"] is None


def live(symbol: str, ts: int, price: float) -> dict[str, Any]:
    return tick_message({"symbol": symbol, "source": "simulated", "ts": ts, "price": price, "volume_24h": 5.0,
                         "change_24h_pct": 0.1, "published_at": None})


def test_one_subscription_brings_every_coins_row_and_every_coins_live_ticks():
    symbols = ("BTC", "ETH", "XRP")
    settings = Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        app = create_app(settings, start_consumer=False, views=False, probe_seconds=0, symbols=symbols)
        async with app.test_app() as test_app:
            shared = state(app)
            view = WindowView(settings, candle_spec(settings, "1m"))
            now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
            for symbol, price in (("BTC", 60_000.0), ("ETH", 3_000.0)):
                for row in day_of_candles(price, now - DAY_MS + MINUTE_MS):
                    view.put(symbol, "simulated", row)
            view.ready.set()
            shared.history.views = {"1m": view}
            asked = []

            async def find(collection: str, query: dict[str, Any], *_: Any) -> list[dict[str, Any]]:
                asked.append((collection, query["symbol"]))
                return []

            shared.history._find = find  # XRP has no candles: its ticks are read, here from an empty store
            async with test_app.test_client().websocket("/ws") as ws:
                await ws.send(json.dumps({"type": "overview"}))
                overview = json.loads(await asyncio.wait_for(ws.receive(), 10))
                shared.hub.publish([live("ETH", now + 1_000, 3_100.0), live("XRP", now + 1_000, 0.5),
                                    live("BTC", now + 2_000, 61_000.0)])
                ticks: list[dict[str, Any]] = []
                while len(ticks) < 3:
                    message = json.loads(await asyncio.wait_for(ws.receive(), 10))
                    ticks += message["ticks"] if message["type"] == "ticks" else [message]
                await ws.send(json.dumps({"type": "overview"}))  # again within the freshness: the shared answer
                again = json.loads(await asyncio.wait_for(ws.receive(), 10))
            assert asked == [("prices", {"$in": ["XRP"]})]  # one query, for the coin without candles only
            return overview, ticks, again

    overview, ticks, again = asyncio.run(scenario())
    assert overview["type"] == "overview" and [c["symbol"] for c in overview["coins"]] == list(symbols)
    btc, eth, xrp = overview["coins"]
    assert btc["basis"] == eth["basis"] == "candles_1m" and len(btc["spark"]) >= SPARK_POINTS
    assert xrp["price"] is None and xrp["spark"] == []
    assert overview["server_ms"] is not None and overview["end"] - overview["start"] == DAY_MS
    assert [(t["symbol"], t["price"]) for t in ticks] == [("ETH", 3_100.0), ("XRP", 0.5), ("BTC", 61_000.0)]
    assert again == overview


def test_the_overview_and_the_chart_are_pages_of_their_own():
    async def scenario() -> list[tuple[int, str]]:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=("BTC", "ETH"))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            return [(r.status_code, await r.get_data(as_text=True))
                    for r in [await client.get(path) for path in ("/", "/markets", "/chart?symbol=ETH")]]

    (root, landing), (markets, _), (chart, page) = asyncio.run(scenario())
    assert root == markets == chart == 200
    assert 'id="markets"' in landing and 'href="/chart?symbol=ETH"' in landing and "markets.js" in landing
    assert 'id="chart"' in page and 'href="/markets"' in page and 'data-indicator="rsi14"' in page
