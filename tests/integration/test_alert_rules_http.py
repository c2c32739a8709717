"""Alert rules from the dashboard on the real stack (webui/rules.py): a rule added over HTTP is on the rules topic
(`control alerts list` shows it), a rule added by `control alerts` is listed by the page's endpoint, removing over
HTTP publishes the tombstone, and a client of another machine may do none of it."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.test_alerts import add_rule, control, unique_symbol
from webui.app import create_app

LOCAL = {"client": ("127.0.0.1", 50000)}
REMOTE = {"client": ("203.0.113.7", 50000)}
PAGE = {"Origin": "http://localhost:8000", "Host": "localhost:8000"}  # what the chart page's fetch sends


def listed() -> str:
    result = control("alerts", "list")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_rule_added_and_removed_from_the_dashboard_is_on_the_rules_topic(settings):
    symbol = unique_symbol()
    by_command = add_rule(symbol, "below", "5")

    async def scenario() -> dict[str, Any]:
        app = create_app(settings, start_consumer=False, views=False, probe_seconds=0)
        seen: dict[str, Any] = {}
        async with app.test_app() as test_app:
            client = test_app.test_client()
            remote = await client.post("/alerts/rules", json={"symbol": symbol, "condition": "above", "value": 100},
                                       headers=PAGE, scope_base=REMOTE)
            seen["remote add"] = (remote.status_code, await remote.get_json())
            added = await client.post("/alerts/rules", json={"symbol": symbol.lower(), "condition": "move",
                                                             "value": 2.5, "minutes": 15, "source": "simulated"},
                                      headers=PAGE, scope_base=LOCAL)
            seen["add"] = (added.status_code, await added.get_json())
            rule = seen["add"][1]["rule"]["id"]
            seen["listed after add"] = await asyncio.to_thread(listed)
            page = await client.get("/alerts/rules", scope_base=LOCAL)
            seen["page list"] = await page.get_json()
            remote_page = await client.get("/alerts/rules", scope_base=REMOTE)
            seen["remote page list"] = await remote_page.get_json()
            remote_rm = await client.delete(f"/alerts/rules/{rule}", headers=PAGE, scope_base=REMOTE)
            seen["remote rm"] = (remote_rm.status_code, await remote_rm.get_json())
            seen["listed after remote rm"] = await asyncio.to_thread(listed)
            removed = await client.delete(f"/alerts/rules/{rule}", headers=PAGE, scope_base=LOCAL)
            seen["rm"] = (removed.status_code, await removed.get_json())
            seen["listed after rm"] = await asyncio.to_thread(listed)
            again = await client.delete(f"/alerts/rules/{rule}", headers=PAGE, scope_base=LOCAL)
            seen["rm again"] = (again.status_code, await again.get_json())
            by_page = await client.delete(f"/alerts/rules/{by_command}", headers=PAGE, scope_base=LOCAL)
            seen["rm command's rule"] = by_page.status_code
        return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        control("alerts", "rm", by_command)
    status, body = seen["remote add"]
    assert status == 403 and "this machine only" in body["error"]
    assert f"{symbol} above" not in seen["listed after add"]
    status, body = seen["add"]
    rule = body["rule"]["id"]
    assert status == 201 and body["rule"]["text"] == f"{symbol} move 2.5% within 15 min (simulated)"
    line = next(line for line in seen["listed after add"].splitlines() if line.startswith(rule))
    assert f"{symbol} move 2.5% within 15 min (simulated)" in line
    mine = {r["id"]: r for r in seen["page list"]["rules"] if r["symbol"] == symbol}
    assert seen["page list"]["writable"] is True and set(mine) == {rule, by_command}
    assert mine[by_command]["kind"] == "below" and mine[by_command]["price"] == 5
    assert seen["remote page list"]["writable"] is False  # it may read them, not change them
    assert {r["id"] for r in seen["remote page list"]["rules"]} >= {rule, by_command}
    assert seen["remote rm"][0] == 403 and rule in seen["listed after remote rm"]
    assert seen["rm"][0] == 200 and seen["rm"][1]["removed"]["id"] == rule
    assert rule not in seen["listed after rm"] and by_command in seen["listed after rm"]
    status, body = seen["rm again"]
    assert status == 404 and f"no rule {rule!r}" in body["error"]
    assert seen["rm command's rule"] == 200
