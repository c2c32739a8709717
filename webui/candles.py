"""The last days of 1-minute candles, held in memory: 24 h and 7 d charts without a collection scan.

FerretDB answers a range query on `candles_1m` by scanning the whole collection (seconds once it holds a
month of candles for a few coins), and a chart must answer in well under 150 ms. So the app loads the window
once from MongoDB and then follows the candles topic, as a Kafka Streams table would: the candles sink's
committed offsets, read *before* the load, mark where the topic may be ahead of the store, and reading from
there on and replacing by `_id`, exactly as the sink does, keeps the view equal to MongoDB (or a little
ahead of it). Until the load is done the dashboard reads MongoDB directly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pymongo import MongoClient

from control import topics
from cryptopulse.avro import AvroCodec, RegistryUnavailable
from cryptopulse.settings import Settings
from webui.series import CandleRow

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


def epoch_ms(value: datetime | int) -> int:
    """A stored (datetime) or decoded time as epoch milliseconds."""
    if isinstance(value, int):
        return value
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)


def candle_row(doc: dict[str, Any]) -> CandleRow:
    """A stored or decoded candle as the chart needs it."""
    return CandleRow(epoch_ms(doc["start"]), doc["open"], doc["high"], doc["low"], doc["close"], doc.get("volume"))


@dataclass
class CandleView:
    """{(symbol, source): {start: CandleRow}} for the last `keep_ms`, loaded from MongoDB, then kept by Kafka."""

    settings: Settings
    sink_group: str = "connect-mongo-sink-candles"
    keep_ms: int = 8 * DAY_MS  # the longest range (7 d) and a day of margin
    ready: threading.Event = field(default_factory=threading.Event)
    loaded: int = 0  # candles read from MongoDB at start
    followed: int = 0  # candle records read from the topic since
    last_error: str | None = None
    _rows: dict[tuple[str, str], dict[int, CandleRow]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webui-candles", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive()
        return {"ok": self.ready.is_set() and alive, "ready": self.ready.is_set(), "loaded": self.loaded,
                "followed": self.followed, "keys": len(self._rows), "last_error": self.last_error}

    def covers(self, start: int) -> bool:
        """Whether a window starting at `start` (epoch ms) can be answered from memory."""
        return self.ready.is_set() and start >= time.time() * 1000 - self.keep_ms

    def window(self, symbol: str, start: int, stop: int) -> tuple[str | None, list[CandleRow]]:
        """The candles of `symbol` in [start, stop] sorted by time, from one source: the newest row's."""
        with self._lock:
            per_source = {source: [r for s, r in rows.items() if start <= s <= stop]
                          for (sym, source), rows in self._rows.items() if sym == symbol}
        per_source = {source: rows for source, rows in per_source.items() if rows}
        if not per_source:
            return None, []
        source = max(per_source, key=lambda s: max(r.start for r in per_source[s]))
        return source, sorted(per_source[source], key=lambda r: r.start)

    def put(self, symbol: str, source: str, candle: CandleRow) -> None:
        if candle.start < time.time() * 1000 - self.keep_ms:
            return
        with self._lock:
            self._rows.setdefault((symbol, source), {})[candle.start] = candle

    def forget_old(self, now_ms: int) -> None:
        cutoff = now_ms - self.keep_ms
        with self._lock:
            for rows in self._rows.values():
                for start in [s for s in rows if s < cutoff]:
                    del rows[start]

    # --- the thread: load, then follow ---

    def _run(self) -> None:
        consumer = None
        try:
            codec = AvroCodec(self.settings, self.settings.candles_topic, "candle")
            consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap,
                                 "group.id": f"cryptopulse-webui-candles-{id(self)}", "enable.auto.commit": False,
                                 "fetch.wait.max.ms": 100, "log_level": 0})
            consumer.assign(self._start_positions())  # first: whatever the sink has not written is read again
            self._load()
            self.ready.set()
            log.info("candle view ready: %d candles from MongoDB", self.loaded)
            last_trim = time.monotonic()
            while not self._stop.is_set():
                for message in consumer.consume(1000, timeout=0.5):
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            self.last_error = str(message.error())
                        continue
                    self._apply(codec, message.value())
                if time.monotonic() - last_trim > 600:
                    self.forget_old(int(time.time() * 1000))
                    last_trim = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by /healthz; history falls back to MongoDB
            self.last_error = str(exc)
            self.ready.clear()
            log.exception("candle view stopped; 24 h and 7 d charts read MongoDB directly")
        finally:
            if consumer is not None:
                consumer.close()

    def _start_positions(self) -> list[TopicPartition]:
        topic = self.settings.candles_topic
        ends = topics.end_offsets_by_partition(self.settings, topic)
        if not ends:
            raise RuntimeError(f"topic {topic} does not exist; `control deploy-connectors` creates it")
        committed = topics.committed_offsets(self.settings, self.sink_group, topic, list(ends))
        return [TopicPartition(topic, p, committed[p] if committed.get(p, -1) >= 0 else OFFSET_BEGINNING)
                for p in ends]

    def _load(self) -> None:
        client = MongoClient(self.settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        since = datetime.fromtimestamp((time.time() * 1000 - self.keep_ms) / 1000, UTC)
        fields = {"_id": 0, "symbol": 1, "source": 1, "start": 1, "open": 1, "high": 1, "low": 1, "close": 1,
                  "volume": 1}
        try:
            for doc in client[self.settings.database]["candles_1m"].find({"start": {"$gte": since}}, fields,
                                                                         batch_size=10_000):
                self.put(doc["symbol"], doc["source"], candle_row(doc))
                self.loaded += 1
        finally:
            client.close()

    def _apply(self, codec: AvroCodec, value: bytes | None) -> None:
        while value is not None and not self._stop.is_set():
            try:
                record = codec.decode(value)
                self.put(record["symbol"], record["source"], candle_row(record))
            except RegistryUnavailable as exc:  # the record is fine: the same one again, a little later
                self.last_error = str(exc)
                self._stop.wait(1.0)
                continue
            except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
                self.last_error = f"undecodable candle skipped: {exc}"
                return
            self.followed += 1
            return
