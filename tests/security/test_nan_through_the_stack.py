"""Issue 12, through real Kafka: a foreign producer's NaN tick in the topic never reaches a browser.

Anyone who can produce to the prices topic can write a NaN price (our publishers refuse to). Before, the
dashboard's live feed sent it on as `NaN`, which a browser's JSON.parse refuses: the page's socket handler failed
on that message. The test uses a topic of its own: the test namespace's sink must never see such a record
(FerretDB drops the connection of a write holding a NaN, and the sink would fail on it again and again:
docs/security.md, known limits).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cryptopulse.avro import AvroCodec
from webui.app import create_app
from webui.state import state

pytestmark = pytest.mark.integration


def strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_foreign_nan_in_the_topic_never_reaches_a_browser(settings):
    from dataclasses import replace

    symbol = "NN" + "".join(random.choices(string.ascii_uppercase, k=4))
    topic = f"{settings.prices_topic}-nan-{symbol.lower()}"  # the namespace's prefix: removed with it
    own = replace(settings, prices_topic=topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    codec = AvroCodec(own, topic, "tick")
    codec.register()

    def publish() -> None:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        now = int(time.time() * 1000)
        rows = [(100.0, 5.0), (float("nan"), 5.0), (101.0, float("inf")), (float("-inf"), 5.0), (102.0, 6.0)]
        for i, (price, volume) in enumerate(rows):  # a foreign producer: none of ours would send these
            record = {"_id": f"{symbol}|foreign|{now + i}", "symbol": symbol, "quote": "USD", "source": "foreign",
                      "ts": now + i, "price": price, "volume_24h": volume, "change_24h_pct": None,
                      "published_at": now}
            producer.produce(topic, key=symbol.encode(), value=codec.encode(record))
        assert producer.flush(30) == 0

    async def scenario() -> list[str]:
        app = create_app(own, views=False, symbols=(symbol,))
        async with app.test_app() as test_app:
            consumer = state(app).consumer
            deadline = time.monotonic() + 60
            while not consumer.status()["ok"]:
                assert time.monotonic() < deadline, f"consumer never became ready: {consumer.status()}"
                await asyncio.sleep(0.2)
            async with test_app.test_client().websocket("/ws") as ws:
                await ws.send(json.dumps({"type": "subscribe", "symbol": symbol, "range": "1h"}))
                texts = []
                while not any('"type":"snapshot"' in t for t in texts):
                    texts.append(await asyncio.wait_for(ws.receive(), 30))
                await asyncio.to_thread(publish)
                prices: list[float] = []
                while 102.0 not in prices:
                    text = await asyncio.wait_for(ws.receive(), 30)
                    texts.append(text)
                    message = strict(text)  # a NaN anywhere in it fails here
                    ticks = message["ticks"] if message["type"] == "ticks" else [message]
                    prices += [t["price"] for t in ticks if t.get("type", "tick") == "tick" and "price" in t]
                return texts

    texts = asyncio.run(scenario())
    ticks = []
    for text in texts:
        message = strict(text)
        if message["type"] in ("tick", "ticks"):
            ticks += message["ticks"] if message["type"] == "ticks" else [message]
    assert [(t["price"], t["volume_24h"]) for t in ticks] == [(100.0, 5.0), (101.0, None), (102.0, 6.0)]
