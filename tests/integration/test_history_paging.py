"""Charts of every range and pages of every interval on the real stack: ten days of a coin of this run's own, in every
interval, published on the candle topics before the dashboard starts and stored by the namespace's sink. A fresh app
loads its views from the topics (no MongoDB read), charts each range from them, and pages back through each interval
until the history ends: the views' part and MongoDB's (read by `_id`) together equal what MongoDB holds."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import random
import string
import time
from typing import Any

import pytest

from cryptopulse.candle import INTERVAL_MS, INTERVALS
from cryptopulse.store import candle_collection
from cryptopulse.times import DAY_MS, MINUTE_MS
from streams.history import CandlePublisher
from tests.integration.history_data import as_row, publish_history
from tests.integration.test_webui import receive
from webui.app import create_app
from webui.state import state
from webui.timeframes import DEFAULT_TIMEFRAME, MAX_BARS, span_ms
from webui.views import KEEP_MS

SYMBOL = "ZP" + "".join(random.choices(string.ascii_uppercase, k=4))
DAYS = 10


@pytest.fixture(scope="module")
def history(settings, mongo) -> dict[str, Any]:
    return publish_history(settings, mongo, SYMBOL, DAYS)


def stored(mongo, settings, interval: str) -> list[list[Any]]:
    docs = mongo[settings.database][candle_collection(interval)].find({"symbol": SYMBOL})
    return sorted([int(d["start"].timestamp() * 1000), d["open"], d["high"], d["low"], d["close"], d["volume"]]
                  for d in docs)


async def views_ready(app, timeout: float = 120) -> dict[str, Any]:
    views = state(app).views
    for name, view in views.items():
        assert await asyncio.to_thread(view.ready.wait, timeout), (name, view.status())
    return {name: view.status() for name, view in views.items()}


def test_a_fresh_dashboard_loads_its_views_from_kafka_and_charts_every_range_from_them(settings, history):
    """Candles published before the app started are in its views, from the topics alone (the store is never asked:
    the app is given a MongoDB nobody listens on); each range's chart is its interval's candles of the window."""
    async def scenario() -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
        nowhere = dataclasses.replace(settings, mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
        app = create_app(nowhere, start_consumer=False, probe_seconds=0, symbols=(SYMBOL,))
        async with app.test_app():
            status = await views_ready(app)
            store = state(app).history
            charts = {range_: await store.snapshot(SYMBOL, range_) for range_ in DEFAULT_TIMEFRAME}
            charts["30d of 4h"] = await store.snapshot(SYMBOL, "30d", interval="4h")
            view = state(app).views["1m"]
            newest = history["1m"][-1]
            moved = dataclasses.replace(newest, close=newest.close + 1.0, high=max(newest.high, newest.close + 1.0))
            await asyncio.to_thread(CandlePublisher(settings).publish, [moved])  # the open minute, updated
            deadline = time.monotonic() + 60
            while view.window(SYMBOL, moved.start, moved.start)[1][-1].close != moved.close:
                assert time.monotonic() < deadline, f"the update never reached the view: {view.status()}"
                await asyncio.sleep(0.2)
            followed = view.status()
        return status, charts, followed

    status, charts, followed = asyncio.run(scenario())
    for name in INTERVALS:
        assert status[name]["ready"] and status[name]["rows"] >= 1, (name, status[name])
    assert status["1m"]["skipped"] >= (DAYS * DAY_MS - KEEP_MS["1m"]) // MINUTE_MS - 120  # older minutes: keys only
    assert followed["read"] == status["1m"]["read"] + 1
    now = int(time.time() * 1000)
    for range_, snap in charts.items():
        interval = snap["interval"]
        assert snap["basis"] == ("ticks" if interval == "5s" else candle_collection(interval)), range_
        if interval == "5s":
            continue  # no ticks of this coin: an empty 1 h chart
        expected = [as_row(c)[:5] for c in history[interval] if snap["start"] <= c.start <= snap["end"]]
        assert snap["candles"] == expected, range_
        assert snap["bucket_ms"] == INTERVAL_MS[interval] and len(snap["candles"]) <= MAX_BARS
        assert snap["end"] - snap["start"] == span_ms(snap["range"], interval) and snap["end"] <= now
    assert charts["30d of 4h"]["interval"] == "4h" and len(charts["30d of 4h"]["candles"]) == len(history["4h"])


@pytest.mark.parametrize(("interval", "limit"), [("1m", 1000), ("5m", 700), ("1h", 100), ("1d", 4)])
def test_pages_go_back_through_every_interval_until_the_history_ends_and_equal_mongodb(settings, mongo, history,
                                                                                        interval, limit):
    async def scenario() -> tuple[list[dict[str, Any]], list[list[str]]]:
        app = create_app(settings, start_consumer=False, probe_seconds=0, symbols=(SYMBOL,))
        async with app.test_app() as test_app:
            await views_ready(app)
            client = test_app.test_client()
            pages, path = [], f"/api/v1/history?symbol={SYMBOL}&interval={interval}&limit={limit}"
            for _ in range(40):
                response = await client.get(path)
                body = json.loads(await response.get_data(as_text=True))
                if response.status_code == 503:  # a store read that outlived the deadline: asked again, as told
                    await asyncio.sleep(float(response.headers["Retry-After"]))
                    continue
                assert response.status_code == 200, body
                pages.append(body)
                if body["next"] is None:
                    break
                path = body["next"]
            else:
                pytest.fail("the pages never ended")
            # the last page as CSV: a window of its own `before` (the newest page moves on when a minute begins)
            last = await client.get(f"{path}&format=csv")
            return pages, list(csv.reader(io.StringIO(await last.get_data(as_text=True))))

    pages, rows = asyncio.run(scenario())
    got = sorted(row for page in pages for row in page["rows"])
    assert got == stored(mongo, settings, interval)  # every bar once, the views' part and the store's
    assert all(p["interval"] == interval and p["basis"] == candle_collection(interval) for p in pages)
    assert pages[-1]["next_before"] is None and len(pages) <= -(-len(got) // limit) + 2
    assert [[int(r[0]), *map(float, r[2:7])] for r in rows[1:]] == [
        [r[0], *map(float, r[1:6])] for r in pages[-1]["rows"]]
    print(f"\n{interval}: {len(pages)} pages of {limit}, server ms {[p['server_ms'] for p in pages]}")


def test_a_subscribe_names_its_interval_and_its_indicators_are_of_those_bars(settings, history):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        app = create_app(settings, start_consumer=False, probe_seconds=0, symbols=(SYMBOL,))
        async with app.test_app() as test_app:
            await views_ready(app)
            async with test_app.test_client().websocket("/ws") as ws:
                await ws.send(json.dumps({"type": "subscribe", "symbol": SYMBOL, "range": "7d", "interval": "1h",
                                          "indicators": True}))
                snap = await receive(ws, "snapshot")
                indicators = await receive(ws, "indicators")
                await ws.send(json.dumps({"type": "subscribe", "symbol": SYMBOL, "range": "7d", "interval": "1m"}))
                refused = await receive(ws, "error")
        return snap, indicators, refused

    snap, indicators, refused = asyncio.run(scenario())
    assert (snap["interval"], snap["basis"], snap["bucket_ms"]) == ("1h", "candles_1h", 3_600_000)
    assert indicators["interval"] == "1h" and [t for t, _ in indicators["series"]["sma20"]] == \
        [c[0] for c in snap["candles"]]  # defined from the first bar: 50 hourly bars before the window warm it up
    assert refused["message"].startswith("10080 bars of 1m over 7d is more than 2200")
