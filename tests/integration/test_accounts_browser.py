"""Issue 21 through the real stack: accounts made by `control users`, read back by a real dashboard from Kafka; in
headless Chromium, at desktop and phone width, a user logs in, sees its own rules, adds and removes one, logs out;
a second account sees none of the first's; an API token reads the history API and nothing without it; `control
audit` shows the logins, the failure and the rule changes (from MongoDB, through the accounts sink).

The accounts are removed at the end: the namespace's dashboards are back in local mode for the other tests.
"""

from __future__ import annotations

import re
import uuid

import requests
from playwright.sync_api import Page, expect

from tests import children
from tests.integration.browser import chromium, dashboard
from tests.integration.conftest import wait_for

PASSWORD = "a long enough passphrase"


def control(*args: str, stdin: str | None = None) -> children.Finished:
    return children.run(["control", *args], timeout=120, input=stdin)


def log_in(page: Page, url: str, name: str, password: str = PASSWORD) -> None:
    page.goto(f"{url}/chart")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_accounts_in_a_browser_at_desktop_and_phone_width(settings, tmp_path):
    alice, bob = f"alice{uuid.uuid4().hex[:4]}", f"bob{uuid.uuid4().hex[:4]}"
    made: list[str] = []
    try:
        for name in (alice, bob):
            added = control("users", "add", name, stdin=f"{PASSWORD}\n")
            assert added.returncode == 0, str(added)
            made.append(name)
        listed = control("users", "list")
        assert alice in listed.stdout and bob in listed.stdout and PASSWORD not in listed.stdout
        short = control("users", "add", "carol", stdin="short\n")
        assert short.returncode == 2 and "at least 10" in short.stderr
        token = control("tokens", "add", "a script", "--user", alice, "--scope", "read", "--expires", "1d")
        assert token.returncode == 0 and re.fullmatch(r"cpt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}\n", token.stdout), str(token)

        with dashboard() as url, chromium() as browser:
            # accounts exist: once the dashboard has read them (until then it serves this machine as without
            # accounts, and nobody else), the API needs a token, the pages a session
            wait_for(lambda: requests.get(f"{url}/api/v1/tickers", timeout=10).status_code == 401, 30,
                     "the dashboard to read the accounts")
            wait_for(lambda: requests.get(f"{url}/api/v1/tickers", timeout=10,
                                          headers={"Authorization": f"Bearer {token.stdout.strip()}"}
                                          ).status_code == 200, 30, "the token to be accepted")
            for width, height in ((1280, 800), (390, 844)):
                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                log_in(page, url, alice, "not the password")
                expect(page.locator(".message")).to_contain_text("Wrong name or password")
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                expect(page).to_have_url(re.compile(r"/chart"))
                expect(page.locator("#account-name")).to_have_text(alice)
                expect(page.locator("#logout")).to_be_visible()
                form = page.locator("#alert-rule-form")
                expect(form).to_be_visible(timeout=30_000)
                form.locator("select[name=condition]").select_option("above")
                form.locator("input[name=value]").fill(str(width))
                form.locator("button[type=submit]").click()
                row = page.locator("#alert-rules-list li", has_text=f"above {width:,}")
                expect(row).to_have_count(1, timeout=30_000)
                assert f"of {alice}" in control("alerts", "list").stdout
                page.screenshot(path=str(tmp_path / f"accounts-{width}.png"), full_page=True)

                # the other account sees none of it
                other = browser.new_context(viewport={"width": width, "height": height}).new_page()
                log_in(other, url, bob)
                expect(other).to_have_url(re.compile(r"/chart"))
                expect(other.locator("#alert-rules-list")).to_contain_text("no rules", timeout=30_000)
                assert requests.get(f"{url}/alerts/rules", timeout=10).status_code == 401
                other.context.close()

                row.locator("button.remove").click()
                expect(row).to_have_count(0, timeout=30_000)
                page.click("#logout")
                expect(page).to_have_url(re.compile(r"/login"))
                page.goto(f"{url}/chart")
                expect(page).to_have_url(re.compile(r"/login\?next="))
                context.close()

        def audited() -> str:
            return control("audit", "-n", "200").stdout

        wait_for(lambda: all(f"{kind:16}  user={alice}" in audited() for kind in
                             ("login", "login_failed", "rule_added", "rule_removed", "logout")), 60,
                 "the audit trail in MongoDB")
        trail = audited()
        assert "HeadlessChrome" in trail and "address=127.0.0.1" in trail
    finally:
        for name in made:
            control("users", "rm", name)
