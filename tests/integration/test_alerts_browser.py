"""A price alert reaches an open chart page in headless Chromium: listed, shown as a notice, and handed to the
browser's Notification API when the user allowed it (webui/static/alerts.js).
"""

from __future__ import annotations

import signal
import time
import uuid

import requests
from playwright.sync_api import expect

from cryptopulse.times import now_ms
from tests.integration.browser import chromium, dashboard
from tests.integration.test_alerts import AlertsProcess, TickWriter, add_rule, control, unique_symbol
from tests.namespace import PREFIX

# recorded instead of shown: headless Chromium has no notification centre
RECORD_NOTIFICATIONS = """
window.__notes = [];
window.Notification = class { constructor(title, options) { window.__notes.push({title, body: options.body}); }
                              static get permission() { return "granted"; }
                              static requestPermission() { return Promise.resolve("granted"); } };
"""


def test_an_alert_is_listed_noticed_and_notified_on_an_open_page(settings, tmp_path):
    symbol, group = unique_symbol(), f"{PREFIX}alerts-{uuid.uuid4().hex[:6]}"
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    rule = add_rule(symbol, "above", "100")
    try:
        with dashboard() as url, chromium() as browser:
            chart = f"{url}/chart" if requests.get(f"{url}/chart", timeout=10).status_code == 200 else url
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.add_init_script(RECORD_NOTIFICATIONS)
            page.goto(chart)
            expect(page.locator("#status")).to_have_text("live", timeout=30_000)
            expect(page.locator("#alerts")).to_be_visible()
            writer, t = TickWriter(settings), now_ms()
            deadline = time.monotonic() + 60
            # a crossing every 2 s until one shows: the dashboard's alert consumer starts at the end of the topic
            while page.locator(f"#alerts-list li[data-id^='{rule}|{symbol}|']").count() == 0:
                assert time.monotonic() < deadline, "no alert on the page within 60 s"
                writer.publish(symbol, [(t, 99.0), (t + 1, 101.0)])
                t += 2
                page.wait_for_timeout(2000)
            notice = page.locator("#alert-notice")
            expect(notice).to_be_visible()
            expect(notice).to_contain_text(f"{symbol} crossed above 100")
            notes = page.evaluate("window.__notes")
            assert notes and notes[-1]["title"] == f"CryptoPulse: {symbol}" and "crossed above 100" in notes[-1]["body"]
            # a page opened later lists it too (GET /alerts/recent), without a notice
            other = browser.new_page()
            other.goto(chart)
            expect(other.locator(f"#alerts-list li[data-id^='{rule}|{symbol}|']").first).to_be_visible(timeout=10_000)
            assert other.locator("#alert-notice").is_hidden()
            # a rule added from the page's form is on the rules topic, and its remove button takes it away
            # (a source no tick carries: it never fires)
            form = page.locator("#alert-rule-form")
            expect(form).to_be_visible(timeout=10_000)
            form.locator("select[name=condition]").select_option("move")
            form.locator("input[name=value]").fill("3.5")
            form.locator("input[name=minutes]").fill("7")
            form.locator("input[name=source]").fill("nosuchsource")
            form.locator("button[type=submit]").click()
            expect(page.locator("#alert-rule-status")).to_contain_text("added:", timeout=30_000)
            row = page.locator("#alert-rules-list li", has_text="move 3.5% within 7 min (nosuchsource)")
            expect(row).to_have_count(1, timeout=30_000)
            added = row.get_attribute("data-id")
            assert "move 3.5% within 7 min (nosuchsource)" in control("alerts", "list").stdout
            row.locator("button.remove").click()
            expect(row).to_have_count(0, timeout=30_000)
            assert added not in control("alerts", "list").stdout
    finally:
        processor.stop(signal.SIGTERM)
        control("alerts", "rm", rule)
