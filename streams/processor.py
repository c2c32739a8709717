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
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from cryptopulse import kafka, store
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import Candle, candle_id
from cryptopulse.errors import DeliveryError, RegistryUnavailable
from cryptopulse.kafka import Reader, Unavailable
from cryptopulse.settings import Settings
from cryptopulse.tick import tick_read
from cryptopulse.times import bucket_start
from streams import retention
from streams.candles import CandleBook

log = logging.getLogger("streams")

# a tick with its Kafka position: TickRead + (partition, offset)
PlacedTick = tuple[str, str, int, float, Any, int, int]


def placed_tick(record: dict[str, Any], message: Message) -> PlacedTick:
    return (*tick_read(record), message.partition(), message.offset())


@dataclass
class ProcessorOptions:
    group: str = ""  # "": the settings' group
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


class Processor(kafka.Processor):
    """The roll-up: a reader of the prices topic (a member of the group), a producer of candles, a reader of the
    candles topic (what is decided already), over a `CandleBook`."""

    name = "roll-up"

    def __init__(self, settings: Settings, options: ProcessorOptions | None = None) -> None:
        super().__init__(log)
        self.settings = settings
        self.options = options or ProcessorOptions()
        self.options.group = self.options.group or settings.streams_group
        self.commit_every = self.options.commit_every
        self.stats = ProcessorStats()
        self.book = self._new_book()
        self.ohlc_ids: set[str] = set()
        self.final_ids: set[str] = set()
        self._ticks = AvroCodec(settings, settings.prices_topic, "tick")
        self._candles = AvroCodec(settings, settings.candles_topic, "candle")
        self._caught_up = False  # read the candles topic to its end during this batch already
        self._assigned = False  # partitions were just assigned: read the candles topic to its end before their ticks
        self._metadata_warned = False
        self._last_retention = float("-inf")
        self._retention_thread: threading.Thread | None = None
        self._producer = kafka.producer(settings, "streams", watch=self.watch)
        self.decided = Reader(settings, "streams-candles", [settings.candles_topic], self._learn_decode,
                              group=f"{self.options.group}-candles-reader", watch=self.watch, registry=self.registry,
                              # catch_up() reads our own latest candles back before each publish: keep it short
                              config={"fetch.wait.max.ms": 10})
        self.prices = Reader(settings, "streams", [settings.prices_topic],
                             kafka.decoder(self._decode_tick, self.stats, "undecodable tick", log, placed_tick),
                             group=self.options.group, subscribe=True, watch=self.watch, registry=self.registry,
                             config={**kafka.GROUP_MEMBER,
                                     "auto.offset.reset": "latest" if self.options.from_end else "earliest"},
                             on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _new_book(self) -> CandleBook:
        return CandleBook(self.options.grace_ms, self.options.update_every, self.options.idle_close)

    def _decode_tick(self, value: bytes) -> dict[str, Any]:
        return self._ticks.decode(value)

    def summary(self) -> str:
        return f"{self.stats}; {self.book.stats}"

    # --- the candles topic: what is decided already ---

    def start(self) -> None:
        with self.talking_to_kafka():
            self.decided.open()
            self.catch_up()
            self.prices.open()

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read the candles topic up to its current end: learn every final and every ohlc `_id`."""
        with self.talking_to_kafka():
            self.decided.catch_up(self._learn_all, timeout)

    def _learn_decode(self, message: Message) -> dict[str, Any] | None:
        try:
            return self._candles.decode(message.value()) if message.value() is not None else None
        except RegistryUnavailable:
            raise  # an unread ohlc candle could be overwritten: better wait than guess
        except Exception:  # noqa: BLE001 - a bad record on the candles topic decides nothing
            return None

    def _learn_all(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if record.get("origin") == "ohlc":
                self.ohlc_ids.add(record["_id"])
            if record.get("final", True):
                self.final_ids.add(record["_id"])

    # --- the prices topic ---

    def _on_assign(self, reader: Reader, partitions: list[TopicPartition]) -> None:
        """Position every partition explicitly, so `ready` means "every tick published from now on is read"."""
        committed = kafka.committed_or(reader.client, partitions, self.options.from_end)
        for tp, given in zip(committed, partitions, strict=True):
            given.offset = tp.offset
            self.book.restore(_read_event_times(tp))
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in committed))
        self._assigned = True
        self.ready.set()

    def _on_revoke(self, reader: Reader, partitions: list[TopicPartition]) -> None:
        """Partitions taken away (a rebalance, or our session expired while Kafka was away): commit what we
        can, then forget the open candles, exactly as a restart would; the next assignment replays them."""
        try:
            self.commit(flush_timeout=5)
        except (Unavailable, KafkaException, DeliveryError) as error:
            log.info("no commit on revocation (%s); the next owner replays a little more", error)
        self.book = self._new_book()
        reader.forget(partitions)

    def _roll(self, ticks: list[PlacedTick]) -> None:
        now = time.monotonic()
        for i, tick in enumerate(ticks):
            try:
                if self._assigned:
                    # a partition taken over from another process of the group (one killed, say) replays from its
                    # commit, which another symbol's older open candle may have held back: a candle that process
                    # closed must be known as final before its ticks are read again, else it would be rolled up
                    # anew from only the ticks after that commit
                    self.catch_up()
                    self._assigned = False
                self._apply(tick, now)
            except Unavailable:
                first: dict[tuple[str, int], int] = {}
                for *_, partition, offset in ticks[i:]:
                    key = (self.settings.prices_topic, partition)
                    first[key] = min(first.get(key, offset), offset)
                self.prices.seek(first)
                raise

    def _apply(self, tick: PlacedTick, now: float) -> None:
        symbol, source, ts, price, _, partition, offset = tick
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
            self.book.observe(symbol, source, ts, now, (partition, offset))
            return
        self.book.add(symbol, source, ts, price, now, (partition, offset))

    def _publish(self, candles: list[Candle]) -> None:
        if not candles:
            return
        with self.talking_to_kafka():
            self.decided.pump(self._learn_all, timeout=0)
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

    def commit(self, flush_timeout: float = 5.0) -> None:
        """Deliver every queued candle, then commit up to the first tick of the oldest open candle.

        Kafka away (candles still queued, no coordinator, a failed commit): `Unavailable`, try again later.
        A candle whose delivery failed for good is worth stopping for: DeliveryError.
        """
        topic = self.settings.prices_topic
        positions = {p: offset for (t, p), offset in self.prices.positions.items() if t == topic}
        if not positions:
            return
        if self.stats.delivery_failed:
            raise DeliveryError(f"{self.stats.delivery_failed} candles could not be delivered; not committing")
        left = self._producer.flush(flush_timeout)
        if left:
            raise Unavailable(self.kafka, f"{left} candles still waiting for the broker; not committing yet")
        replay = self.book.replay_from()
        offsets = [TopicPartition(topic, p, min(replay.get(p, nxt), nxt), metadata=self._event_times(p))
                   for p, nxt in positions.items()]
        with self.talking_to_kafka("commit failed: "):
            self.prices.client.commit(offsets=offsets, asynchronous=False)
        self.watch.alive()
        self.stats.commits += 1

    def final_commit(self) -> None:
        """The commit of a stop: a stop during an outage keeps the last good commit (a restart replays from it)."""
        self.commit(flush_timeout=30)

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

    # --- the loop (kafka.Processor.run) ---

    def step(self) -> None:
        now = time.monotonic()
        with self.talking_to_kafka():
            self.decided.pump(self._learn_all, timeout=0)  # learn new ohlc ids early (publishing re-checks)
            self._caught_up = False
            self.stats.consumed += self.prices.pump(self._roll, timeout=0.2, most=self.options.batch)
        self._publish(self.book.poll(time.monotonic()))
        self.watch.check(self.prices.client)
        every = self.options.retention_every
        if every is not None and now - self._last_retention >= every and not (
                self._retention_thread and self._retention_thread.is_alive()):
            self._retention_thread = threading.Thread(target=self._retention, daemon=True, name="retention")
            self._retention_thread.start()
            self._last_retention = now

    def idle(self, seconds: float) -> None:
        self._producer.poll(seconds)  # deliveries (and librdkafka's reconnects) go on meanwhile

    def finish(self) -> None:
        if self.options.close_on_stop and self.started:
            self._publish(self.book.close_all())

    def clients(self) -> list[Any]:
        return [self.prices.client, self.decided.client]

    def _retention(self) -> None:
        try:
            with store.database(self.settings) as db:
                retention.run_once(db, self.options.retention_policy)
        except Exception as error:  # noqa: BLE001 - retention retries at its next run
            log.warning("retention failed: %s", error)
