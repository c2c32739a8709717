"""The dashboard's alert feed (webui/alerts.py): live alerts pushed once to every open socket; the history read
from the store at start listed, never pushed as if new."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from cryptopulse.settings import Settings
from webui.alerts import AlertFeed, alert_message, push_alerts


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
