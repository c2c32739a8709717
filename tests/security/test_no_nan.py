"""Issue 12: no NaN or infinity on the wire or from our producers, whatever the path.

`json.dumps` wrote `NaN`, which a browser's JSON.parse refuses: one stored tick with a NaN price made every
snapshot containing it fail to load for as long as retention kept it. Live sources already refused NaN; the
back-fill's candles, the publisher itself, the roll-up (a foreign producer's record) and the dashboard did not.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

from cryptopulse.candle import Candle
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from producer.sources.history import candle_reject_reason
from streams.candles import CandleBook
from webui.app import create_app
from webui.history import HistoryStore
from webui.live import encode, tick_message
from webui.views import WindowView, candle_row, candle_spec, tick_row, tick_spec

NOW = int(time.time() * 1000)
NAN, INF = float("nan"), float("inf")


def strict(text: str) -> Any:
    """JSON as a browser reads it: NaN and Infinity are errors."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def stored_ticks() -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    return [
        {"ts": at(NOW - 60_000), "price": 100.0, "volume_24h": 5.0, "source": "simulated"},
        {"ts": at(NOW - 50_000), "price": NAN, "volume_24h": 5.0, "source": "simulated"},  # a foreign producer's
        {"ts": at(NOW - 40_000), "price": 101.0, "volume_24h": INF, "source": "simulated"},
        {"ts": at(NOW - 30_000), "price": 102.0, "volume_24h": 6.0, "source": "simulated"},
    ]


def test_a_stored_nan_does_not_break_a_snapshot():
    """Through the real /ws: the snapshot is strict JSON, without the NaN tick, with the other three."""

    async def scenario() -> str:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1"), start_consumer=False, views=False,
                         probe_seconds=0)
        async with app.test_app() as test_app:

            async def find(self: Any, collection: str, *args: Any) -> list[dict[str, Any]]:
                return stored_ticks() if collection == "prices" else []

            HistoryStore._find, original = find, HistoryStore._find
            try:
                async with test_app.test_client().websocket("/ws") as ws:
                    await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h", "end": NOW}))
                    while True:
                        text = await asyncio.wait_for(ws.receive(), 10)
                        if json.loads(text)["type"] != "status":
                            return text
            finally:
                HistoryStore._find = original

    snap = strict(asyncio.run(scenario()))
    assert snap["type"] == "snapshot", snap
    assert [p[1] for p in snap["line"]] == [100.0, 101.0, 102.0]
    assert snap["stats"]["count"] == 3 and snap["stats"]["min"] == 100.0


def test_the_wire_encoding_refuses_nan():
    with pytest.raises(ValueError):
        encode({"type": "tick", "price": NAN})


def test_a_live_tick_with_a_nan_price_is_skipped_and_a_nan_volume_is_sent_as_null():
    record = {"symbol": "BTC", "source": "x", "ts": NOW, "price": 100.0, "volume_24h": NAN,
              "change_24h_pct": INF, "published_at": NOW}
    message = tick_message(record)
    assert strict(message.text)["volume_24h"] is None and strict(message.text)["change_24h_pct"] is None
    with pytest.raises(ValueError):  # the consumer counts it undecodable and skips it
        tick_message({**record, "price": NAN})


@pytest.mark.parametrize("spec, row", [
    (tick_spec, tick_row({"ts": NOW, "price": NAN, "volume_24h": 1.0})),
    (lambda settings: candle_spec(settings, "1m"),
     candle_row({"start": NOW - NOW % 60_000, "open": 1.0, "high": INF, "low": 1.0, "close": 1.0})),
])
def test_the_views_never_hold_a_non_finite_row(spec, row):
    view = WindowView(Settings(), spec(Settings()))
    view.put("BTC", "simulated", row)
    assert view.window("BTC", NOW - 3_600_000, NOW + 1) == (None, [])


def test_the_roll_up_drops_a_foreign_producers_nan_price():
    book = CandleBook(grace_ms=0, idle_close=float("inf"))
    minute = NOW - NOW % 60_000
    assert book.add("BTC", "foreign", minute + 1, NAN) is False
    assert book.add("BTC", "foreign", minute + 2, 100.0) is True
    assert book.add("BTC", "foreign", minute + 3, INF) is False
    assert book.add("BTC", "foreign", minute + 4, 101.0) is True
    (candle,) = book.close_all()
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 101.0, 100.0, 101.0)
    assert all(math.isfinite(v) for v in (candle.open, candle.high, candle.low, candle.close))


def test_the_back_fill_refuses_a_candle_whose_close_tick_carries_a_nan_volume():
    """The simulated market's candles carry the rolling 24 h volume into the tick published for their close;
    only the candle's own volume was checked."""
    candle = Candle.ohlc("BTC", "simulated", NOW - 3_600_000, 100.0, 101.0, 99.0, 100.5, 10.0, volume_24h=NAN)
    assert candle_reject_reason(candle, NOW) == "nan volume"


def test_the_publisher_refuses_a_non_finite_tick_on_every_path():
    """The last check before Kafka, whoever calls it (the live producer checked; the back-fill did not)."""
    from producer.publisher import TickPublisher

    publisher = TickPublisher(Settings(kafka_bootstrap="127.0.0.1:1",
                                       schema_registry_url="http://127.0.0.1:1/apis/ccompat/v7"))

    async def publish() -> None:
        await publisher.publish(Tick("BTC", "simulated", NOW, NAN))
        await publisher.publish(Tick("BTC", "simulated", NOW, 100.0, volume_24h=INF))

    asyncio.run(asyncio.wait_for(publish(), 5))  # before: waits for the registry to encode the NaN, and publishes
    assert publisher.stats.rejected == 2 and publisher.stats.queued == 0
