"""Issue 12: what a browser page elsewhere, or anyone who reaches the port, can get from the dashboard.

Before: the Origin check compared Origin with the Host header, which a DNS-rebinding page controls (a page of
evil.example whose name now resolves to 127.0.0.1 sends Origin http://evil.example:8000 and Host
evil.example:8000: equal, so accepted); no CSP, frame-ancestors, nosniff or referrer policy; an inline script
in the page; /healthz told anyone the host name, the pid (in the group id) and raw driver errors.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from cryptopulse.settings import Settings
from webui.app import create_app


def app(**overrides: Any) -> Any:
    return create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                      start_consumer=False, views=False, probe_seconds=0, **overrides)


def get(path: str, headers: dict[str, str] | None = None, client: tuple[str, int] | None = None,
        **overrides: Any) -> tuple[int, dict[str, str], str]:
    async def scenario() -> tuple[int, dict[str, str], str]:
        served = app(**overrides)
        async with served.test_app() as test_app:
            response = await test_app.test_client().get(path, headers=headers or {},
                                                        scope_base={"client": client} if client else None)
            answered = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, answered, await response.get_data(as_text=True)

    return asyncio.run(scenario())


def ws_opens(headers: dict[str, str], **overrides: Any) -> bool:
    async def scenario() -> bool:
        served = app(**overrides)
        async with served.test_app() as test_app:
            try:
                async with test_app.test_client().websocket("/ws", headers=headers) as ws:
                    await ws.send('{"type":"ping"}')
                    await asyncio.wait_for(ws.receive(), 5)
                return True
            except Exception:  # noqa: BLE001 - Quart's test client raises its own error for a refused handshake
                return False

    return asyncio.run(scenario())


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "192.168.1.20:8000", "localhost.evil.example"])
def test_a_host_the_operator_did_not_name_is_refused(host):
    status, _, body = get("/", {"Host": host})
    assert status == 421 and "WEBUI_ALLOWED_HOSTS" in body


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.2", "LOCALHOST"])
def test_loopback_names_are_served(host):
    assert get("/", {"Host": host})[0] == 200


def test_the_operators_hosts_and_the_allowed_origins_hosts_are_served():
    assert get("/", {"Host": "dash.example.com"}, allowed_hosts=("dash.example.com",))[0] == 200
    assert get("/", {"Host": "charts.example.org"}, allowed_origins=("https://charts.example.org",))[0] == 200
    # the address it is bound to (beyond loopback without accounts only with WEBUI_ALLOW_OPEN: docs/security.md)
    assert get("/", {"Host": "10.0.0.5:8000"}, host="10.0.0.5", allow_open=True)[0] == 200


def test_dns_rebinding_cannot_open_the_websocket():
    """Origin and Host agree, both naming the attacker's domain: the Host check comes first and refuses it."""
    assert not ws_opens({"Host": "evil.example:8000", "Origin": "http://evil.example:8000"})
    assert ws_opens({"Host": "localhost:8000", "Origin": "http://localhost:8000"})


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/healthz", "/metrics"])
def test_every_response_carries_the_security_headers(path):
    _, headers, _ = get(path, {"Host": "localhost:8000"})
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert "default-src 'self'" in csp and "object-src 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_the_page_has_no_inline_script_so_the_policy_does_not_break_it():
    _, _, page = get("/", {"Host": "localhost:8000"})
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.DOTALL | re.IGNORECASE)
    assert scripts and all(not body.strip() for body in scripts)
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", page, re.IGNORECASE))
    assert not re.search(r"\son[a-z]+=", page) and " style=" not in page


def test_healthz_detail_goes_to_loopback_only():
    detail = {"kafka", "mongo", "registry", "clients"}
    _, _, remote = get("/healthz", {"Host": "localhost:8000"}, client=("203.0.113.7", 50000))
    _, _, local = get("/healthz", {"Host": "localhost:8000"}, client=("127.0.0.1", 50000))
    _, _, proxied = get("/healthz", {"Host": "localhost:8000", "X-Forwarded-For": "203.0.113.7"},
                        client=("127.0.0.1", 50000))
    _, _, allowed = get("/healthz", {"Host": "localhost:8000"}, client=("203.0.113.7", 50000), health_detail=True)
    import json

    assert set(json.loads(remote)) == {"status", "down"}
    assert set(json.loads(proxied)) == {"status", "down"}  # a proxy on this host is not its clients
    assert detail <= set(json.loads(local)) and detail <= set(json.loads(allowed))
