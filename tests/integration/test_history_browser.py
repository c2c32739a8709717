"""The chart's history in headless Chromium, on the real stack: four days of a coin of this run's own in every
interval, published before the dashboard starts. At desktop and phone width: switch timeframes, scroll back until
older bars load (from the 1m view, then from MongoDB by `_id`) and until the history ends, switch between UTC and
local time (New York) and find the axis, the legend, the panel and the alert list agreeing, and the choice remembered.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS
from tests.integration.browser import ROOT, chromium, dashboard
from tests.integration.conftest import wait_for
from tests.integration.history_data import publish_history
from tests.integration.test_webui_browser import RECORD_CANVAS_TEXT, counter

SYMBOL = "ZB" + "".join(random.choices(string.ascii_uppercase, k=4))
NEW_YORK = ZoneInfo("America/New_York")
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def history(settings, mongo) -> dict:
    return publish_history(settings, mongo, SYMBOL, 4)


@pytest.fixture(scope="module")
def server(history) -> Iterator[str]:
    with dashboard({"SYMBOLS": f"{SYMBOL},BTC"}, ready=lambda health: all(v["ready"] for v in health["views"].values()),
                   what="the dashboard's views to load") as url:
        yield url


def snapshot_of(page: Page, click: str, interval: str) -> dict:
    """Click a control and wait for the snapshot in `interval` bars it asks for."""
    before = counter(page, "snapshots")
    page.click(click)
    wait_for(lambda: counter(page, "snapshots") > before
             and page.evaluate("window.dashboard.state.snapshot.interval") == interval, 30, f"the {interval} snapshot")
    page.wait_for_timeout(300)  # painted
    return page.evaluate("window.dashboard.state.snapshot")


def scroll_to_the_start(page: Page) -> None:
    page.evaluate("window.dashboard.chart.timeScale().setVisibleLogicalRange({from: -5, to: 120})")


def bar_times(page: Page) -> list[int]:
    return page.evaluate("window.dashboard.state.data.candles.map((c) => c[0])")


def axis_marks(page: Page) -> list[tuple[str, int]]:
    """The time axis's labels in its latest paint, with where each is drawn."""
    drawn = [d for d in page.evaluate("window.__drawn") if d["timeAxis"]]
    latest = max(d["paint"] for d in drawn)
    return sorted((d["text"], round(d["x"])) for d in drawn if d["paint"] == latest)


def in_window(candles: list, snap: dict) -> int:
    """How many of the published candles a snapshot's window holds (the data ends when it was published)."""
    return sum(1 for c in candles if snap["start"] <= c.start <= snap["end"])


def wall_clock(ms: int, zone: ZoneInfo | None) -> str:
    return datetime.fromtimestamp(ms / 1000, zone or UTC).strftime("%H:%M:%S")


@pytest.mark.parametrize(("width", "height"), [(1280, 760), (390, 844)])
def test_timeframes_scrolling_back_and_the_time_zone(server, history, width, height):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(locale="en-US", timezone_id="America/New_York",
                                      viewport={"width": width, "height": height})
        page = context.new_page()
        page.add_init_script(RECORD_CANVAS_TEXT)
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{server}/chart?symbol={SYMBOL}")
        wait_for(lambda: counter(page, "snapshots") >= 1, 60, "the first snapshot")

        # timeframes: 24 h opens on 1m candles; 5s does not fit it; 5m and back
        snap = snapshot_of(page, "#ranges button[data-range='24h']", "1m")
        assert snap["basis"] == "candles_1m" and len(snap["candles"]) == in_window(history["1m"], snap) >= 1380
        assert page.locator("#frames button[data-frame='5s']").is_disabled()
        expect(page.locator("#legend-title")).to_contain_text(f"{SYMBOL}/USD · 1m candles · UTC")
        snap = snapshot_of(page, "#frames button[data-frame='5m']", "5m")
        assert snap["bucket_ms"] == 5 * MINUTE_MS and len(snap["candles"]) == in_window(history["5m"], snap) >= 276
        expect(page.locator("#p-range")).to_have_text("24h · 5m candles")
        page.screenshot(path=str(ARTIFACTS / f"history-24h-5m-{width}px.png"))
        snap = snapshot_of(page, "#frames button[data-frame='1m']", "1m")

        # scrolled back: the 26-hour view's last two hours, then minutes MongoDB holds, read by _id
        shown = bar_times(page)
        for pages in (1, 2):
            scroll_to_the_start(page)
            wait_for(lambda p=pages: counter(page, "pages") >= p, 60, f"page {pages} of older 1m bars")
        times = bar_times(page)
        assert times == sorted(set(times)) and times[-len(shown):] == shown
        assert times[0] <= shown[0] - 1000 * MINUTE_MS and times[0] < times[-1] - 26 * HOUR_MS
        assert all(b - a == MINUTE_MS for a, b in zip(times, times[1:], strict=False))  # every minute, once
        published = {c.start: c.close for c in history["1m"]}
        assert all(published[t] == c[4] for t, c in zip(times, page.evaluate("window.dashboard.state.data.candles"),
                                                         strict=True) if t < shown[0])
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / f"history-1m-scrolled-back-{width}px.png"))

        # 7 d of 1h bars, scrolled back until the history ends
        snapshot_of(page, "#ranges button[data-range='7d']", "5m")
        snapshot_of(page, "#frames button[data-frame='1h']", "1h")
        for _ in range(5):
            scroll_to_the_start(page)
            page.wait_for_timeout(500)
            if page.evaluate("document.body.dataset.historyEnd") == "1":
                break
        assert page.evaluate("document.body.dataset.historyEnd") == "1"
        assert bar_times(page) == [c.start for c in history["1h"]]
        expect(page.locator("#legend-title")).to_contain_text("start of history")

        # UTC, then local time: the axis, the legend, the panel and the alerts agree, and the choice is remembered
        last = page.evaluate("window.dashboard.state.stats.last_update")
        alert_ts = last - 90_000
        page.evaluate(f"""window.cryptoPulseAlerts.receive({{type: "alert", id: "zone|{alert_ts}", symbol: "{SYMBOL}",
            source: "simulated", direction: "up", ts: {alert_ts}, message: "{SYMBOL} crossed above 1"}})""")
        alert_time = page.locator(f"#alerts-list li[data-id='zone|{alert_ts}'] time")
        expect(alert_time).to_have_text(wall_clock(alert_ts, None))
        expect(page.locator("#p-updated")).to_have_text(wall_clock(last, None))
        utc_marks = axis_marks(page)
        first_bar = history["1h"][0].start
        assert page.evaluate("window.dashboard.series.candles.data()[0].time") == first_bar // 1000
        page.click("#zone")
        offset = int(datetime.fromtimestamp(first_bar / 1000, NEW_YORK).utcoffset().total_seconds())
        expect(page.locator("#zone")).to_have_text("Local")
        expect(page.locator("#legend-title")).to_contain_text("UTC−0")  # New York: −04:00 or −05:00
        expect(page.locator("#p-updated")).to_have_text(wall_clock(last, NEW_YORK))
        expect(alert_time).to_have_text(wall_clock(alert_ts, NEW_YORK))
        assert page.evaluate("window.dashboard.series.candles.data()[0].time") == first_bar // 1000 + offset
        page.wait_for_timeout(500)
        local_marks = axis_marks(page)  # the same bars in view: a wall-clock label now stands where local time says
        assert local_marks and local_marks != utc_marks
        if width >= 1000:  # enough marks that some label is in both (at phone width two or three may share none)
            assert {t for t, _ in local_marks} & {t for t, _ in utc_marks}
        page.screenshot(path=str(ARTIFACTS / f"history-7d-1h-local-time-{width}px.png"))
        page.reload()
        wait_for(lambda: counter(page, "snapshots") >= 1, 60, "the snapshot after reloading")
        expect(page.locator("#zone")).to_have_text("Local")
        snapshot_of(page, "#ranges button[data-range='24h']", "1m")
        last = page.evaluate("window.dashboard.state.stats.last_update")
        expect(page.locator("#p-updated")).to_have_text(wall_clock(last, NEW_YORK))
        page.click("#zone")  # back to UTC for the next run
        expect(page.locator("#zone")).to_have_text("UTC")

        assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
        assert errors == []
        context.close()


def test_the_timeframes_each_range_offers(server):
    """Every range opens on its default bars and greys out those that do not fit; "all" is the newest daily bars."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{server}/chart?symbol={SYMBOL}")
        wait_for(lambda: counter(page, "snapshots") >= 1, 60, "the first snapshot")
        for range_, default, enabled in (("30d", "1h", "1h 4h 1d 1w"), ("1y", "1d", "4h 1d 1w"), ("all", "1d", "1d 1w"),
                                         ("1h", "5s", "5s 1m 5m 15m 1h")):
            snap = snapshot_of(page, f"#ranges button[data-range='{range_}']", default)
            assert snap["range"] == range_ and snap["interval"] == default
            offered = [b.get_attribute("data-frame") for b in page.locator("#frames button:enabled").all()]
            assert offered == enabled.split(), range_
            if range_ in ("1y", "all"):
                assert len(snap["candles"]) == len({(c[0] // DAY_MS) for c in snap["candles"]}) >= 4
