"""The dashboard's alert feed (webui/alerts.py): live alerts pushed once to every open socket; the history read
from the store at start listed, never pushed as if new."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from cryptopulse.settings import Settings
from tests.fake_kafka import FakeBroker, FakeCodec, until
from webui.alerts import AlertFeed, alert_message, push_alerts
from webui.health import Dependencies


def alert(n: int) -> dict:
    return alert_message({"_id": f"r|BTC|simulated|{n}", "rule_id": "r", "symbol": "BTC", "source": "simulated",
                          "kind": "above", "direction": "up", "threshold": 1.0, "price": 2.0,
                          "ts": datetime.fromtimestamp(n, UTC), "change_pct": float("nan"),
                          "message": f"alert {n}", "fired_at": n * 1000})


def test_live_alerts_are_pushed_once_and_the_stored_ones_never():
    async def scenario() -> list[dict]:
        feed = AlertFeed(Settings(), "test-webui", asyncio.get_running_loop())
        sent: list[str] = []

        async def send(text: str) -> None:
            sent.append(text)

        task = asyncio.create_task(push_alerts(feed, send))
        await asyncio.sleep(0)
        feed.add([alert(1), alert(2)], live=False)  # the store's history, read after the socket opened
        await asyncio.sleep(0.01)
        feed.add([alert(3)])
        feed.add([alert(3), alert(4)])  # 3 redelivered
        await asyncio.sleep(0.01)
        task.cancel()
        return [json.loads(t) for t in sent]

    pushed = asyncio.run(scenario())
    assert [m["id"] for m in pushed] == ["r|BTC|simulated|3", "r|BTC|simulated|4"]
    first = pushed[0]
    assert first["type"] == "alert" and first["ts"] == 3000 and first["change_pct"] is None
    assert not {"text", "seq", "live"} & set(first)


def test_the_alert_feed_keeps_an_alert_through_a_registry_outage():
    # The registry goes away while an alert is on the topic: the feed waits and reads the same record again once
    # it is back (it used to log "not shown" and drop it), so every open page still gets it, once.
    broker, codec, deps = FakeBroker(), FakeCodec(), Dependencies()
    record = {"_id": "r|BTC|simulated|5", "rule_id": "r", "symbol": "BTC", "source": "simulated", "kind": "above",
              "direction": "up", "threshold": 1.0, "price": 2.0, "ts": 5_000, "message": "alert 5", "fired_at": 5_000}

    async def scenario() -> list[dict]:
        feed = AlertFeed(Settings(), "test-webui", asyncio.get_running_loop(), deps, make_consumer=broker.consumer,
                         make_codec=lambda: codec, backoff_cap=0.05)
        sent: list[str] = []

        async def send(text: str) -> None:
            sent.append(text)

        task = asyncio.create_task(push_alerts(feed, send))
        feed.start()
        try:
            await until(lambda: feed.assigned, "the alerts topic assigned")
            codec.registry_up = False
            broker.log.append(record)
            await until(lambda: deps.registry.is_down, "the registry reported down")
            asked = codec.asked
            await until(lambda: codec.asked > asked + 2, "the same record asked for again")
            assert sent == [] and len(feed.recent) == 0
            codec.registry_up = True
            await until(lambda: len(sent) == 1, "the alert pushed once the registry is back")
            await asyncio.sleep(0.2)
            assert not deps.registry.is_down
        finally:
            await asyncio.to_thread(feed.stop)
            task.cancel()
        return [json.loads(t) for t in sent]

    pushed = asyncio.run(scenario())
    assert [m["id"] for m in pushed] == ["r|BTC|simulated|5"]
