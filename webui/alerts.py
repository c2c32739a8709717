"""Price alerts on the dashboard: a consumer of the alerts topic pushes each new alert to every open page.

Live from Kafka, history from MongoDB, as for ticks: the last alerts are read once from `crypto_db.alerts`
when the app starts (the sink's copy), then the feed follows the alerts topic (committed records only: the
alert processor writes in transactions) and keeps the newest `RECENT` in memory. Every connection has a task
(`push_alerts`) that sends `{"type": "alert", ...}` for each new one, whatever symbol its chart shows;
`GET /alerts/recent` gives the list a page shows when it opens, each alert with what became of it on its channels
(`Deliveries`: the latest outcome per channel, from crypto_db.alert_deliveries). docs/alerts.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import DESCENDING, MongoClient

from cryptopulse import store
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import END, Follower, KafkaWatch, Reader
from cryptopulse.outage import Backoff
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.health import Dependencies, plain
from webui.live import encode, group_id

log = logging.getLogger(__name__)
RECENT = 20  # alerts a page lists
KEPT = 500  # alerts kept, so that each account still finds its own RECENT among everyone's
FIELDS = ("_id", "rule_id", "symbol", "source", "kind", "direction", "threshold", "minutes", "price", "ts",
          "reference_price", "change_pct", "message", "fired_at", "channels",
          "owner")
DELIVERIES_FRESH = 2.0  # seconds an answer of `Deliveries` serves every page
DELIVERIES_TIMEOUT = 3.0

WIRE_EXTRAS = ("text", "seq", "live")  # kept beside an alert's fields in the feed, not sent



def alert_message(record: dict[str, Any]) -> dict[str, Any]:
    """The wire form of an alert (an Avro record or a stored document): times as epoch ms, no NaN."""
    message: dict[str, Any] = {"type": "alert"}
    for name in FIELDS:
        value = record.get(name)
        if name in ("ts", "fired_at") and value is not None:
            value = epoch_ms(value)
        elif name == "channels":
            value = list(value or [])
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        message["id" if name == "_id" else name] = value
    return message


class AlertFeed(Follower[dict[str, Any]]):
    """The newest alerts, and a wake-up for every connection when one arrives (on the event loop). A `Follower`
    thread running a `Reader` of the alerts topic (committed records only): through a Kafka or a registry outage it
    waits and reads the same record again, so no alert is dropped (cryptopulse/kafka.py)."""

    def __init__(self, settings: Settings, group_prefix: str, loop: asyncio.AbstractEventLoop,
                 deps: Dependencies | None = None, *, make_consumer: Callable[[dict[str, Any]], Any] | None = None,
                 make_codec: Callable[[], Any] | None = None, backoff_cap: float = 10.0) -> None:
        self.settings = settings
        self.group_id = group_id(f"{group_prefix}-alerts")
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEPT)  # oldest first
        self.seq = 0  # alerts taken so far: each message's `seq`
        self.changed = asyncio.Event()  # replaced by a fresh one at each new alert
        self.deps = deps or Dependencies()
        self._loop = loop
        self._make_codec = make_codec or (lambda: AvroCodec(settings, settings.alerts_topic, "alert"))
        self._codec: Any = None
        who = "alert feed"
        reader = Reader(settings, "webui-alerts", [settings.alerts_topic], self._decode, group=self.group_id,
                        subscribe=True, start=END, make_consumer=make_consumer,
                        watch=KafkaWatch(self.deps.kafka.reporter(who),
                                         backoff=Backoff(min(0.5, backoff_cap), backoff_cap)),
                        registry=self.deps.registry.reporter(who),
                        config={"auto.offset.reset": "latest", "isolation.level": "read_committed"})
        super().__init__("webui-alerts", reader, self._taken, prepare=self._read_stored, backoff_cap=backoff_cap,
                         most=100, logger=log)

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

    def newest_first(self, visible: Callable[[dict[str, Any]], bool] = lambda _alert: True) -> list[dict[str, Any]]:
        """The newest RECENT alerts a page may see (`visible`: its account's, webui/auth.py), as it lists them when it
        opens, newest first (without the feed's own fields)."""
        found = []
        for message in reversed(self.recent):
            if visible(message):
                found.append({k: v for k, v in message.items() if k not in WIRE_EXTRAS})
                if len(found) == RECENT:
                    break
        return found

    def _read_stored(self) -> None:
        """The last alerts from the store (the sink's copy), once, before following the topic. The store away:
        the list starts empty, live alerts still come."""
        try:
            client: MongoClient = MongoClient(self.settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
            try:
                docs = client[self.settings.database][store.ALERTS].find().sort("ts", DESCENDING).limit(KEPT)
                stored = [alert_message(d) for d in reversed(list(docs))]
            finally:
                client.close()
            self._loop.call_soon_threadsafe(self.add, stored, False)
        except Exception as error:  # noqa: BLE001 - the list starts empty: live alerts still come
            log.warning("recent alerts not read from MongoDB (%s); showing new ones only", plain(error))

    def _decode(self, message: Any) -> dict[str, Any] | None:
        if self._codec is None:
            self._codec = self._make_codec()
        try:
            return alert_message(self._codec.decode(message.value()))
        except RegistryUnavailable:
            raise  # not the record's fault: the follower waits and reads it again
        except Exception as error:  # noqa: BLE001 - a bad record is skipped
            log.warning("alert at offset %d not shown: %s", message.offset(), plain(error))
            return None

    def _taken(self, alerts: list[dict[str, Any]]) -> None:
        try:
            self._loop.call_soon_threadsafe(self.add, alerts)
        except RuntimeError:  # the loop is closed: shutting down
            self.stopping.set()


class Deliveries:
    """What became of the newest alerts on their channels, for the page's list: per alert id, per channel, the
    latest outcome (`delivered`, `retrying`, `dead-lettered`), the receiver's status and when. One query for all
    of them, its answer shared by every page for DELIVERIES_FRESH seconds; the store away or slow: none (the list
    shows the alerts without it)."""

    def __init__(self, fresh: float = DELIVERIES_FRESH, timeout: float = DELIVERIES_TIMEOUT) -> None:
        self.fresh, self.timeout = fresh, timeout
        self._answer: tuple[float, tuple[str, ...], dict[str, dict[str, dict[str, Any]]]] | None = None
        self._lock = asyncio.Lock()

    async def of(self, db: Any, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        key = tuple(ids)
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._answer is not None and self._answer[1] == key and now - self._answer[0] < self.fresh:
                return self._answer[2]
            try:
                found = await asyncio.wait_for(self._query(db, ids), self.timeout)
            except Exception as error:  # noqa: BLE001 - the list goes out without its deliveries
                log.warning("alert deliveries not read from MongoDB (%s)", plain(error))
                found = {}
            self._answer = (now, key, found)
            return found

    @staticmethod
    async def _query(db: Any, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        latest: dict[str, dict[str, dict[str, Any]]] = {}
        cursor = db[store.ALERT_DELIVERIES].find({"alert_id": {"$in": ids}},
                                                 {"alert_id": 1, "channel": 1, "outcome": 1, "status": 1, "at": 1})
        async for doc in cursor:
            at = epoch_ms(doc["at"])
            known = latest.setdefault(doc["alert_id"], {}).get(doc["channel"])
            if known is None or at >= known["at"]:
                latest[doc["alert_id"]][doc["channel"]] = {"outcome": doc["outcome"], "status": doc.get("status"),
                                                           "at": at}
        return latest


async def push_alerts(feed: AlertFeed | None, send: Callable[[str], Awaitable[None]],
                      visible: Callable[[dict[str, Any]], bool] = lambda _alert: True) -> None:
    """One connection's task: every live alert taken from now on that it may see (its account's), as it arrives.
    Never returns by itself."""
    if feed is None:
        await asyncio.Event().wait()
    changed, last = feed.changed, feed.seq
    while True:
        await changed.wait()
        changed = feed.changed
        taken = list(feed.recent)  # what arrives while these are sent wakes this loop again
        for message in taken:
            if message["seq"] > last and message["live"] and visible(message):
                await send(message["text"])
        last = max([last, *(m["seq"] for m in taken)])
