"""The dashboard in headless Chromium (apt's chromium, Playwright's Python package, no browser download).

The app and a live producer run as subprocesses; the page must show live ticks, switch
coin and range over the WebSocket, agree with MongoDB and recover from a dropped socket.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from playwright.sync_api import Page, expect

from tests.integration.browser import ROOT, chromium, dashboard, producing
from tests.integration.conftest import wait_for


@pytest.fixture(scope="module")
def server(settings) -> Iterator[str]:
    assert (ROOT / "webui/static/vendor/lightweight-charts.js").exists(), "run `npm ci && webui vendor` first"
    with dashboard() as url:
        yield url


@pytest.fixture(scope="module")
def live_producer(server) -> Iterator[subprocess.Popen]:
    with producing("BTC,ETH,XRP", int(time.time())) as process:
        yield process


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 760})


def number(page: Page, element: str) -> float:
    return float(page.locator(f"#{element}").get_attribute("data-value"))


def counter(page: Page, name: str) -> int:
    return int(page.evaluate(f"document.body.dataset.{name} || '0'"))


def test_dashboard_live_switching_numbers_and_recovery(server, live_producer, page, mongo, settings):
    page.goto(f"{server}/chart")  # the landing view is the markets overview
    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    wait_for(lambda: counter(page, "snapshots") >= 1, 90, "the first snapshot")
    expect(page.locator("#p-symbol")).to_have_text("BTC / USD")
    expect(page.locator("#p-badge")).to_be_visible()

    ticks = counter(page, "ticks")
    first = page.locator("#p-updated").get_attribute("data-value")
    wait_for(lambda: counter(page, "ticks") >= ticks + 3, 60, "three live ticks on the page")
    assert page.locator("#p-updated").get_attribute("data-value") != first  # the panel moved with the ticks

    page.click("#symbols button[data-symbol=ETH]")
    page.click("#ranges button[data-range='24h']")
    expect(page.locator("#p-symbol")).to_have_text("ETH / USD", timeout=90_000)
    expect(page.locator("#p-range")).to_contain_text("24h", timeout=90_000)

    # Freeze the data: stop publishing, wait until MongoDB holds the page's last tick, ask again for a snapshot.
    live_producer.send_signal(signal.SIGTERM)
    live_producer.wait(30)
    prices = mongo[settings.database]["prices"]
    last = int(page.locator("#p-updated").get_attribute("data-value"))
    wait_for(lambda: prices.find_one({"symbol": "ETH", "ts": datetime.fromtimestamp(last / 1000, UTC)}), 60,
             "the page's last ETH tick in MongoDB")
    time.sleep(3)  # past the app's 2 s snapshot cache
    before = counter(page, "snapshots")
    page.click("#ranges button[data-range='24h']")
    wait_for(lambda: counter(page, "snapshots") > before, 90, "a fresh 24h snapshot")
    snap = page.evaluate("window.dashboard.state.snapshot")
    window = {"symbol": "ETH", "source": snap["source"],
              "ts": {"$gte": datetime.fromtimestamp(snap["start"] / 1000, UTC),
                     "$lte": datetime.fromtimestamp(snap["end"] / 1000, UTC)}}
    docs = sorted(prices.find(window, {"ts": 1, "price": 1}), key=lambda d: d["ts"])
    assert docs, "MongoDB holds no ETH ticks in the snapshot's window"
    assert number(page, "p-price") == docs[-1]["price"]
    assert number(page, "p-min") == min(d["price"] for d in docs)
    assert number(page, "p-max") == max(d["price"] for d in docs)
    assert number(page, "p-change") == pytest.approx(docs[-1]["price"] - docs[0]["price"])

    # Cut the socket: the page says so, reconnects by itself and refills from a new snapshot.
    before = counter(page, "snapshots")
    page.evaluate("window.dashboard.state.socket.close()")
    expect(page.locator("#status")).to_contain_text("reconnecting", timeout=5_000)
    expect(page.locator("#stale")).to_contain_text("stale / reconnecting")  # the chart says it is behind
    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    wait_for(lambda: counter(page, "snapshots") > before, 90, "the snapshot after reconnecting")
    expect(page.locator("#stale")).to_be_hidden()  # data flows again
    expect(page.locator("#p-symbol")).to_have_text("ETH / USD")

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.locator("#kinds button[data-kind=candles]").click()
    page.mouse.move(700, 350)
    page.screenshot(path=str(artifacts / "dashboard.png"))  # the README's picture comes from the demo instead

    page.set_viewport_size({"width": 390, "height": 844})  # phone width: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "dashboard-phone.png"))


def test_a_stale_live_feed_shows_until_the_server_says_it_flows(server, page):
    """The server's `status` message (sent when its consumer loses Kafka or the registry), injected here."""
    routes = []
    page.route_web_socket("**/ws", lambda ws: (ws.connect_to_server(), routes.append(ws)))
    page.goto(f"{server}/chart")  # the landing view is the markets overview
    wait_for(lambda: counter(page, "snapshots") >= 1, 90, "the first snapshot")
    expect(page.locator("#stale")).to_be_hidden()
    routes[-1].send(json.dumps({"type": "status", "live": False, "down": ["kafka"],
                                "message": "live feed interrupted: Kafka is unavailable"}))
    expect(page.locator("#stale")).to_contain_text("Kafka is unavailable")
    expect(page.locator("#status")).to_have_text("stale")
    routes[-1].send(json.dumps({"type": "status", "live": True, "down": [], "message": "live feed flowing"}))
    expect(page.locator("#stale")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("live")


def test_no_page_logs_an_error_and_the_icon_is_served(server):
    """Chromium asks for /favicon.ico (or the icon a page links) after the page loads; a 404 was a console error."""
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        icons = set()
        for path in ("/", "/chart"):
            page.goto(f"{server}{path}")
            expect(page.locator("#status")).to_have_text("live", timeout=30_000)
            page.wait_for_timeout(1500)  # the icon is asked for after the load, and its 404 logged then
            icons.add(page.evaluate("document.querySelector('link[rel=icon]')?.href"))
        assert errors == []
        assert page.evaluate("fetch('/favicon.ico').then((r) => r.status)") == 200  # for what links no icon
        (icon,) = icons
        assert icon and page.evaluate(f"fetch({json.dumps(icon)}).then((r) => r.status)") == 200


# The chart page over a WebSocket of the test's own (Playwright's route, no server behind it): it answers each
# subscribe with a snapshot made here, so the chart shows exactly the times a test needs.
END = int(datetime(2026, 3, 14, 18, 53, 40, tzinfo=UTC).timestamp() * 1000)
RANGE_MS = {"1h": 3_600_000, "24h": 86_400_000, "7d": 604_800_000}


def made_snapshot(range_: str, seconds: int, step_ms: int, bucket_ms: int) -> dict:
    """A `range_` window ending at END whose last `seconds` hold a point every `step_ms`, at most 1,500 of them on
    whole seconds (the server's line: one point a second, reduced to WEBUI_MAX_POINTS)."""
    first = END - seconds * 1000
    count = min(1500, seconds * 1000 // step_ms)
    times = sorted({first + (i * seconds * 1000 // count) // 1000 * 1000 for i in range(count)})
    line = [[t, 70_000 + (i % 60) * 0.5] for i, t in enumerate(times)]
    starts = range(first - first % bucket_ms, END, bucket_ms)
    return {"type": "snapshot", "symbol": "BTC", "range": range_, "start": END - RANGE_MS[range_], "end": END,
            "basis": "ticks" if range_ == "1h" else "candles_1m", "source": "simulated", "simulated": True,
            "bucket_ms": bucket_ms, "line": line, "candles": [[t, 70_000, 70_030, 69_990, 70_010] for t in starts],
            "volume": [[t, 1.0] for t in starts],
            "stats": {"price": 70_010, "first": 70_000, "change": 10, "change_pct": 0.01, "min": 69_990, "max": 70_030,
                      "volume": len(starts), "last_update": END - 1000, "count": len(line)},
            "server_ms": 1.0}


@pytest.fixture
def faked_chart(server) -> Iterator[tuple[Page, dict, list]]:
    """The chart page (en-US, UTC) and the snapshot each range is answered with, which a test may change."""
    answers = {"1h": made_snapshot("1h", 3600, 1000, 5000), "24h": made_snapshot("24h", 86_400, 60_000, 60_000),
               "7d": made_snapshot("7d", 604_800, 600_000, 600_000)}
    sockets: list = []

    def serve(ws) -> None:
        def answer(text: str) -> None:
            asked = json.loads(text)
            if asked.get("type") == "subscribe":
                # in the bars asked for, as the server answers (the page takes no other)
                ws.send(json.dumps({**answers[asked["range"]], "symbol": asked["symbol"],
                                    "interval": asked["interval"]}))
        ws.on_message(answer)
        sockets.append(ws)

    with chromium() as browser:
        context = browser.new_context(locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 760})
        page = context.new_page()
        page.add_init_script(RECORD_CANVAS_TEXT)
        page.route_web_socket("**/ws", serve)
        page.goto(f"{server}/chart?symbol=BTC")
        wait_for(lambda: counter(page, "snapshots") >= 1, 30, "the first snapshot")
        yield page, answers, sockets


def test_times_are_written_on_24_hours_like_the_charts_axis(faked_chart):
    """The alert list and the panel's last update: 18:52:47, never 06:52:47 PM (the page is en-US here)."""
    page, _, sockets = faked_chart
    evening = int(datetime(2026, 3, 14, 18, 52, 47, tzinfo=UTC).timestamp() * 1000)
    after_midnight = int(datetime(2026, 3, 15, 0, 5, 9, tzinfo=UTC).timestamp() * 1000)
    for ts in (evening, after_midnight):
        sockets[-1].send(json.dumps({"type": "alert", "id": f"clock|BTC|simulated|{ts}", "rule_id": "clock",
                                     "symbol": "BTC", "source": "simulated", "kind": "above", "direction": "up",
                                     "price": 70_001, "ts": ts, "message": "BTC crossed above 70,000: 70,001"}))
    expect(page.locator(f"#alerts-list li[data-id='clock|BTC|simulated|{evening}'] time")).to_have_text("18:52:47")
    expect(page.locator(f"#alerts-list li[data-id='clock|BTC|simulated|{after_midnight}'] time")).to_have_text(
        "00:05:09")
    expect(page.locator("#p-updated")).to_have_text("18:53:39")  # the snapshot's last update, END - 1 s


# What the time axis draws: every text the page writes on a canvas, with its position, the table row of the chart
# it is in (the time axis is the last) and the paint it belongs to (one animation frame draws the whole chart).
RECORD_CANVAS_TEXT = """
window.__drawn = [];
let paint = 0, painting = false;
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
  if (!painting) { painting = true; paint += 1; queueMicrotask(() => { painting = false; }); }
  const row = this.canvas.closest("tr"), rows = row ? [...row.parentElement.children] : [];
  window.__drawn.push({ text: String(text), x, paint, timeAxis: rows.length > 0 && row === rows[rows.length - 1] });
  return fillText.call(this, text, x, y, ...rest);
};
"""


def show(page: Page, range_: str) -> None:
    before = counter(page, "snapshots")
    page.click(f"#ranges button[data-range='{range_}']")
    wait_for(lambda: counter(page, "snapshots") > before, 30, f"the {range_} snapshot")
    page.wait_for_timeout(500)  # painted in the next animation frames


def axis_labels(page: Page) -> list[str]:
    """The time axis's labels in its latest paint, left to right."""
    drawn = [d for d in page.evaluate("window.__drawn") if d["timeAxis"]]
    assert drawn, "nothing drawn on the time axis"
    latest = max(d["paint"] for d in drawn)
    return [d["text"] for d in sorted((d for d in drawn if d["paint"] == latest), key=lambda d: d["x"])]


CLOCK = re.compile(r"\d\d:\d\d")
CLOCK_WITH_SECONDS = re.compile(r"\d\d:\d\d:\d\d")
DAY_OR_MONTH = re.compile(r"\d{1,2}|[A-Z][a-z]{2}|\d{4}")


def test_the_time_axis_tells_its_marks_apart_on_every_range(faked_chart):
    page, answers, _ = faked_chart
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 760 if width > 390 else 844})
        # 1 h: a full hour of per-second points, and a fresh stack's first three minutes of them, where the marks fall
        # seconds apart and each used to read "18:53" like the minute's own mark
        for seconds in (3600, 180):
            answers["1h"] = made_snapshot("1h", seconds, 1000, 5000)
            show(page, "1h")
            labels = axis_labels(page)
            page.screenshot(path=str(artifacts / f"axis-1h-{seconds}s-{width}px.png"))
            assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
            assert all(CLOCK.fullmatch(label) or CLOCK_WITH_SECONDS.fullmatch(label) for label in labels), labels
        # 24 h of 1-minute candles and 7 d of 10-minute ones: hours and days, as before; never a second
        for range_ in ("24h", "7d"):
            show(page, range_)
            labels = axis_labels(page)
            page.screenshot(path=str(artifacts / f"axis-{range_}-{width}px.png"))
            assert len(labels) >= 3 and all(a != b for a, b in pairwise(labels)), labels
            assert all(CLOCK.fullmatch(label) or DAY_OR_MONTH.fullmatch(label) for label in labels), labels
            if range_ == "24h":
                assert len(set(labels)) == len(labels), labels
            else:
                assert any(DAY_OR_MONTH.fullmatch(label) for label in labels), labels  # the days are marked
