"""Price alerts on the dashboard: a consumer of the alerts topic pushes each new alert to every open page.

Live from Kafka, history from MongoDB, as for ticks: the last alerts are read once from `crypto_db.alerts`
when the app starts (the sink's copy), then the feed follows the alerts topic (committed records only: the
alert processor writes in transactions) and keeps the newest `RECENT` in memory. Every connection has a task
(`push_alerts`) that sends `{"type": "alert", ...}` for each new one, whatever symbol its chart shows;
`GET /alerts/recent` gives the list a page shows when it opens. docs/alerts.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError
from pymongo import DESCENDING, MongoClient

from cryptopulse import store
from cryptopulse.avro import AvroCodec
from cryptopulse.outage import Backoff, librdkafka_logger
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.health import plain
from webui.live import encode, group_id

log = logging.getLogger(__name__)
RECENT = 20
FIELDS = ("_id", "rule_id", "symbol", "source", "kind", "direction", "threshold", "minutes", "price", "ts",
          "reference_price", "change_pct", "message", "fired_at")

WIRE_EXTRAS = ("text", "seq", "live")  # kept beside an alert's fields in the feed, not sent



def alert_message(record: dict[str, Any]) -> dict[str, Any]:
    """The wire form of an alert (an Avro record or a stored document): times as epoch ms, no NaN."""
    message: dict[str, Any] = {"type": "alert"}
    for name in FIELDS:
        value = record.get(name)
        if name in ("ts", "fired_at") and value is not None:
            value = epoch_ms(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        message["id" if name == "_id" else name] = value
    return message


class AlertFeed:
    """The newest alerts, and a wake-up for every connection when one arrives (on the event loop)."""

    def __init__(self, settings: Settings, group_prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.group_id = group_id(f"{group_prefix}-alerts")
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)  # oldest first
        self.seq = 0  # alerts taken so far: each message's `seq`
        self.changed = asyncio.Event()  # replaced by a fresh one at each new alert
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webui-alerts", daemon=True)
        self.last_error: str | None = None
        self.assigned = False  # the alerts topic's partitions are assigned: every alert committed from now on comes

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def add(self, messages: list[dict[str, Any]], live: bool = True) -> None:
        """On the loop: new alerts (a redelivered one, recognised by its id, is not taken again). Only `live` ones
        (from the topic, not the store's history read at start) are pushed to the open sockets."""
        known = {m["id"] for m in self.recent}
        fresh = [m for m in messages if m["id"] not in known]
        if not fresh:
            return
        for message in fresh:
            self.seq += 1
            message["text"] = encode(message)
            message["seq"], message["live"] = self.seq, live
        self.recent.extend(fresh)
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def newest_first(self) -> list[dict[str, Any]]:
        """The newest alerts as a page lists them when it opens, newest first (without the feed's own fields)."""
        return [{k: v for k, v in m.items() if k not in WIRE_EXTRAS} for m in reversed(self.recent)]

    def _stored(self) -> list[dict[str, Any]]:
        client: MongoClient = MongoClient(self.settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        try:
            docs = client[self.settings.database][store.ALERTS].find().sort("ts", DESCENDING).limit(RECENT)
            return [alert_message(d) for d in reversed(list(docs))]
        finally:
            client.close()

    def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        try:
            stored = self._stored()
            self._loop.call_soon_threadsafe(self.add, stored, False)
        except Exception as error:  # noqa: BLE001 - the list starts empty: live alerts still come
            log.warning("recent alerts not read from MongoDB (%s); showing new ones only", plain(error))
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception as error:  # noqa: BLE001 - never fatal: a new consumer after a backoff
                self.last_error = plain(error)
                log.warning("alerts consumer failed (%s); a new one starts", self.last_error)
                self._stop.wait(backoff.next())

    def _follow(self) -> None:
        codec = AvroCodec(self.settings, self.settings.alerts_topic, "alert")
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": self.group_id,
                             "auto.offset.reset": "latest", "enable.auto.commit": False,
                             "isolation.level": "read_committed", "logger": librdkafka_logger("webui-alerts"),
                             "error_cb": lambda error: setattr(self, "last_error", plain(error))})
        try:
            consumer.subscribe([self.settings.alerts_topic],
                               on_assign=lambda _c, parts: setattr(self, "assigned", bool(parts)),
                               on_revoke=lambda _c, _parts: setattr(self, "assigned", False))
            while not self._stop.is_set():
                messages = consumer.consume(100, timeout=0.5)
                alerts = []
                for message in messages:
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            self.last_error = plain(message.error())
                        continue
                    try:
                        alerts.append(alert_message(codec.decode(message.value())))
                    except Exception as error:  # noqa: BLE001 - a bad record is skipped (the registry: retried)
                        log.warning("alert at offset %d not shown: %s", message.offset(), plain(error))
                if alerts:
                    try:
                        self._loop.call_soon_threadsafe(self.add, alerts)
                    except RuntimeError:  # the loop is closed: shutting down
                        return
        finally:
            self.assigned = False
            consumer.close()


async def push_alerts(feed: AlertFeed | None, send: Callable[[str], Awaitable[None]]) -> None:
    """One connection's task: every live alert taken from now on, as it arrives. Never returns by itself."""
    if feed is None:
        await asyncio.Event().wait()
    changed, last = feed.changed, feed.seq
    while True:
        await changed.wait()
        changed = feed.changed
        taken = list(feed.recent)  # what arrives while these are sent wakes this loop again
        for message in taken:
            if message["seq"] > last and message["live"]:
                await send(message["text"])
        last = max([last, *(m["seq"] for m in taken)])
