"""Recent history held in memory: charts without a collection scan.

FerretDB answers a range query by scanning the whole collection: a month of candles for a few coins, or
48 hours of ticks, makes a chart take seconds, and a chart must answer in well under 150 ms. So the app
keeps two windows in memory, each loaded once from MongoDB and then kept by the topic the sink writes
from, as a Kafka Streams table would: the last 8 days of candles (24 h and 7 d charts) and the last
65 minutes of ticks (the 1 h chart). The sink's committed offsets, read *before* the load, mark where the
topic may be ahead of the store; reading from there on and replacing by time, exactly as the sink
replaces by `_id`, keeps a view equal to MongoDB, or a little ahead of it. Until a view is loaded, or
for a window it does not cover, the dashboard reads MongoDB directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pymongo import MongoClient

from control import topics
from cryptopulse.avro import AvroCodec, RegistryUnavailable, epoch_ms
from cryptopulse.settings import Settings, sink_group
from webui.series import CandleRow, TickRow

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MINUTE_MS = 60_000


def candle_row(doc: dict[str, Any]) -> CandleRow:
    """A stored or decoded candle as the chart needs it."""
    return CandleRow(epoch_ms(doc["start"]), doc["open"], doc["high"], doc["low"], doc["close"], doc.get("volume"))


def tick_row(doc: dict[str, Any]) -> TickRow:
    """A stored or decoded tick as the chart needs it."""
    return TickRow(epoch_ms(doc["ts"]), doc["price"], doc.get("volume_24h"))


@dataclass(frozen=True)
class ViewSpec:
    """What one view holds: which topic, sink, collection and time field, and for how long."""

    name: str
    topic: str
    schema: str
    sink_group: str
    collection: str
    time_field: str
    keep_ms: int
    row: Callable[[dict[str, Any]], CandleRow | TickRow]
    fields: tuple[str, ...]
    max_rows: int  # past this many rows the view stops answering (MongoDB does) rather than grow without bound


def candle_spec(settings: Settings) -> ViewSpec:
    return ViewSpec("candles", settings.candles_topic, "candle", sink_group(settings.candles_sink), "candles_1m",
                    "start", 8 * DAY_MS, candle_row, ("open", "high", "low", "close", "volume"), 2_000_000)


def tick_spec(settings: Settings) -> ViewSpec:
    return ViewSpec("ticks", settings.prices_topic, "tick", sink_group(settings.prices_sink), "prices", "ts",
                    65 * MINUTE_MS, tick_row, ("price", "volume_24h"), 2_000_000)


def time_of(row: CandleRow | TickRow) -> int:
    return row.start if isinstance(row, CandleRow) else row.ts


@dataclass
class WindowView:
    """{(symbol, source): {time: row}} for the last `spec.keep_ms`, loaded from MongoDB, then kept by Kafka."""

    settings: Settings
    spec: ViewSpec
    ready: threading.Event = field(default_factory=threading.Event)
    loaded: int = 0  # rows read from MongoDB at start
    followed: int = 0  # records read from the topic since
    full: bool = False  # more rows than spec.max_rows: no longer answering
    last_error: str | None = None
    _rows: dict[tuple[str, str], dict[int, CandleRow | TickRow]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"webui-view-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end; a load still waiting on MongoDB is left to finish on its own (a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive()
        return {"ok": self.ready.is_set() and alive and not self.full, "ready": self.ready.is_set(),
                "loaded": self.loaded, "followed": self.followed, "rows": self._count, "full": self.full,
                "last_error": self.last_error}

    def covers(self, start: int) -> bool:
        """Whether a window starting at `start` (epoch ms) can be answered from memory."""
        return self.ready.is_set() and not self.full and start >= time.time() * 1000 - self.spec.keep_ms

    def window(self, symbol: str, start: int, stop: int) -> tuple[str | None, list[Any]]:
        """The rows of `symbol` in [start, stop] sorted by time, from one source: the newest row's."""
        with self._lock:
            per_source = {source: [r for t, r in rows.items() if start <= t <= stop]
                          for (sym, source), rows in self._rows.items() if sym == symbol}
        per_source = {source: rows for source, rows in per_source.items() if rows}
        if not per_source:
            return None, []
        source = max(per_source, key=lambda s: max(time_of(r) for r in per_source[s]))
        return source, sorted(per_source[source], key=time_of)

    def put(self, symbol: str, source: str, row: CandleRow | TickRow) -> None:
        at = time_of(row)
        if at < time.time() * 1000 - self.spec.keep_ms:
            return
        with self._lock:
            rows = self._rows.setdefault((symbol, source), {})
            if at not in rows:
                self._count += 1
            rows[at] = row
        if self._count > self.spec.max_rows and not self.full:
            self.full = True
            log.warning("%s view: more than %d rows; charts read MongoDB instead", self.spec.name, self.spec.max_rows)

    def forget_old(self, now_ms: int) -> None:
        cutoff = now_ms - self.spec.keep_ms
        with self._lock:
            for rows in self._rows.values():
                old = [t for t in rows if t < cutoff]
                for t in old:
                    del rows[t]
                self._count -= len(old)

    # --- the thread: load, then follow ---

    def _run(self) -> None:
        consumer = None
        try:
            codec = AvroCodec(self.settings, self.spec.topic, self.spec.schema)
            consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap,
                                 "group.id": f"cryptopulse-webui-view-{id(self)}", "enable.auto.commit": False,
                                 "fetch.wait.max.ms": 100, "log_level": 0})
            consumer.assign(self._start_positions())  # first: whatever the sink has not written is read again
            self._load()
            self.ready.set()
            log.info("%s view ready: %d rows from MongoDB", self.spec.name, self.loaded)
            last_trim = time.monotonic()
            while not self._stop.is_set():
                first = consumer.poll(0.5)  # returns with the first record; then take what is already fetched
                for message in [first, *consumer.consume(1000, timeout=0)] if first is not None else []:
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            self.last_error = str(message.error())
                        continue
                    self._apply(codec, message.value())
                if time.monotonic() - last_trim > 60:
                    self.forget_old(int(time.time() * 1000))
                    last_trim = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by /healthz; history falls back to MongoDB
            self.last_error = str(exc)
            self.ready.clear()
            log.exception("%s view stopped; charts read MongoDB directly", self.spec.name)
        finally:
            if consumer is not None:
                consumer.close()

    def _start_positions(self) -> list[TopicPartition]:
        topic = self.spec.topic
        ends = topics.end_offsets_by_partition(self.settings, topic)
        if not ends:
            raise RuntimeError(f"topic {topic} does not exist; `control deploy-connectors` creates it")
        committed = topics.committed_offsets(self.settings, self.spec.sink_group, topic, list(ends))
        return [TopicPartition(topic, p, committed[p] if committed.get(p, -1) >= 0 else OFFSET_BEGINNING)
                for p in ends]

    def _load(self) -> None:
        client = MongoClient(self.settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        since = datetime.fromtimestamp((time.time() * 1000 - self.spec.keep_ms) / 1000, UTC)
        fields = dict.fromkeys(("symbol", "source", self.spec.time_field, *self.spec.fields), 1) | {"_id": 0}
        try:
            collection = client[self.settings.database][self.spec.collection]
            for doc in collection.find({self.spec.time_field: {"$gte": since}}, fields, batch_size=10_000):
                if self._stop.is_set():
                    return
                self.put(doc["symbol"], doc["source"], self.spec.row(doc))
                self.loaded += 1
        finally:
            client.close()

    def _apply(self, codec: AvroCodec, value: bytes | None) -> None:
        while value is not None and not self._stop.is_set():
            try:
                record = codec.decode(value)
                self.put(record["symbol"], record["source"], self.spec.row(record))
            except RegistryUnavailable as exc:  # the record is fine: the same one again, a little later
                self.last_error = str(exc)
                self._stop.wait(1.0)
                continue
            except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
                self.last_error = f"undecodable record skipped: {exc}"
                return
            self.followed += 1
            return
