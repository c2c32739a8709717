"""The stream processor: ticks from the prices topic rolled up into 1-minute candles on the candles topic.

Delivery guarantees, and why they hold:
- Offsets are committed by hand, and only up to the first tick of the oldest candle still open (per
  partition). Everything before that belongs to candles whose final version was delivered (the producer
  is flushed before each commit), or to ticks that were late or undecodable. So a crash loses nothing.
- A restarted processor resumes at that offset, which re-reads exactly the ticks of the candles that were
  open. Ticks there that belong to candles already final on the candles topic (closed after the commit,
  before the crash) only advance event time; the others rebuild the open candles from their first tick,
  giving the same candles again. Candles are keyed and stored by `_id`, so a repeat replaces itself.
  (This is the "committed offset minus the open window" of the design, computed exactly from offsets
  rather than by `offsets_for_times`: record timestamps are publish times, not the ticks' event times,
  and back-fills and tests publish ticks of other epochs.)
- Event time is committed too. Each commit carries, as its metadata, the event time of every (symbol, source)
  of the partition (newest tick time, end of the last closed minute); a replay starts the keys there, so a tick
  read again is late or on time exactly as it was the first time (a fresh key would take a tick that had been
  dropped as late, and open a minute one uninterrupted run never had). A partition with too many keys for the
  broker's metadata limit (about 70) commits without them, and its replay starts them afresh.
- Partitions: a symbol's ticks are on one partition (key = symbol), so each (symbol, source) is rolled up by
  one process of the group. A rebalance (a process joining, leaving or killed) revokes every partition: the
  open candles are forgotten, and each partition is replayed from its own commit by its next owner, which
  first reads the candles topic to its end, so the finals its former owner published are known as decided.
- History first: `control backfill` publishes the candles of its history (origin "ohlc" for an exchange's
  OHLC, or rolled up from a point history) before the ticks they are made of. The processor learns every
  final and every ohlc `_id` from the compacted candles topic, read from its start and followed; ticks of
  a decided minute are not rolled up again, and a tick that looks late makes it read that topic to its end
  before dropping it. Before every publish it reads the topic to its end, and a ticks candle is never
  published for an ohlc `_id`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cryptopulse import store, topics
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import Candle, candle_id
from cryptopulse.errors import ConfigError, DeliveryError, RegistryUnavailable
from cryptopulse.outage import Backoff, Outage, librdkafka_logger
from cryptopulse.settings import Settings
from cryptopulse.times import bucket_start, epoch_ms
from streams import retention
from streams.candles import CandleBook

log = logging.getLogger("streams")



class Unavailable(Exception):
    """Kafka or the registry did not answer: wait and try again; nothing was skipped or committed past."""

    def __init__(self, outage: Outage, cause: object) -> None:
        super().__init__(f"{outage.what}: {cause}")
        self.outage = outage
        self.cause = cause


# (symbol, source, event time in epoch ms, price, published_at as decoded or None): a plain tuple, the cheapest
# to make on the roll-up's path (a NamedTuple costs it twice as much)
TickRead = tuple[str, str, int, float, Any]


class Counts(Protocol):
    undecodable: int


def read_tick(codec: AvroCodec, message: Message, registry: Outage, stats: Counts) -> TickRead | None:
    """The tick a prices record holds, for the roll-up and the alert processor alike; None for a record that is
    not one (counted in `stats.undecodable`, logged the first time and every 1000th). While the registry is away,
    Unavailable: not the record's fault, so the caller waits before it and reads it again."""
    try:
        tick = codec.decode(message.value())
        read = (tick["symbol"], tick["source"], epoch_ms(tick["ts"]), float(tick["price"]), tick.get("published_at"))
    except RegistryUnavailable as error:
        raise Unavailable(registry, f"{error}; waiting before {message.topic()}[{message.partition()}]@"
                          f"{message.offset()}, which is read again") from error
    except Exception as error:  # noqa: BLE001 - undecodable records are counted and skipped
        stats.undecodable += 1
        if stats.undecodable == 1 or stats.undecodable % 1000 == 0:
            log.warning("undecodable record at offset %d skipped (%d so far): %s", message.offset(),
                        stats.undecodable, error)
        return None
    registry.up()
    return read


def rewind(consumer: Consumer, messages: list[Message]) -> None:
    """Seek back to the first of `messages` per partition, so they are read again after an outage."""
    first: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            key = (message.topic(), message.partition())
            first[key] = min(first.get(key, message.offset()), message.offset())
    for (topic, partition), offset in first.items():
        consumer.seek(TopicPartition(topic, partition, offset))


@dataclass
class ProcessorOptions:
    group: str = field(default_factory=lambda: Settings().streams_group)
    grace_ms: int = 10_000
    update_every: float = 1.0
    idle_close: float = 30.0
    from_end: bool = False  # a group without committed offsets starts at the end instead of the beginning
    commit_every: float = 1.0
    retention_every: float | None = 600.0  # None: no retention job
    retention_policy: retention.RetentionPolicy = field(default_factory=retention.RetentionPolicy)
    batch: int = 1000
    only_symbols: frozenset[str] | None = None  # roll up only these (tests; a second processor beside the main one)
    close_on_stop: bool = False  # publish every open minute as final when stopping (bounded runs, tests)


@dataclass
class ProcessorStats:
    consumed: int = 0
    undecodable: int = 0
    skipped_decided: int = 0  # ticks of candles already final or ohlc on the topic
    published: int = 0
    suppressed_ohlc: int = 0
    delivery_failed: int = 0
    commits: int = 0


# the commit metadata's size: under the broker's default offset.metadata.max.bytes (4096), which fails the commit
METADATA_LIMIT = 3_800


def _read_event_times(tp: TopicPartition) -> dict[tuple[str, str], tuple[int, int]]:
    """The event times a commit recorded (Processor._event_times); {} for a commit without them or unreadable ones."""
    try:
        return {(symbol, source): (int(max_ts), int(closed_until))
                for symbol, source, max_ts, closed_until in json.loads(tp.metadata or "[]")}
    except (TypeError, ValueError) as error:
        log.warning("commit metadata of %s[%d] not understood (%s); its keys start afresh", tp.topic, tp.partition,
                    error)
        return {}


def close_within(consumers: list[Consumer], seconds: float) -> bool:
    """Close the consumers, waiting at most `seconds`.

    librdkafka's close (leave the group, destroy) can block for good when the group coordinator misbehaves
    (confluent-kafka-python#1667). A stop that has committed already loses nothing by not waiting longer.
    """
    done = threading.Event()

    def close() -> None:
        for consumer in consumers:
            consumer.close()
        done.set()

    threading.Thread(target=close, daemon=True, name="close-consumers").start()
    return done.wait(seconds)


class Processor:
    """One consumer of the prices topic, one producer of candles, one follower of the candles topic."""

    def __init__(self, settings: Settings, options: ProcessorOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ProcessorOptions()
        self.stats = ProcessorStats()
        self.book = CandleBook(self.options.grace_ms, self.options.update_every, self.options.idle_close)
        self.ohlc_ids: set[str] = set()
        self.final_ids: set[str] = set()
        self.ready = threading.Event()
        self.closed = False  # run() ended and its Kafka consumers closed
        self._ticks = AvroCodec(settings, settings.prices_topic, "tick")
        self._candles = AvroCodec(settings, settings.candles_topic, "candle")
        self._next: dict[int, int] = {}  # partition -> next offset to read on the prices topic
        self._caught_up = False  # read the candles topic to its end during this batch already
        self._assigned = False  # partitions were just assigned: read the candles topic to its end before their ticks
        self._metadata_warned = False
        self.kafka = Outage("Kafka", log)
        self.registry = Outage("the schema registry", log)
        # librdkafka's own lines go through a rate-limited logger; a lost broker is reported by `kafka` once
        quiet = {"logger": librdkafka_logger("streams"), "error_cb": self._on_kafka_error}
        self._producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 20, "compression.type": "lz4", "client.id": "cryptopulse-streams",
            "message.timeout.ms": 0,  # a candle waits for the broker however long it is away: never dropped
            **quiet,
        })
        self._reader = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{self.options.group}-candles-reader",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,  # catch_up() reads our own latest candles back before each publish: keep it short
            **quiet,
        })
        self._consumer = Consumer({
            **quiet,
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": self.options.group,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "latest" if self.options.from_end else "earliest",
            "client.id": "cryptopulse-streams",
            # a restarted processor gets the partition back ~10 s after a crash, not after the default 45 s
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 3_000,
        })

    # --- the candles topic: what is decided already ---

    def _on_kafka_error(self, error: KafkaError) -> None:
        # librdkafka also says "0/2 brokers are down" right after a reconnect: not an outage
        if error.code() == KafkaError._ALL_BROKERS_DOWN and not error.str().startswith("0/"):
            self.kafka.down(error.str())

    def _start_reader(self) -> None:
        try:
            found = self._reader.list_topics(self.settings.candles_topic, timeout=10).topics
        except KafkaException as error:
            raise Unavailable(self.kafka, error.args[0].str()) from error
        metadata = found[self.settings.candles_topic]
        if metadata.error is not None and metadata.error.retriable():
            raise Unavailable(self.kafka, metadata.error.str())
        if metadata.error is not None:
            raise ConfigError(f"topic {self.settings.candles_topic}: {metadata.error}; "
                               "create it with `control topics create` or `control deploy-connectors`")
        self._reader.assign([TopicPartition(self.settings.candles_topic, p, 0) for p in metadata.partitions])
        self.catch_up()

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read the candles topic up to its current end: learn every final and every ohlc `_id`."""
        try:
            topics.consume_to_end(self._reader, self._learn_all, timeout)
        except KafkaException as error:
            raise Unavailable(self.kafka, error.args[0].str()) from error
        except TimeoutError as error:
            raise Unavailable(self.kafka, str(error)) from error

    def _learn_all(self, messages: list[Message]) -> None:
        for i, message in enumerate(messages):
            if message.error() is None and message.value() is not None:
                try:
                    self._learn(message)
                except RegistryUnavailable as error:
                    rewind(self._reader, messages[i:])
                    raise Unavailable(self.registry, error) from error

    def _learn(self, message: Message) -> None:
        try:
            record = self._candles.decode(message.value())
        except RegistryUnavailable:
            raise  # an unread ohlc candle could be overwritten: better wait than guess
        except Exception:  # noqa: BLE001 - a bad record on the candles topic decides nothing
            return
        if record.get("origin") == "ohlc":
            self.ohlc_ids.add(record["_id"])
        if record.get("final", True):
            self.final_ids.add(record["_id"])

    # --- the prices topic ---

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Position every partition explicitly, so `ready` means "every tick published from now on is read"."""
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                tp.offset = high if self.options.from_end else low
            self._next[tp.partition] = tp.offset
            self.book.restore(_read_event_times(tp))
        consumer.assign(committed)
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in committed))
        self._assigned = True
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away (a rebalance, or our session expired while Kafka was away): commit what we
        can, then forget the open candles, exactly as a restart would; the next assignment replays them."""
        try:
            self.commit(flush_timeout=5)
        except (Unavailable, KafkaException, DeliveryError) as error:
            log.info("no commit on revocation (%s); the next owner replays a little more", error)
        self.book = CandleBook(self.options.grace_ms, self.options.update_every, self.options.idle_close)
        self._next.clear()
        consumer.unassign()

    def _apply(self, message: Message, now: float) -> None:
        tick = read_tick(self._ticks, message, self.registry, self.stats)
        self._next[message.partition()] = message.offset() + 1
        self.stats.consumed += 1
        if tick is None:
            return
        symbol, source, ts, price, _ = tick
        if self.options.only_symbols is not None and symbol not in self.options.only_symbols:
            return
        cid = candle_id(symbol, source, bucket_start(ts))
        if (not self._caught_up and cid not in self.final_ids and cid not in self.ohlc_ids
                and self.book.is_late(symbol, source, ts)):
            # a back-fill delivers its candles before their ticks: read the topic to its end before dropping
            self.catch_up()
            self._caught_up = True
        if cid in self.final_ids or cid in self.ohlc_ids:
            self.stats.skipped_decided += 1
            self.book.observe(symbol, source, ts, now, (message.partition(), message.offset()))
            return
        self.book.add(symbol, source, ts, price, now, (message.partition(), message.offset()))

    def _publish(self, candles: list[Candle]) -> None:
        if not candles:
            return
        self._reader_poll()
        self.catch_up()
        for candle in candles:
            if candle.id in self.ohlc_ids:
                self.stats.suppressed_ohlc += 1
                continue
            if candle.final:
                self.final_ids.add(candle.id)
            self._produce(candle)

    def _produce(self, candle: Candle) -> None:
        try:
            value = self._candles.encode(candle.to_record())
        except RegistryUnavailable as error:  # only before the schema is known; the candle is made again
            raise Unavailable(self.registry, error) from error
        while True:
            try:
                self._producer.produce(self.settings.candles_topic, key=candle.id.encode(), value=value,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self.stats.published += 1
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.delivery_failed += 1
            log.error("candle delivery failed: %s", error)

    def _reader_poll(self) -> None:
        self._learn_all(self._reader.consume(1000, timeout=0))

    def commit(self, flush_timeout: float = 5.0) -> None:
        """Deliver every queued candle, then commit up to the first tick of the oldest open candle.

        Kafka away (candles still queued, no coordinator, a failed commit): `Unavailable`, try again later.
        A candle whose delivery failed for good is worth stopping for: DeliveryError.
        """
        if not self._next:
            return
        if self.stats.delivery_failed:
            raise DeliveryError(f"{self.stats.delivery_failed} candles could not be delivered; not committing")
        left = self._producer.flush(flush_timeout)
        if left:
            raise Unavailable(self.kafka, f"{left} candles still waiting for the broker; not committing yet")
        replay = self.book.replay_from()
        offsets = [TopicPartition(self.settings.prices_topic, p, min(replay.get(p, nxt), nxt),
                                  metadata=self._event_times(p))
                   for p, nxt in self._next.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            if error.args[0].fatal():
                raise
            raise Unavailable(self.kafka, f"commit failed: {error.args[0].str()}") from error
        self.kafka.up()
        self.stats.commits += 1

    def _event_times(self, partition: int) -> str:
        """The commit's metadata: the event time of each key of the partition (CandleBook.event_times), so that a
        replay from the commit decides late ticks as they were decided. Empty (a replay starts the keys afresh, as
        before) when it would not fit the broker's limit (offset.metadata.max.bytes, 4096 by default)."""
        text = json.dumps([[*key, *times] for key, times in self.book.event_times(partition).items()],
                          separators=(",", ":"))
        if len(text) <= METADATA_LIMIT:
            return text
        if not self._metadata_warned:
            self._metadata_warned = True
            log.warning("partition %d holds too many symbols to commit their event times (%d bytes); a replay starts "
                        "them afresh", partition, len(text))
        return ""

    # --- the loop ---

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Roll up until `stop()`. Kafka or the registry going away never ends it: it waits, says so once,
        and goes on from where it was (nothing is skipped, nothing committed past what was published)."""
        backoff = Backoff(0.5, 10.0)
        subscribed = False
        self._last_commit = self._last_summary = time.monotonic()
        self._last_retention = float("-inf")
        self._retention_thread: threading.Thread | None = None
        try:
            while not stop():
                try:
                    if not subscribed:
                        self._start_reader()
                        self._consumer.subscribe([self.settings.prices_topic], on_assign=self._on_assign,
                                                 on_revoke=self._on_revoke)
                        subscribed = True
                    self._step()
                    backoff.reset()
                except Unavailable as error:
                    error.outage.down(error.cause)
                    deadline = time.monotonic() + backoff.next()
                    while time.monotonic() < deadline and not stop():
                        self._producer.poll(0.1)  # deliveries (and librdkafka's reconnects) go on meanwhile
        finally:
            if self.options.close_on_stop:
                self._publish(self.book.close_all())
            self._final_commit()
            self.closed = close_within([self._consumer, self._reader], 20.0)
            if not self.closed:
                log.warning("the Kafka consumers did not close within 20 s (everything was committed already)")

    def _step(self) -> None:
        now = time.monotonic()
        self._reader_poll()  # learn new ohlc ids early (publishing re-checks against the topic's end)
        self._caught_up = False
        messages = self._consumer.consume(self.options.batch, timeout=0.2)
        for i, message in enumerate(messages):
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    self.kafka.down(message.error().str())
                continue
            try:
                if self._assigned:
                    # a partition taken over from another process of the group (one killed, say) replays from its
                    # commit, which another symbol's older open candle may have held back: a candle that process
                    # closed must be known as final before its ticks are read again, else it would be rolled up
                    # anew from only the ticks after that commit
                    self.catch_up()
                    self._assigned = False
                self._apply(message, now)
            except Unavailable:
                rewind(self._consumer, messages[i:])
                raise
        self._publish(self.book.poll(time.monotonic()))
        if now - self._last_commit >= self.options.commit_every:
            self._last_commit = now
            self.commit()
        every = self.options.retention_every
        if every is not None and now - self._last_retention >= every and not (
                self._retention_thread and self._retention_thread.is_alive()):
            self._retention_thread = threading.Thread(target=self._retention, daemon=True, name="retention")
            self._retention_thread.start()
            self._last_retention = now
        if now - self._last_summary >= 30:
            log.info("%s; %s", self.stats, self.book.stats)
            self._last_summary = now

    def _final_commit(self) -> None:
        """The commit of a stop: a stop during an outage keeps the last good commit (a restart replays from it)."""
        try:
            self.commit(flush_timeout=30)
        except Unavailable as error:
            log.warning("stopping without a final commit (%s); the restart replays from the last one", error)

    def _retention(self) -> None:
        try:
            with store.database(self.settings) as db:
                retention.run_once(db, self.options.retention_policy)
        except Exception as error:  # noqa: BLE001 - retention retries at its next run
            log.warning("retention failed: %s", error)
