"""The markets overview and the chart's indicators in headless Chromium, on the real stack (the test namespace).

A simulated market of six coins: the last 24 hours as 1-minute candles published on the candles topic (stored by
the namespace's sink before the dashboard starts; its 1m view loads them from the topic), then live ticks from a
producer whose walk continues that history (same seed). The overview must list every coin, move with the live ticks over
its one subscription, sort, lead to a coin's chart in one click and back, fit a phone's width; the chart's
indicator toggles must ask the server for the indicators and be remembered by the page.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from confluent_kafka import Producer, TopicPartition
from playwright.sync_api import Page, expect

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.kafka import admin
from cryptopulse.times import DAY_MS, MINUTE_MS
from producer.sources.simulated import simulated_history
from tests.integration.browser import ROOT, chromium, dashboard, producing
from tests.integration.conftest import wait_for
from tests.integration.test_webui_browser import counter

COINS = ("BTC", "ETH", "XRP", "SOL", "ADA", "DOGE")


@pytest.fixture(scope="module")
def market(settings, mongo) -> Iterator[int]:
    """24 h of candles for COINS in candles_1m, ending now; yields the seed the live producer must use."""
    seed = int(time.time())
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    codec = AvroCodec(settings, settings.candles_topic, "candle")
    kafka = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 20})
    collection = mongo[settings.database]["candles_1m"]
    # what earlier tests stored for these coins from other sources (test_backfill's SOL from a Binance fake, whose
    # last candle may end in the future) would be the overview's latest tick: this market is the simulated one
    foreign = {"symbol": {"$in": list(COINS)}, "source": {"$ne": "simulated"}}
    for name in ("prices", "candles_1m"):
        mongo[settings.database][name].delete_many(foreign)
    before = collection.count_documents({})
    count = 0
    for symbol in COINS:
        for candle in simulated_history(symbol, seed, now - DAY_MS, now):
            kafka.produce(settings.candles_topic, key=candle.id.encode(), value=codec.encode(candle.to_record()))
            count += 1
        kafka.poll(0)
    assert kafka.flush(120) == 0
    wait_for(lambda: collection.count_documents({}) >= before + count, 300, f"{count} candles in candles_1m")
    yield seed
    # the namespace outlives this module: later tests chart BTC, ETH and XRP from their own ticks, not from this day,
    # neither in MongoDB nor on the candles topic a later dashboard's views load from (its records so far deleted)
    collection.delete_many({"symbol": {"$in": list(COINS)}, "start": {"$gte": datetime.fromtimestamp(
        (now - DAY_MS) / 1000, UTC)}})
    ends = topics.end_offsets_by_partition(settings, settings.candles_topic)
    client = admin(settings)  # kept until the futures are done: a client dropped early never answers them
    deleted = client.delete_records([TopicPartition(settings.candles_topic, p, end) for p, end in ends.items()])
    for future in deleted.values():
        future.result(30)


@pytest.fixture(scope="module")
def server(market) -> Iterator[str]:
    with dashboard({"SYMBOLS": ",".join(COINS)}, lambda health: health.get("status") == "ok" and health.get(
            "views", {}).get("1m", {}).get("ready"), 120,
                   "the dashboard to be healthy with its 1m view loaded") as url:
        yield url


@pytest.fixture(scope="module")
def live(server, market) -> Iterator[subprocess.Popen]:
    with producing(",".join(COINS), market) as process:
        yield process


@pytest.fixture
def browser_page() -> Iterator[Page]:
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1280, "height": 640}).new_page()


def value(page: Page, symbol: str, column: str) -> str | None:
    return page.locator(f"#markets tr[data-symbol={symbol}] td.{column}").get_attribute("data-value")


def test_the_overview_moves_live_sorts_and_leads_to_each_chart(server, live, browser_page, settings):
    page = browser_page
    sockets, sent = [], []
    page.on("websocket", lambda ws: (sockets.append(ws), ws.on("framesent", lambda payload: sent.append(payload))))
    page.goto(server)  # the landing view
    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    wait_for(lambda: counter(page, "overviews") >= 1, 90, "the overview")
    assert [page.locator("#markets tbody tr").nth(i).get_attribute("data-symbol") for i in range(6)] == list(COINS)
    for symbol in COINS:  # every coin: a day of candles, a price, a change, a volume, a sparkline of 48 closes
        assert float(value(page, symbol, "price")) > 0 and value(page, symbol, "pct") != ""
        assert float(value(page, symbol, "volume")) > 0 and value(page, symbol, "source") == "simulated"
        assert float(value(page, symbol, "high")) >= float(value(page, symbol, "low"))
        points = page.locator(f"#markets tr[data-symbol={symbol}] svg.spark").get_attribute("data-points")
        assert int(points) >= 48
    expect(page.locator("#sim-badge")).to_be_visible()

    # live: every coin's ticks over the one socket and its one overview request
    ticks = counter(page, "ticks")
    moved = {s: value(page, s, "age") for s in COINS}
    wait_for(lambda: counter(page, "ticks") >= ticks + 3 * len(COINS), 60, "live ticks of every coin on the page")
    wait_for(lambda: all(value(page, s, "age") != moved[s] for s in COINS), 30, "every coin's last tick to move")
    assert len(sockets) == 1 and sent == ['{"type":"overview"}']  # one subscription for the whole table

    # sortable: by 24 h %, highest first, then lowest first
    page.click("#markets th[data-sort=change_pct]")
    order = [float(value(page, s, "pct")) for s in page.eval_on_selector_all(
        "#markets tbody tr", "rows => rows.map(r => r.dataset.symbol)")]
    assert order == sorted(order, reverse=True)
    page.click("#markets th[data-sort=change_pct]")
    order = [float(value(page, s, "pct")) for s in page.eval_on_selector_all(
        "#markets tbody tr", "rows => rows.map(r => r.dataset.symbol)")]
    assert order == sorted(order)
    expect(page.locator("#markets th[data-sort=change_pct]")).to_have_attribute("aria-sort", "ascending")

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.click("#markets th[data-sort=volume]")  # biggest first, as an exchange's front page
    page.screenshot(path=str(artifacts / "markets.png"))

    # one click to a coin's chart...
    page.click("#markets tr[data-symbol=SOL] td.price")
    expect(page).to_have_url(f"{server}/chart?symbol=SOL")
    expect(page.locator("#p-symbol")).to_have_text("SOL / USD", timeout=60_000)
    page.click("#ranges button[data-range='24h']")
    expect(page.locator("#p-range")).to_contain_text("24h", timeout=60_000)

    # ...its indicators, asked from the server, remembered by the page...
    page.click("#indicators button[data-indicator=sma20]")
    page.click("#indicators button[data-indicator=rsi14]")
    wait_for(lambda: page.evaluate("window.dashboard.state.data.indicators?.sma20?.length || 0") > 1000, 60,
             "the server's SMA20 over the day's candles")
    assert page.evaluate("window.dashboard.state.data.indicators.rsi14.length") > 1000
    assert page.evaluate("window.dashboard.chart.panes().length") == 2  # RSI in a pane of its own
    page.screenshot(path=str(artifacts / "chart-indicators.png"))
    page.reload()
    expect(page.locator("#indicators button[data-indicator=rsi14]")).to_have_class("active", timeout=10_000)
    expect(page.locator("#indicators button[data-indicator=sma20]")).to_have_class("active")
    expect(page.locator("#indicators button[data-indicator=ema50]")).not_to_have_class("active")
    page.click("#symbols button[data-symbol=ETH]")  # per chart: ETH's are its own
    expect(page.locator("#indicators button[data-indicator=rsi14]")).not_to_have_class("active")

    # ...and back
    page.click("#back")
    expect(page).to_have_url(f"{server}/markets")
    wait_for(lambda: counter(page, "overviews") >= 1, 60, "the overview again")

    page.set_viewport_size({"width": 390, "height": 844})  # phone width: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.locator("#markets tr[data-symbol=BTC] td.pct")).to_be_visible()
    page.screenshot(path=str(artifacts / "markets-phone.png"))


def test_the_api_answers_with_the_simulated_market(server, market):
    text = requests.get(f"{server}/api/v1/history", params={"symbol": "BTC", "range": "24h", "format": "csv"},
                        timeout=30).text
    lines = text.splitlines()
    assert lines[0] == "time,time_iso,open,high,low,close,volume" and len(lines) >= 1 + 1400
    tickers = requests.get(f"{server}/api/v1/tickers", timeout=10).json()["tickers"]
    assert [t["symbol"] for t in tickers] == list(COINS)
