"""The dashboard through an outage of MongoDB and of the schema registry, on the real stack.

The shared stack is never stopped: the app reaches MongoDB and the registry through TCP proxies of this
test's own, which it closes (connections cut, port refusing) and opens again. Kafka is reached directly
(a client follows the broker's advertised address, so it cannot be proxied this way): the Kafka side of
an outage is in tests/unit/test_webui_outages.py, with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.test_webui import receive
from webui.app import create_app
from webui.state import state


class Proxy:
    """127.0.0.1:<port> forwarded to `target` while up; while down the port refuses and open connections are cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed: down
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the 5 s were for connecting: an idle pooled connection is cut only when down
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


# what a client may see while it waits for an answer during an outage: live ticks and status changes
DURING_OUTAGE = ("tick", "ticks", "status")


async def health_until(client: Any, predicate: Any, timeout: float, what: str) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/healthz")
        body = await response.get_json()
        if predicate(response.status_code, body):
            return response.status_code, body
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; /healthz {response.status_code}: {body}")
        await asyncio.sleep(0.5)


def test_the_dashboard_rides_out_a_mongodb_and_registry_outage(settings, caplog):
    mongo_at, registry_at = urlsplit(settings.mongodb_uri), urlsplit(settings.schema_registry_url)
    mongo = Proxy((mongo_at.hostname or "127.0.0.1", mongo_at.port or 27017))
    registry = Proxy((registry_at.hostname or "127.0.0.1", registry_at.port or 8081))
    proxied = replace(settings, mongodb_uri=f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
                      schema_registry_url=f"http://127.0.0.1:{registry.port}{registry_at.path}")
    # a window of 2001, which only MongoDB can answer: the live ones come from the views, with or without it
    subscribe = json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h", "end": 1_000_000_000_000})

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        app = create_app(proxied, probe_seconds=1)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            _, during = await health_until(client, lambda code, body: code == 503 and {"mongo", "registry"}
                                           <= set(body["down"]), 30, "MongoDB and the registry reported down")
            async with client.websocket("/ws") as ws:
                await ws.send(subscribe)
                refused = await receive(ws, ("error", "snapshot"), 60, skipping=DURING_OUTAGE)
                mongo.up()
                registry.up()
                _, after = await health_until(client, lambda code, body: code == 200, 90, "/healthz back to 200")
                await asyncio.sleep(2.1)  # past the answer cache
                await ws.send(subscribe)
                snapshot = await receive(ws, "snapshot", 60, skipping=DURING_OUTAGE)
            view = state(app).views["ticks"]
            assert await asyncio.to_thread(view.ready.wait, 90), view.status()
        return during, refused, after, snapshot

    try:
        with caplog.at_level(logging.INFO, logger="webui"):
            during, refused, after, snapshot = asyncio.run(scenario())
    finally:
        mongo.down()
        registry.down()
    assert during["mongo"]["ok"] is False and during["mongo"]["down_for_s"] >= 0
    # the probe's words, or a view's: the views load from their topics at start and meet the outage too
    assert "did not answer" in during["registry"]["error"] and "Connection refused" in during["registry"]["error"]
    assert "Traceback" not in json.dumps(during)
    assert refused["type"] == "error" and refused["message"].startswith("history unavailable: ")
    assert refused["retry_ms"] == 5000 and "Errno" not in refused["message"]
    assert after["status"] == "ok" and after["down"] == []
    assert snapshot["symbol"] == "BTC"
    lines = [r.getMessage() for r in caplog.records if r.name == "webui"]
    for what in ("MongoDB", "Schema registry"):  # one line as it goes, one as it comes back, none between
        assert len([line for line in lines if line.startswith(f"{what} unavailable")]) == 1, lines
        assert len([line for line in lines if line.startswith(f"{what} is back")]) == 1, lines
