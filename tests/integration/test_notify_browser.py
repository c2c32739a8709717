"""The chart page and alert delivery, in headless Chromium (issue 20): the rule form offers the channels, a rule
added with one checked notifies it, and the alert list says where each alert went (→ name ✓) once the notifier
has delivered it (docs/alerts.md, "Delivery")."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.integration import test_notify
from tests.integration.browser import chromium, dashboard
from tests.integration.conftest import wait_for
from tests.integration.test_alerts import control
from tests.integration.test_notify import exactly, outcomes

receiver, scenario = test_notify.receiver, test_notify.scenario  # its fixtures, for this module's test


def test_the_page_offers_the_channels_and_shows_where_each_alert_went(settings, mongo, scenario, receiver):
    hook = scenario.channel("browser", "webhook", f"{receiver.url}/hook/browser")
    rule = scenario.start(hook)
    with dashboard() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{url}/chart")
        expect(page.locator("#status")).to_have_text("live", timeout=30_000)
        # the form lists the channel; a rule added with it checked notifies it
        box = page.locator(f"#alert-rule-channels input[value='{hook}']")
        expect(box).to_have_count(1, timeout=30_000)
        form = page.locator("#alert-rule-form")
        form.locator("input[name=value]").fill("1")
        form.locator("input[name=source]").fill("nosuchsource")
        box.check()
        form.locator("button[type=submit]").click()
        expect(page.locator("#alert-rule-status")).to_contain_text(f"notify {hook}", timeout=30_000)
        row = page.locator("#alert-rules-list li", has_text=f"notify {hook}").filter(has_text="nosuchsource")
        expect(row).to_have_count(1, timeout=30_000)
        scenario.rules.append(row.get_attribute("data-id"))
        assert f"above 1 (nosuchsource); notify {hook}" in control("alerts", "list").stdout
        # an alert of the scenario's rule: listed live, then marked delivered to its channel
        scenario.fire(1)
        (alert,) = wait_for(lambda: exactly(1, lambda: scenario.stored(mongo, rule)), 60, "the alert stored")
        wait_for(lambda: [d for d in outcomes(mongo, settings, rule, hook) if d["outcome"] == "delivered"], 60,
                 "its delivery stored")
        item = page.locator(f"#alerts-list li[data-id='{alert}']")
        expect(item).to_be_visible(timeout=30_000)
        expect(item.locator(".delivery.delivered")).to_contain_text(f"{hook} ✓", timeout=30_000)
