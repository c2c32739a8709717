"""Alert rules from the dashboard on the real stack (webui/rules.py): a rule added over HTTP is on the rules topic
(`control alerts list` shows it), a rule added by `control alerts` is listed by the page's endpoint, removing over
HTTP publishes the tombstone, and a client of another machine may do none of it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from cryptopulse import topics
from cryptopulse.alert import new_rule
from cryptopulse.avro import AvroCodec
from cryptopulse.text import terminal_safe
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


def test_bad_records_on_the_rules_topic_leave_listing_and_removal_working(settings):
    # A value that is not Avro, one that names an unknown schema id, a rule whose key is not its id, and a rule
    # whose id holds terminal escapes: listed (the good ones) and removed (every one, by its key as shown), by the
    # command and by the page, with no traceback and no raw escape printed anywhere (issue 22, item 3).
    symbol = unique_symbol()
    good = add_rule(symbol, "above", "5")
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    mismatched = new_rule(symbol, "below", 1.0)
    escaped = "ab\x1b[2J\x1b]52;c;cm0=\x07cd"
    raw_rule = {**new_rule(symbol, "above", 2.0).to_record(), "id": escaped}
    bad = {"notavro": b"plain text, not Avro", "unknownid": b"\x00\x00\x0f\x42\x3f" + b"\x02xx",
           "f0f0f0f0": codec.encode(mismatched.to_record()), escaped: codec.encode(raw_rule)}
    for key, value in bad.items():
        topics.publish_one(settings, settings.alert_rules_topic, key.encode(), value)
    try:
        listed = control("alerts", "list")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr + listed.stdout, str(listed)
        assert "\x1b" not in listed.stdout + listed.stderr and "\x07" not in listed.stdout + listed.stderr
        assert good in listed.stdout
        for key in ("notavro", "unknownid", "f0f0f0f0", terminal_safe(escaped)):
            assert key in listed.stdout, (key, listed.stdout)

        async def page() -> dict[str, Any]:
            app = create_app(settings, start_consumer=False, views=False, probe_seconds=0)
            async with app.test_app() as test_app:
                client = test_app.test_client()
                listing = await (await client.get("/alerts/rules", scope_base=LOCAL)).get_json()
                removed = {}
                for key in ("notavro", terminal_safe(escaped)):
                    answer = await client.delete(f"/alerts/rules/{quote(key, safe='')}", headers=PAGE,
                                                 scope_base=LOCAL)
                    removed[key] = (answer.status_code, await answer.get_json())
                after = await (await client.get("/alerts/rules", scope_base=LOCAL)).get_json()
                return {"listing": listing, "removed": removed, "after": after}

        seen = asyncio.run(page())
        ids = {r["id"] for r in seen["listing"]["rules"]}
        assert good in ids and not ids & {"notavro", "unknownid", "f0f0f0f0", escaped}
        assert {code for code, _ in seen["removed"].values()} == {200}, seen["removed"]
        assert "\x1b" not in json.dumps(seen)
        for key in ("unknownid", "f0f0f0f0"):
            gone = control("alerts", "rm", key)
            assert gone.returncode == 0 and "removed" in gone.stdout, str(gone)
        after = control("alerts", "list")
        assert after.returncode == 0 and good in after.stdout
        assert not any(k in after.stdout for k in ("notavro", "unknownid", "f0f0f0f0", "ab\\x1b"))
    finally:
        control("alerts", "rm", good)


def test_reading_the_rules_never_waits_on_a_write(settings):
    # The page lists the rules from a table the dashboard follows: 20 lists at once do not touch Kafka, and a write
    # among them is not held up by them (it waited behind each list's topic read, ~1 s apiece).
    symbol = unique_symbol()
    list_times: list[float] = []

    async def scenario() -> tuple[list[int], int, float, list[str]]:
        app = create_app(settings, start_consumer=False, views=False, probe_seconds=0, address_rate=1000)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            assert (await client.get("/alerts/rules", scope_base=LOCAL)).status_code == 200  # loaded

            async def one_list() -> int:
                started = time.monotonic()
                status = (await client.get("/alerts/rules", scope_base=LOCAL)).status_code
                list_times.append(time.monotonic() - started)
                return status

            async def one_add() -> tuple[int, float]:
                started = time.monotonic()
                answer = await client.post("/alerts/rules", json={"symbol": symbol, "condition": "above", "value": 9},
                                           headers=PAGE, scope_base=LOCAL)
                return answer.status_code, time.monotonic() - started

            results = await asyncio.gather(*(one_list() for _ in range(10)), one_add(),
                                           *(one_list() for _ in range(10)))
            added, took = results[10]
            listed = await (await client.get("/alerts/rules", scope_base=LOCAL)).get_json()
            mine = [r["id"] for r in listed["rules"] if r["symbol"] == symbol]
            return [r for r in results if isinstance(r, int)], added, took, mine

    statuses, added, took, mine = asyncio.run(scenario())
    try:
        assert statuses == [200] * 20 and added == 201 and len(mine) == 1  # the next list holds the new rule
        print(f"\na rule added among 20 lists in {took * 1000:.0f} ms; the lists took at most "
              f"{max(list_times) * 1000:.1f} ms (median {sorted(list_times)[len(list_times) // 2] * 1000:.1f} ms)")
    finally:
        for rule in mine:
            control("alerts", "rm", rule)
