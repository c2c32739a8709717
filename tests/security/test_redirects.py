"""Issue 12: an API key is sent to its API's host only. requests drops `Authorization` on a redirect to another
host but keeps every other header, and the market-data keys travel in headers of their own
(`X-CMC_PRO_API_KEY`, `x-cg-demo-api-key`): a mirror or CDN that redirected elsewhere got the key."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from producer.sources.http import JsonClient


class Recorder(BaseHTTPRequestHandler):
    """Answers JSON, or redirects to `target` when the path asks for it; remembers every request's headers."""

    seen: list[tuple[int, str, dict[str, str]]]
    target: str = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append((self.server.server_address[1], self.path, dict(self.headers)))
        if self.path.startswith("/away"):
            self.send_response(302)
            self.send_header("Location", f"{self.target}/landed")
            self.end_headers()
            return
        if self.path.startswith("/near"):
            self.send_response(302)
            self.send_header("Location", "/landed")
            self.end_headers()
            return
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[str, str, list]]:
    seen: list = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    api, other = ThreadingHTTPServer(("127.0.0.1", 0), handler), ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.target = f"http://localhost:{other.server_address[1]}"  # another host (and port)
    for server in (api, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{api.server_address[1]}", handler.target, seen
    for server in (api, other):
        server.shutdown()
        server.server_close()


def test_the_api_key_header_is_dropped_on_a_redirect_to_another_host(servers):
    api, _, seen = servers
    client = JsonClient("cmc", api, "CMC_URL", headers={"X-CMC_PRO_API_KEY": "secret-key"})
    assert asyncio.run(client.get("/away")) == {"ok": True}
    (_, first_path, first), (_, landed_path, landed) = seen
    assert first_path == "/away" and first.get("X-CMC_PRO_API_KEY") == "secret-key"
    assert landed_path == "/landed" and "X-CMC_PRO_API_KEY" not in landed and "x-cmc_pro_api_key" not in {
        k.lower() for k in landed}
    assert landed.get("User-Agent") == "cryptopulse-producer"  # the harmless headers still go


def test_the_api_key_header_follows_a_redirect_on_the_same_host(servers):
    api, _, seen = servers
    client = JsonClient("coingecko", api, "COINGECKO_URL", headers={"x-cg-demo-api-key": "demo-key"})
    assert asyncio.run(client.get("/near")) == {"ok": True}
    assert [headers.get("x-cg-demo-api-key") for _, _, headers in seen] == ["demo-key", "demo-key"]
