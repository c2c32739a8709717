"""Issue 21: with an account, the dashboard serves nothing but its login page to whoever has no session or token.

Every route the app serves (app.url_map) and the WebSocket are checked from another machine without credentials; a
viewer cannot write; a token's scope holds; a write of a session without its CSRF token is refused; failed logins
slow down; the cookie's flags; one account does not see another's rules or alerts; sessions end as they should
and survive a restart; local mode stays as it was. In-process (tests/security/accounts_app.py), no service needed.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import pytest

from cryptopulse.alert import new_rule
from cryptopulse.channel import new_channel
from tests.security.accounts_app import (
    HOST,
    LOCAL,
    OUTSIDE,
    PASSWORD,
    board,
    log_in,
    page_csrf,
    token_of,
    user_of,
)
from webui.alerts import AlertFeed, push_alerts
from webui.auth import PUBLIC
from webui.cli import check_exposure
from webui.config import WebConfig

RULE = {"symbol": "BTC", "condition": "above", "value": 70000}


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


def concrete(rule: Any) -> str:
    """A path the rule matches: each variable part filled with something plausible."""
    samples = {"filename": "app.js", "text": "1a2b3c4d"}
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: samples.get(m.group(1), "x"), rule.rule)


def test_every_route_and_the_websocket_are_refused_without_a_session_or_a_token(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    rules = list(served.app.url_map.iter_rules())
    checked: list[str] = []

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            for rule in rules:
                path = concrete(rule)
                if rule.websocket:
                    with pytest.raises(Exception) as refused:  # noqa: PT011 - Quart's test client's own error
                        async with client.websocket(path, headers=HOST, scope_base={"client": OUTSIDE}) as ws:
                            await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h"}))
                            await asyncio.wait_for(ws.receive(), 5)
                    assert "401" in repr(refused.value) or getattr(refused.value, "response", None) is not None
                    checked.append(f"WS {path}")
                    continue
                for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                    for accept in ("text/html", "application/json"):
                        response = await client.open(path, method=method, headers={**HOST, "Accept": accept},
                                                     scope_base={"client": OUTSIDE})
                        body = await response.get_data(as_text=True)
                        checked.append(f"{method} {path} {accept}: {response.status_code}")
                        if path in PUBLIC:
                            assert response.status_code in (200, 303, 403), (method, path, response.status_code)
                            assert "price" not in body.lower() or path == "/login"
                            continue
                        if response.status_code == 303:
                            assert response.headers["Location"].startswith("/login?next="), (method, path)
                        else:
                            assert response.status_code == 401, (method, path, response.status_code, body[:200])
                            assert response.headers["WWW-Authenticate"].startswith("Bearer")

    run(scenario())
    served_paths = {r.rule for r in rules}
    # the list is the app's own: every blueprint's routes are in it, and each was checked
    assert {"/", "/chart", "/markets", "/ws", "/api/v1/history", "/api/v1/tickers", "/alerts/rules",
            "/alerts/recent", "/healthz", "/metrics", "/login", "/logout", "/static/<path:filename>"} <= served_paths
    assert len(checked) >= len(rules)


def test_an_anonymous_browser_gets_the_login_page_and_nothing_else(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            for path in ("/", "/chart?symbol=ETH", "/markets"):
                response = await client.get(path, headers={**HOST, "Accept": "text/html"},
                                            scope_base={"client": OUTSIDE})
                assert response.status_code == 303 and response.headers["Location"].startswith("/login?next=")
            page = await client.get("/login", headers=HOST, scope_base={"client": OUTSIDE})
            html = await page.get_data(as_text=True)
            assert page.status_code == 200 and 'name="password"' in html and "data-symbols" not in html
            assert "form-action 'self'" in page.headers["Content-Security-Policy"]
            for path in ("/static/app.js", "/static/alerts.js", "/static/style.css"):
                assert (await client.get(path, headers=HOST, scope_base={"client": OUTSIDE})).status_code == 401
            for path in ("/static/login.css", "/favicon.ico"):
                assert (await client.get(path, headers=HOST, scope_base={"client": OUTSIDE})).status_code == 200
            # probes on this machine still get /healthz and /metrics; its browser, like any, must log in
            assert (await client.get("/metrics", headers=HOST, scope_base={"client": LOCAL})).status_code == 200
            assert (await client.get("/healthz", headers=HOST, scope_base={"client": LOCAL})).status_code in (200, 503)
            local_page = await client.get("/", headers={**HOST, "Accept": "text/html"}, scope_base={"client": LOCAL})
            assert local_page.status_code == 303

    run(scenario())


def test_a_session_opens_every_page_and_the_websocket_and_logout_ends_it(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            response = await log_in(client, "alice")
            assert response.status_code == 303 and response.headers["Location"] == "/chart"
            for path in ("/", "/chart", "/alerts/rules", "/alerts/recent", "/static/app.js", "/auth/me"):
                assert (await client.get(path, headers=HOST, scope_base={"client": OUTSIDE})).status_code == 200
            async with client.websocket("/ws", headers=HOST, scope_base={"client": OUTSIDE}) as ws:
                await ws.send('{"type": "nonsense"}')
                assert json.loads(await asyncio.wait_for(ws.receive(), 5))["type"] == "error"
            csrf = await page_csrf(client)
            refused = await client.post("/logout", headers=HOST, scope_base={"client": OUTSIDE})
            assert refused.status_code == 403  # no CSRF token: a cross-site page cannot log anyone out either
            cookie = client.cookie_jar  # the session's cookie, kept to replay after the logout
            saved = [c for c in cookie if c.name == "cryptopulse"][0].value
            out = await client.post("/logout", headers={**HOST, "X-CSRF-Token": csrf}, scope_base={"client": OUTSIDE})
            assert out.status_code == 200
            assert (await client.get("/alerts/rules", headers=HOST, scope_base={"client": OUTSIDE})).status_code == 401
            replay = await client.get("/alerts/rules", headers={**HOST, "Cookie": f"cryptopulse={saved}"},
                                      scope_base={"client": OUTSIDE})
            assert replay.status_code == 401, "a logged-out cookie replayed must be refused"

    run(scenario())
    events = [e["event"] for e in served.trail]
    assert events == ["login", "logout"]
    assert served.trail[0]["address"] == OUTSIDE[0] and served.trail[0]["user"] == "alice"


def test_the_cookie_is_httponly_samesite_and_secure_over_tls_or_behind_a_trusted_proxy(tmp_path, monkeypatch):
    def cookie_after_login(headers: dict[str, str], client_at: tuple[str, int], **overrides: Any) -> str:
        served = board(tmp_path, monkeypatch, **overrides)

        async def scenario() -> str:
            async with served.app.test_app() as test_app:
                response = await log_in(test_app.test_client(), "alice", client_at=client_at, headers=headers)
                assert response.status_code == 303
                return [c for c in response.headers.getlist("Set-Cookie") if "cryptopulse=" in c][0]

        return run(scenario())

    plain = cookie_after_login({}, OUTSIDE)
    assert plain.startswith("cryptopulse=") and "HttpOnly" in plain and "SameSite=Strict" in plain
    assert "Path=/" in plain and "Secure" not in plain and "Max-Age=43200" in plain
    proxied = cookie_after_login({"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}, LOCAL,
                                 trusted_proxies=("127.0.0.1",))
    assert proxied.startswith("__Host-cryptopulse=") and "Secure" in proxied and "HttpOnly" in proxied
    # a client cannot make itself "https" (nor anything else) by saying so: only a trusted proxy is believed
    spoofed = cookie_after_login({"X-Forwarded-Proto": "https"}, OUTSIDE)
    assert spoofed.startswith("cryptopulse=") and "Secure" not in spoofed


def test_a_write_of_a_session_needs_its_csrf_token(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            await log_in(client, "alice")
            csrf = await page_csrf(client)
            for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}):
                refused = await client.post("/alerts/rules", json=RULE, headers={**HOST, **headers},
                                            scope_base={"client": OUTSIDE})
                assert refused.status_code == 403 and "CSRF" in (await refused.get_json())["error"]
            added = await client.post("/alerts/rules", json=RULE, headers={**HOST, "X-CSRF-Token": csrf},
                                      scope_base={"client": OUTSIDE})
            assert added.status_code == 201
            rule_id = (await added.get_json())["rule"]["id"]
            assert (await client.delete(f"/alerts/rules/{rule_id}", headers=HOST,
                                        scope_base={"client": OUTSIDE})).status_code == 403
            assert (await client.delete(f"/alerts/rules/{rule_id}", headers={**HOST, "X-CSRF-Token": csrf},
                                        scope_base={"client": OUTSIDE})).status_code == 200
            # the login form: without its field (or another browser's) the password is not even checked
            response = await client.post("/login", headers=HOST, scope_base={"client": OUTSIDE},
                                         form={"name": "alice", "password": PASSWORD, "next": "/"})
            assert response.status_code == 403

    run(scenario())
    assert [e["event"] for e in served.trail] == ["login", "rule_added", "rule_removed"]


def test_a_viewer_cannot_write_and_a_tokens_scope_holds(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    read, write, viewer_write = (served.tokens[k] for k in ("alice-read", "alice-write", "vic-write"))

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()

            def bearer(text: str) -> dict[str, str]:
                return {**HOST, "Authorization": f"Bearer {text}"}

            ok = await client.get("/api/v1/tickers", headers=bearer(read), scope_base={"client": OUTSIDE})
            assert ok.status_code == 200
            assert (await client.get("/alerts/rules", headers=bearer(read), scope_base={"client": OUTSIDE})
                    ).status_code == 200
            refused = await client.post("/alerts/rules", json=RULE, headers=bearer(read),
                                        scope_base={"client": OUTSIDE})
            assert refused.status_code == 403 and "read" in (await refused.get_json())["error"]
            added = await client.post("/alerts/rules", json=RULE, headers=bearer(write), scope_base={"client": OUTSIDE})
            assert added.status_code == 201 and (await added.get_json())["rule"]["owner"] == "alice"
            viewer = await client.post("/alerts/rules", json=RULE, headers=bearer(viewer_write),
                                       scope_base={"client": OUTSIDE})
            assert viewer.status_code == 403  # a token never writes more than its account may
            for bad in (served.tokens["expired"], read[:-1] + ("A" if read[-1] != "A" else "B"), "cpt_nonsense",
                        "Basic abc"):
                answer = await client.get("/api/v1/tickers", headers=bearer(bad), scope_base={"client": OUTSIDE})
                assert answer.status_code == 401, bad
            # removed: refused at once
            served.shared.book.set_token(token_of(served.shared, write).id,
                                         replace(token_of(served.shared, write), removed=1))
            assert (await client.get("/api/v1/tickers", headers=bearer(write), scope_base={"client": OUTSIDE})
                    ).status_code == 401
            # a viewer's session: reads, never writes
            await log_in(client, "vic")
            csrf = await page_csrf(client)
            listed = await client.get("/alerts/rules", headers=HOST, scope_base={"client": OUTSIDE})
            assert (await listed.get_json())["writable"] is False
            refused = await client.post("/alerts/rules", json=RULE, headers={**HOST, "X-CSRF-Token": csrf},
                                        scope_base={"client": OUTSIDE})
            assert refused.status_code == 403

    run(scenario())
    assert len(served.rules.rules) == 1


def test_one_account_sees_neither_the_rules_nor_the_alerts_of_another(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    for owner in ("alice", "bob", None):
        rule = new_rule("BTC", "above", 70000.0, owner=owner)
        served.rules.rules[rule.id] = rule
    of = {r.owner: r.id for r in served.rules.rules.values()}
    feed = AlertFeed.__new__(AlertFeed)  # its list only: no Kafka
    from collections import deque

    feed.recent, feed.seq = deque(maxlen=500), 0
    feed.stop = lambda timeout=10.0: None

    async def scenario() -> None:
        feed.changed = asyncio.Event()
        served.shared.alerts = feed
        feed.add([{"type": "alert", "id": f"{owner}-1", "owner": owner, "message": f"for {owner}"}
                  for owner in ("alice", "bob", None)], live=False)
        async with served.app.test_app() as test_app:
            for name, rules, alerts in (("alice", {of["alice"]}, {"alice-1"}), ("bob", {of["bob"]}, {"bob-1"}),
                                        ("root", set(of.values()), {"alice-1", "bob-1", "None-1"})):
                client = test_app.test_client()
                await log_in(client, name)
                listed = await (await client.get("/alerts/rules", headers=HOST, scope_base={"client": OUTSIDE})
                                ).get_json()
                assert {r["id"] for r in listed["rules"]} == rules, name
                recent = await (await client.get("/alerts/recent", headers=HOST, scope_base={"client": OUTSIDE})
                                ).get_json()
                assert {a["id"] for a in recent["alerts"]} == alerts, name
            bob = test_app.test_client()
            await log_in(bob, "bob")
            csrf = await page_csrf(bob)
            gone = await bob.delete(f"/alerts/rules/{of['alice']}", headers={**HOST, "X-CSRF-Token": csrf},
                                    scope_base={"client": OUTSIDE})
            assert gone.status_code == 404 and of["alice"] in served.rules.rules

    run(scenario())


def test_live_alerts_go_only_to_their_accounts_pages():
    async def scenario() -> list[str]:
        from collections import deque

        feed = AlertFeed.__new__(AlertFeed)
        feed.recent, feed.seq, feed.changed = deque(maxlen=500), 0, asyncio.Event()
        sent: list[str] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text)["id"])

        task = asyncio.create_task(push_alerts(feed, send, lambda alert: alert.get("owner") == "alice"))
        await asyncio.sleep(0)
        feed.add([{"type": "alert", "id": "a", "owner": "alice"}, {"type": "alert", "id": "b", "owner": "bob"},
                  {"type": "alert", "id": "c", "owner": None}])
        await asyncio.sleep(0.05)
        task.cancel()
        return sent

    assert asyncio.run(scenario()) == ["a"]


def test_failed_logins_slow_down_per_address_and_per_account(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    now = [1000.0]
    served.shared.throttle.clock = lambda: now[0]

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            for _ in range(3):  # the first three cost nothing
                assert (await log_in(client, "alice", "wrong password!")).status_code == 401
            fourth = await log_in(client, "alice", "wrong password!")
            assert fourth.status_code == 401 and "Wait 1 s" in await fourth.get_data(as_text=True)
            refused = await log_in(client, "alice")  # even the right password waits
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            now[0] += 1.1
            assert (await log_in(client, "alice", "wrong password!")).status_code == 401  # 5th: 2 s
            now[0] += 2.1
            assert (await log_in(client, "alice", "wrong password!")).status_code == 401  # 6th: 4 s
            # another address, same account: slowed as well (the account's count)
            elsewhere = await log_in(client, "alice", client_at=("198.51.100.20", 1))
            assert elsewhere.status_code == 429 and int(elsewhere.headers["Retry-After"]) >= 3
            # the same address, another account: slowed (the address's count)
            assert (await log_in(client, "bob")).status_code == 429
            now[0] += 4.1
            assert (await log_in(client, "alice")).status_code == 303
            assert served.shared.throttle.wait(OUTSIDE[0], "alice") == 0  # a success clears both

    run(scenario())
    events = [e["event"] for e in served.trail]
    assert events.count("login_failed") == 6 and events.count("login_throttled") == 3 and events[-1] == "login"
    failed = [e for e in served.trail if e["event"] == "login_failed"][0]
    assert failed["user"] == "alice" and failed["address"] == OUTSIDE[0] and failed["detail"] == "wrong password"


def test_an_unknown_account_fails_like_a_wrong_password(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)

    async def scenario() -> tuple[str, str]:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            unknown = await (await log_in(client, "mallory")).get_data(as_text=True)
            wrong = await (await log_in(client, "alice", "not the password")).get_data(as_text=True)
            return unknown, wrong

    unknown, wrong = run(scenario())
    assert "Wrong name or password." in unknown and "Wrong name or password." in wrong


def test_sessions_end_when_idle_too_old_or_the_password_changes_and_survive_a_restart(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    clock = [10_000_000.0]
    served.shared.sessions.clock = lambda: clock[0]

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            await log_in(client, "alice")
            cookie = [c for c in client.cookie_jar if c.name == "cryptopulse"][0].value
            sessions, book = served.shared.sessions, served.shared.book
            assert sessions.check(cookie, book) is not None
            # a restart, or another worker: a new app with the same secret file accepts it
            other = board(tmp_path, monkeypatch)
            other.shared.sessions.clock = lambda: clock[0]
            assert other.shared.sessions.check(cookie, other.shared.book) is not None
            clock[0] += sessions.idle - 5
            session = sessions.check(cookie, book)
            assert session is not None and sessions.due_renewal(session)
            clock[0] += 10
            assert sessions.check(cookie, book) is None, "idle too long"
            renewed = sessions.cookie(session)  # what a request within the idle limit got back
            assert sessions.check(renewed, book) is not None
            clock[0] += sessions.absolute
            assert sessions.check(sessions.cookie(session), book) is None, "older than the absolute limit"
            book.set_user("alice", replace(user_of(served.shared, "alice"), changed=int(clock[0] * 1000) + 1))
            assert sessions.check(cookie, book) is None, "the password changed after it began"
            book.set_user("alice", None)
            assert sessions.check(cookie, book) is None, "the account was removed"
            assert sessions.check("garbage", book) is None and sessions.check(cookie[:-2] + "xx", book) is None

    run(scenario())


def test_until_the_accounts_are_read_only_this_machine_is_served(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch, users={})

    class NotReady:
        @staticmethod
        def stop(timeout: float = 10.0) -> None:
            pass

        class ready:  # noqa: N801 - the feed's Event
            @staticmethod
            def is_set() -> bool:
                return False

    served.shared.accounts = NotReady()  # type: ignore[assignment]

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            far = await client.get("/", headers=HOST, scope_base={"client": OUTSIDE})
            assert far.status_code == 503 and far.headers["Retry-After"] == "2"
            assert (await client.get("/", headers=HOST, scope_base={"client": LOCAL})).status_code == 200

    run(scenario())


def test_local_mode_is_unchanged_and_a_proxy_on_this_machine_is_not_local(tmp_path, monkeypatch):
    """Without accounts: pages open, rules written from this machine only. Behind a proxy on the same machine that
    adds no X-Forwarded-For (nginx's plain proxy_pass), every client looked local; WEBUI_TRUSTED_PROXIES says
    which peers are proxies, and a request from one is never local."""
    plain = board(tmp_path, monkeypatch, users={})
    proxied = board(tmp_path, monkeypatch, users={}, trusted_proxies=("127.0.0.1",))

    async def post(served: Any, client_at: tuple[str, int]) -> int:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            assert (await client.get("/", headers=HOST, scope_base={"client": client_at})).status_code == 200
            response = await client.post("/alerts/rules", json=RULE, headers=HOST, scope_base={"client": client_at})
            return response.status_code

    assert run(post(plain, LOCAL)) == 201
    assert run(post(plain, OUTSIDE)) == 403

    async def through_the_proxy() -> tuple[int, int]:
        async with proxied.app.test_app() as test_app:
            client = test_app.test_client()
            page = await client.get("/", headers=HOST, scope_base={"client": LOCAL})
            write = await client.post("/alerts/rules", json=RULE, headers=HOST, scope_base={"client": LOCAL})
            return page.status_code, write.status_code

    # the proxy's own address is not local any more, and without accounts nobody it forwards gets in
    assert run(through_the_proxy()) == (303, 401)

    async def health(served: Any) -> dict[str, Any]:
        async with served.app.test_app() as test_app:
            response = await test_app.test_client().get("/healthz", headers=HOST, scope_base={"client": LOCAL})
            return await response.get_json()

    assert "pid" in run(health(plain))


def test_a_trusted_proxys_client_is_the_address_it_forwards(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch, trusted_proxies=("127.0.0.1", "10.0.0.0/8"))

    async def scenario() -> None:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            # the right-most address that is not a trusted proxy: what the client wrote on the left is not believed
            await log_in(client, "alice", "wrong password!", client_at=LOCAL,
                         headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.2.3"})
            await log_in(client, "alice", "wrong password!", client_at=OUTSIDE,  # not a proxy: ignored
                         headers={"X-Forwarded-For": "192.0.2.99"})

    run(scenario())
    assert [e["address"] for e in served.trail] == ["198.51.100.7", OUTSIDE[0]]


def test_serving_beyond_loopback_without_accounts_is_refused_in_one_line():
    config = WebConfig(start_consumer=False, allow_open=False)
    check_exposure("127.0.0.1", config, lambda: 0)
    check_exposure("0.0.0.0", config, lambda: 1)
    for count, said in ((lambda: 0, "without accounts"), (lambda: 1 / 0, "cannot be told")):
        with pytest.raises(ValueError, match=said) as refused:
            check_exposure("0.0.0.0", config, count)
        assert "\n" not in str(refused.value)
    check_exposure("0.0.0.0", WebConfig(start_consumer=False, allow_open=True), lambda: 0)


def test_every_account_removed_while_served_beyond_loopback_lets_nobody_in(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch, users={}, host="0.0.0.0")

    async def scenario() -> int:
        async with served.app.test_app() as test_app:
            response = await test_app.test_client().get("/alerts/rules", headers=HOST, scope_base={"client": OUTSIDE})
            return response.status_code

    assert run(scenario()) == 401


def test_a_page_offers_and_accepts_only_its_accounts_channels(tmp_path, monkeypatch):
    served = board(tmp_path, monkeypatch)
    for name, owner in (("alice-phone", "alice"), ("bob-phone", "bob"), ("ops", None)):
        served.shared.channels.values[name] = new_channel(name, "ntfy", f"https://ntfy.sh/{name}", owner=owner)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with served.app.test_app() as test_app:
            for name in ("alice", "root"):
                client = test_app.test_client()
                await log_in(client, name)
                listed = await (await client.get("/alerts/rules", headers=HOST, scope_base={"client": OUTSIDE})
                                ).get_json()
                csrf = await page_csrf(client)
                answers = [await client.post("/alerts/rules", json={**RULE, "notify": [channel]},
                                             headers={**HOST, "X-CSRF-Token": csrf}, scope_base={"client": OUTSIDE})
                           for channel in ("bob-phone", "alice-phone", "ops")]
                seen[name] = ([c["name"] for c in listed["channels"]],
                              [(a.status_code, (await a.get_json()).get("error")) for a in answers])
        return seen

    seen = run(scenario())
    assert seen["alice"][0] == ["alice-phone"]  # neither bob's nor the operator's
    assert [status for status, _ in seen["alice"][1]] == [400, 201, 400]
    assert seen["alice"][1][0][1].startswith("no channel bob-phone of alice (channels: alice-phone;")
    assert seen["root"][0] == ["ops"]  # an admin: the operator's, never an account's phone for its own rules
    assert [status for status, _ in seen["root"][1]] == [400, 400, 201]


def test_an_open_websocket_is_closed_when_its_session_ends(tmp_path, monkeypatch):
    """A logout ends the session's sockets too (1008), checked every few seconds (here every 0.2 s)."""
    import functools

    from quart.testing.connections import WebsocketDisconnectError

    import webui.ws

    monkeypatch.setattr(webui.ws, "watch_session", functools.partial(webui.ws.watch_session, every=0.2))
    served = board(tmp_path, monkeypatch)

    async def scenario() -> tuple[int | None, str]:
        async with served.app.test_app() as test_app:
            client = test_app.test_client()
            await log_in(client, "alice")
            csrf = await page_csrf(client)
            async with client.websocket("/ws", headers=HOST, scope_base={"client": OUTSIDE}) as ws:
                await ws.send('{"type": "nonsense"}')
                assert json.loads(await asyncio.wait_for(ws.receive(), 5))["type"] == "error"  # open and served
                out = await client.post("/logout", headers={**HOST, "X-CSRF-Token": csrf},
                                        scope_base={"client": OUTSIDE})
                assert out.status_code == 200
                try:
                    while True:
                        await asyncio.wait_for(ws.receive(), 5)
                except WebsocketDisconnectError as closed:
                    return closed.args[0] if closed.args else None, repr(closed)
        return None, "not closed"

    code, said = run(scenario())
    assert code == 1008, said
