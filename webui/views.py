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
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.outage import Backoff, librdkafka_logger
from cryptopulse.settings import Settings, sink_group
from cryptopulse.times import DAY_MS, MINUTE_MS, epoch_ms
from webui.health import Dependencies, Dependency, KafkaWatch, plain
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
    make_consumer: Callable[[dict[str, Any]], Any] = Consumer  # tests pass fakes
    make_codec: Callable[[], Any] | None = None
    _rows: dict[tuple[str, str], dict[int, CandleRow | TickRow]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to apply
    _codec: Any = None
    _bugs: set[str] = field(default_factory=set)

    def _make_codec(self) -> Any:
        return self.make_codec() if self.make_codec else AvroCodec(self.settings, self.spec.topic, self.spec.schema)

    def _make_consumer(self, config: dict[str, Any]) -> Any:
        return self.make_consumer(config)

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
        waiting = [d.name for d in self.deps.all() if d.failing(self._who)]
        return {"ok": self.ready.is_set() and alive and not self.full and not waiting, "ready": self.ready.is_set(),
                "loaded": self.loaded, "followed": self.followed, "rows": self._count, "full": self.full,
                "waiting_for": waiting, "last_error": self.last_error}

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

    # --- the thread: load, then follow; through any outage ---

    def _run(self) -> None:
        """Start (positions, then the load) until it works, then follow the topic; never ends before `stop`.

        Kafka, MongoDB or the registry away: each failing step is retried after a backoff (the dependency
        reported down once, up when the step works); while following, the consumer's position is kept,
        so the view carries on from the record after the last one it applied, even with a new consumer.
        """
        backoff = Backoff(min(1.0, self.backoff_cap), self.backoff_cap)
        while not self._stop.is_set():
            try:
                if not self.ready.is_set():
                    self._start()
                    backoff.reset()
                self._follow()
                return  # stopped
            except _Unavailable as exc:
                exc.dependency.down(self._who, exc.reason)
                self.last_error = f"{exc.dependency.name}: {plain(exc.reason)}"
            except _NotYet as exc:  # no topic yet: said once, then checked again quietly
                if str(exc) != self.last_error:
                    log.warning("%s view waits: %s", self.spec.name, exc)
                self.last_error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug or an unusable client: again, after a backoff
                self.last_error = plain(exc)
                key = f"{type(exc).__name__}: {self.last_error}"
                if key not in self._bugs:  # once per kind of failure, not once per retry; a traceback if a bug
                    self._bugs.add(key)
                    log.warning("%s view failed (%s); retrying where it stopped", self.spec.name, self.last_error,
                                exc_info=not isinstance(exc, KafkaException))
            self._stop.wait(backoff.next())

    @property
    def _who(self) -> str:
        return f"{self.spec.name} view"

    def _start(self) -> None:
        """The sink's committed offsets first (whatever it has not written is read again), then MongoDB."""
        deps = self.deps
        try:
            self._codec = self._codec or self._make_codec()
            self._positions = self._start_positions()
        except KafkaException as exc:
            raise _Unavailable(deps.kafka, exc) from exc
        deps.kafka.up(self._who)
        try:
            self.loaded = 0
            self._load()
        except PyMongoError as exc:
            raise _Unavailable(deps.mongo, exc) from exc
        deps.mongo.up(self._who)
        if self._stop.is_set():
            return
        self.ready.set()
        self.last_error = None
        log.info("%s view ready: %d rows from MongoDB", self.spec.name, self.loaded)

    def _follow(self) -> None:
        if self._stop.is_set():
            return
        self._codec = self._codec or self._make_codec()
        watch = KafkaWatch(self.deps.kafka, self._who,
                           backoff=Backoff(min(0.5, self.backoff_cap), min(10.0, self.backoff_cap)))

        def on_error(error: KafkaError) -> None:
            watch.on_error(error)
            self.last_error = plain(error)

        consumer = self._make_consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap, "group.id": f"cryptopulse-webui-view-{id(self)}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 100, "error_cb": on_error,
            "logger": librdkafka_logger("webui"),
        })
        try:
            consumer.assign([TopicPartition(self.spec.topic, p, offset) for p, offset in self._positions.items()])
            backoff = Backoff(min(0.5, self.backoff_cap), self.backoff_cap)
            last_trim = time.monotonic()
            while not self._stop.is_set():
                try:
                    first = consumer.poll(0.5)  # returns with the first record; then take what is already fetched
                    messages = [first, *consumer.consume(1000, timeout=0)] if first is not None else []
                except KafkaException as exc:
                    if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                        raise  # a new consumer, from the positions kept
                    watch.failed(exc)
                    self._stop.wait(backoff.next())
                    messages = []
                else:
                    backoff.reset()
                if any(m.error() is None for m in messages):
                    watch.alive()
                for message in messages:
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            self.last_error = plain(message.error())
                        continue
                    if not self._apply(message.value()):
                        return  # stopped while waiting for the registry
                    self._positions[message.partition()] = message.offset() + 1
                watch.check(consumer)
                if time.monotonic() - last_trim > 60:
                    self.forget_old(int(time.time() * 1000))
                    last_trim = time.monotonic()
        finally:
            consumer.close()

    def _start_positions(self) -> dict[int, int]:
        """{partition: where to start}: the sink's committed offset, or the beginning where it has none."""
        topic = self.spec.topic
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})
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
                if self._stop.is_set():
                    return
                self.put(doc["symbol"], doc["source"], self.spec.row(doc))
                self.loaded += 1
        finally:
            client.close()

    def _apply(self, value: bytes | None) -> bool:
        """Put one record; while the registry cannot be reached, the same record again after a backoff.
        False only when stopped while waiting."""
        backoff = Backoff(min(0.5, self.backoff_cap), self.backoff_cap)
        while value is not None:
            try:
                record = self._codec.decode(value)
                self.put(record["symbol"], record["source"], self.spec.row(record))
            except RegistryUnavailable as exc:  # the record is fine: the same one again, a little later
                self.deps.registry.down(self._who, exc)
                self.last_error = f"registry: {plain(exc)}"
                if self._stop.wait(backoff.next()):
                    return False
                continue
            except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
                self.last_error = f"undecodable record skipped: {plain(exc)}"
            break
        if self.deps.registry.failing(self._who):
            self.deps.registry.up(self._who)
            self.last_error = None
        self.followed += 1
        return True


class _Unavailable(Exception):
    """A step of the view's start could not reach a dependency."""

    def __init__(self, dependency: Dependency, reason: object) -> None:
        super().__init__(plain(reason))
        self.dependency = dependency
        self.reason = reason


class _NotYet(Exception):
    """The view cannot start yet for a reason that is not an outage (its topic is not created yet)."""
