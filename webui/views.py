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

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cryptopulse import kafka
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import Follower, KafkaWatch, Reader, Unavailable
from cryptopulse.outage import Backoff
from cryptopulse.settings import Settings, sink_group
from cryptopulse.times import DAY_MS, MINUTE_MS, epoch_ms
from webui.health import Dependencies, plain
from webui.series import CandleRow, TickRow, sound_candle, sound_tick

log = logging.getLogger(__name__)



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
    step_ms: int | None = None  # rows are this far apart (candles: a minute): a window is read by probing its times


def candle_spec(settings: Settings) -> ViewSpec:
    return ViewSpec("candles", settings.candles_topic, "candle", sink_group(settings.candles_sink), "candles_1m",
                    "start", 8 * DAY_MS, candle_row, ("open", "high", "low", "close", "volume"), 2_000_000, MINUTE_MS)


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
    aligned: bool = True  # every row's time is a multiple of spec.step_ms (a foreign candle may not be)
    last_error: str | None = None
    deps: Dependencies = field(default_factory=Dependencies)  # the app's, to report outages to
    backoff_cap: float = 30.0
    make_consumer: Callable[[dict[str, Any]], Any] | None = None  # tests pass fakes
    make_codec: Callable[[], Any] | None = None
    _rows: dict[tuple[str, str], dict[int, CandleRow | TickRow]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _codec: Any = None
    _last_trim: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        who = self._who
        cap = self.backoff_cap
        self.watch = KafkaWatch(self.deps.kafka.reporter(who), backoff=Backoff(min(0.5, cap), min(10.0, cap)))
        self.reader: Reader[tuple[str, str, Any]] = Reader(
            self.settings, "webui", [self.spec.topic], self._decode, group=f"cryptopulse-webui-view-{id(self)}",
            start={}, watch=self.watch, registry=self.deps.registry.reporter(who), make_consumer=self.make_consumer,
            config={"fetch.wait.max.ms": 100})
        self._follower = Follower(f"webui-view-{self.spec.name}", self.reader, self._apply_all, prepare=self._start,
                                  turn=self._turn, backoff_cap=cap, logger=log)

    def start(self) -> None:
        self._follower.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end; a load still waiting on MongoDB is left to finish on its own (a daemon)."""
        self._follower.stop(timeout)

    def status(self) -> dict[str, Any]:
        alive = self._follower.alive
        waiting = [d.name for d in self.deps.all() if d.failing(self._who)]
        return {"ok": self.ready.is_set() and alive and not self.full and not waiting, "ready": self.ready.is_set(),
                "loaded": self.loaded, "followed": self.followed, "rows": self._count, "full": self.full,
                "waiting_for": waiting, "last_error": self.last_error or self._follower.failure}

    def covers(self, start: int) -> bool:
        """Whether a window starting at `start` (epoch ms) can be answered from memory."""
        return self.ready.is_set() and not self.full and start >= time.time() * 1000 - self.spec.keep_ms

    def window(self, symbol: str, start: int, stop: int) -> tuple[str | None, list[Any]]:
        """The rows of `symbol` in [start, stop] sorted by time, from one source: the newest row's."""
        step = self.spec.step_ms
        with self._lock:
            if step and self.aligned:  # a day of an 8-day view: its 1,440 times probed, not 11,520 rows scanned
                first = -(-start // step) * step
                per_source = {source: [r for t in range(first, stop + 1, step) if (r := rows.get(t)) is not None]
                              for (sym, source), rows in self._rows.items() if sym == symbol}
            else:
                per_source = {source: [r for t, r in rows.items() if start <= t <= stop]
                              for (sym, source), rows in self._rows.items() if sym == symbol}
        per_source = {source: rows for source, rows in per_source.items() if rows}
        if not per_source:
            return None, []
        source = max(per_source, key=lambda s: max(time_of(r) for r in per_source[s]))
        return source, sorted(per_source[source], key=time_of)

    def put(self, symbol: str, source: str, row: CandleRow | TickRow) -> None:
        sound = sound_candle(row) if isinstance(row, CandleRow) else sound_tick(row)
        if sound is None:
            return  # a NaN or an infinity (a foreign producer's record) is never charted
        row = sound
        at = time_of(row)
        if at < time.time() * 1000 - self.spec.keep_ms:
            return
        if self.spec.step_ms and at % self.spec.step_ms:
            self.aligned = False  # windows are scanned from now on
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

    # --- the follower's thread: load, then follow; through any outage (cryptopulse.kafka.Follower) ---

    @property
    def _who(self) -> str:
        return f"{self.spec.name} view"

    def _start(self) -> None:
        """The sink's committed offsets first (whatever it has not written is read again), then MongoDB. Kafka or
        MongoDB away: Unavailable (the follower says so once and tries again after a backoff); no topic yet:
        said once, then checked again quietly."""
        deps = self.deps
        try:
            self._codec = self._codec or self._make_codec()
            positions = self._start_positions()
        except KafkaException as exc:
            raise Unavailable(deps.kafka.reporter(self._who), plain(exc)) from exc
        except _NotYet as exc:
            if str(exc) != self.last_error:
                log.warning("%s view waits: %s", self.spec.name, exc)
            self.last_error = str(exc)
            raise
        deps.kafka.up(self._who)
        try:
            self.loaded = 0
            self._load()
        except PyMongoError as exc:
            raise Unavailable(deps.mongo.reporter(self._who), plain(exc)) from exc
        deps.mongo.up(self._who)
        self.reader.start = {(self.spec.topic, p): offset for p, offset in positions.items()}
        if self._follower.stopping.is_set():
            return
        self.ready.set()
        self.last_error = None
        log.info("%s view ready: %d rows from MongoDB", self.spec.name, self.loaded)

    def _make_codec(self) -> Any:
        return self.make_codec() if self.make_codec else AvroCodec(self.settings, self.spec.topic, self.spec.schema)

    def _turn(self) -> None:
        if time.monotonic() - self._last_trim > 60:
            self.forget_old(int(time.time() * 1000))
            self._last_trim = time.monotonic()

    def _start_positions(self) -> dict[int, int]:
        """{partition: where to start}: the sink's committed offset, or the beginning where it has none."""
        topic = self.spec.topic
        admin = kafka.admin(self.settings)
        metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise _NotYet(f"topic {topic} does not exist; `control deploy-connectors` creates it")
        request = [ConsumerGroupTopicPartitions(self.spec.sink_group,
                                                [TopicPartition(topic, p) for p in metadata.partitions])]
        (future,) = admin.list_consumer_group_offsets(request).values()
        try:
            committed = {tp.partition: tp.offset for tp in future.result(timeout=30).topic_partitions}
        except concurrent.futures.TimeoutError as exc:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no answer about the sink's offsets")) from exc
        return {p: committed[p] if committed.get(p, -1) >= 0 else OFFSET_BEGINNING for p in metadata.partitions}

    def _load(self) -> None:
        client = MongoClient(self.settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        since = datetime.fromtimestamp((time.time() * 1000 - self.spec.keep_ms) / 1000, UTC)
        fields = dict.fromkeys(("symbol", "source", self.spec.time_field, *self.spec.fields), 1) | {"_id": 0}
        try:
            collection = client[self.settings.database][self.spec.collection]
            for doc in collection.find({self.spec.time_field: {"$gte": since}}, fields, batch_size=10_000):
                if self._follower.stopping.is_set():
                    return
                self.put(doc["symbol"], doc["source"], self.spec.row(doc))
                self.loaded += 1
        finally:
            client.close()

    def _decode(self, message: Any) -> tuple[str, str, Any] | None:
        """(symbol, source, row) of a record; None for a tombstone or a record the sink would send to its DLQ
        (skipped); RegistryUnavailable passes (the same record again, a little later)."""
        value = message.value()
        if value is None:
            return None
        try:
            record = self._codec.decode(value)
            return record["symbol"], record["source"], self.spec.row(record)
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
            self.last_error = f"undecodable record skipped: {plain(exc)}"
            return None

    def _apply_all(self, rows: list[tuple[str, str, Any]]) -> None:
        for symbol, source, row in rows:
            self.put(symbol, source, row)
        self.followed += len(rows)
        if self.last_error and self.last_error.startswith("registry"):
            self.last_error = None


class _NotYet(Exception):
    """The view cannot start yet for a reason that is not an outage (its topic is not created yet)."""
