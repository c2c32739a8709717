"""The live path: a Kafka consumer thread hands decoded ticks to the event loop, which fans them out.

The consumer never waits for a client: each subscriber has a bounded queue and a
slow one loses its oldest ticks (counted) instead of slowing everyone down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from cryptopulse.avro import AvroCodec, epoch_ms
from cryptopulse.settings import Settings
from webui.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's live feed: the symbol it watches and its bounded queue of ticks."""

    queue: asyncio.Queue[dict[str, Any]]
    symbol: str | None = None
    dropped: int = 0


@dataclass
class Hub:
    """Routes ticks to the subscribers of their symbol and remembers the last few ticks of each symbol."""

    metrics: Metrics
    recent_size: int = 600
    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    recent: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)

    def subscribe(self, sub: Subscriber, symbol: str) -> None:
        self.unsubscribe(sub)
        sub.symbol = symbol
        while not sub.queue.empty():
            sub.queue.get_nowait()
        self.subscribers.setdefault(symbol, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.symbol is not None:
            self.subscribers.get(sub.symbol, set()).discard(sub)
        sub.symbol = None

    def publish(self, ticks: list[dict[str, Any]]) -> None:
        for tick in ticks:
            symbol = tick["symbol"]
            self.metrics.consumed += 1
            self.recent.setdefault(symbol, deque(maxlen=self.recent_size)).append(tick)
            for sub in self.subscribers.get(symbol, ()):
                if sub.queue.full():
                    sub.queue.get_nowait()  # slow client: drop its oldest tick, never block
                    sub.dropped += 1
                    self.metrics.dropped += 1
                sub.queue.put_nowait(tick)

    def recent_ticks(self, symbol: str) -> list[dict[str, Any]]:
        return list(self.recent.get(symbol, ()))


def group_id(prefix: str) -> str:
    """A group of its own per process: every dashboard process must see every tick (no sharing of partitions)."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class TickMessage(dict):
    """A tick's wire message and its JSON `text`, encoded once: every subscriber of the symbol sends that text."""

    __slots__ = ("text",)


def tick_message(record: dict[str, Any]) -> TickMessage:
    """The wire form of a decoded Avro tick: times as epoch ms (the deserializer gives datetimes)."""
    message = TickMessage(
        type="tick",
        symbol=record["symbol"],
        source=record["source"],
        ts=epoch_ms(record["ts"]),
        price=record["price"],
        volume_24h=record.get("volume_24h"),
        change_24h_pct=record.get("change_24h_pct"),
        published_at=None if record.get("published_at") is None else epoch_ms(record["published_at"]),
    )
    message.text = encode(message)
    return message


class LiveConsumer:
    """confluent_kafka Consumer in a daemon thread; batches of decoded ticks go to `deliver` on the loop."""

    def __init__(self, settings: Settings, group_prefix: str, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[dict[str, Any]]], None], metrics: Metrics) -> None:
        self.settings = settings
        self.group_id = group_id(group_prefix)
        self._loop = loop
        self._deliver = deliver
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webui-kafka", daemon=True)
        self.last_poll = 0.0
        self.assigned = False
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        age = time.monotonic() - self.last_poll if self.last_poll else None
        ok = self._thread.is_alive() and age is not None and age < 5 and self.assigned
        return {"ok": ok, "group_id": self.group_id, "topic": self.settings.prices_topic, "assigned": self.assigned,
                "seconds_since_poll": None if age is None else round(age, 3), "last_error": self.last_error}

    def _on_error(self, error: KafkaError) -> None:
        if str(error) != self.last_error:  # librdkafka repeats itself while a broker is down: log changes only
            log.warning("kafka consumer: %s", error)
        self.last_error = str(error)

    def _run(self) -> None:
        try:
            codec = AvroCodec(self.settings, self.settings.prices_topic, "tick")
            consumer = Consumer({
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.group_id,
                "auto.offset.reset": "latest",
                # committed now and then only so that `control status` can show this dashboard's lag
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 5000,
                "fetch.wait.max.ms": 10,
                "error_cb": self._on_error,
            })
        except Exception as exc:  # noqa: BLE001 - reported through /healthz, the app keeps serving history
            self.last_error = f"consumer did not start: {exc}"
            log.exception("kafka consumer did not start; is the stack up (`control stack up`)?")
            return

        def on_assign(_consumer: Consumer, partitions: list) -> None:
            self.assigned = bool(partitions)

        consumer.subscribe([self.settings.prices_topic], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                self.last_poll = time.monotonic()
                # Wait for one record, then take whatever else is already fetched: consume(500, timeout) would
                # hold the first record until 500 arrive or the timeout passes, adding up to that much latency.
                first = consumer.poll(0.2)
                messages = [] if first is None else [first, *consumer.consume(num_messages=499, timeout=0)]
                ticks, bad = [], 0
                for message in messages:
                    if message.error():
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            self.last_error = str(message.error())
                        continue
                    try:
                        ticks.append(tick_message(codec.decode(message.value())))
                    except Exception as exc:  # noqa: BLE001 - any bad record is counted and skipped
                        bad += 1
                        log.warning("undecodable record at %s[%d]@%d skipped: %s", message.topic(),
                                    message.partition(), message.offset(), exc)
                if ticks or bad:
                    try:
                        self._loop.call_soon_threadsafe(self._hand_over, ticks, bad)
                    except RuntimeError:  # the loop is closed: the app is shutting down
                        break
        except KafkaException as exc:
            self.last_error = str(exc)
            log.exception("kafka consumer stopped")
        finally:
            consumer.close()

    def _hand_over(self, ticks: list[dict[str, Any]], bad: int) -> None:
        self._metrics.undecodable += bad
        if ticks:
            self._deliver(ticks)
