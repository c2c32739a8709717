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
- History is the back-fill's: `control backfill` publishes the candles of its history itself (every interval), and
  marks them and their ticks (header `cryptopulse-origin: backfill`); such ticks are not rolled up here.
- What is decided, bounded: the processor learns the final and ohlc `_id`s of the candles topic published in the
  last day (LOOKBACK_MS: read from there at start, then followed, older ones forgotten) — its own finals, which a
  replay must not roll up again, and a foreign producer's OHLC minutes. Ticks of a decided minute are not rolled
  up, a tick that looks late makes it read that topic to its end before dropping it, and before every publish it
  reads the topic to its end: a ticks candle is never published for an ohlc `_id`. Start-up and memory depend on
  a day of candles per (symbol, source), never on the days run.
- Candles are produced on the partition of their symbol (`kafka.partition_for`), where the cascade's member for
  that symbol reads them (streams/cascade_processor.py rolls them up into every coarser interval).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from cryptopulse import kafka, store
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import Candle, candle_id
from cryptopulse.errors import DeliveryError, RegistryUnavailable
from cryptopulse.kafka import Reader, Unavailable
from cryptopulse.settings import Settings
from cryptopulse.store import Retention
from cryptopulse.tick import tick_read
from cryptopulse.times import DAY_MS, bucket_start
from streams.candles import CandleBook
from streams.retention import RetentionJob, RetentionReport

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
    retention_every: float | None = 60.0  # how often the retention job looks for a collection due; None: no job
    retention: Retention = field(default_factory=Retention)
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
    commits: int = 0


# the commit metadata's size: under the broker's default offset.metadata.max.bytes (4096), which fails the commit
METADATA_LIMIT = 3_800
# How far back (by publish time) the candles topic is read at start, and how long a decided `_id` is remembered: a
# replay reads ticks of the last minutes again, and a foreign producer's OHLC candle decides the ticks of its minute
# that come within a day of it (a back-fill marks its own ticks, which are never rolled up here). Bounded memory
# and start-up, whatever the days run (docs/rollups.md).
LOOKBACK_MS = DAY_MS


def _backfilled(message: Message) -> bool:
    return message.headers() is not None and kafka.origin(message) == kafka.BACKFILL  # most ticks have no headers


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
        self.options = options or ProcessorOptions()
        super().__init__(settings, log, self.options.commit_every)
        self.options.group = self.options.group or settings.streams_group
        self.stats = ProcessorStats()
        self.book = self._new_book()
        # the `_id`s decided on the candles topic (-> when they were published): bounded, forgotten after LOOKBACK
        self.ohlc_ids: dict[str, int] = {}
        self.final_ids: dict[str, int] = {}
        self._pruned = time.monotonic()
        self._partitions: int | None = None  # the candles topic's partition count
        self._ticks = AvroCodec(settings, settings.prices_topic, "tick")
        self._candles = AvroCodec(settings, settings.candles_topic, "candle")
        self._caught_up = False  # read the candles topic to its end during this batch already
        self._assigned = False  # partitions were just assigned: read the candles topic to its end before their ticks
        self._metadata_warned = False
        self._last_retention = float("-inf")
        self._retention_thread: threading.Thread | None = None
        self._retention_job: RetentionJob | None = None
        self._producer = kafka.producer(settings, "streams", watch=self.watch)
        self.decided: Reader[tuple[dict[str, Any], int]] = Reader(
                              settings, "streams-candles", [settings.candles_topic], self._learn_decode,
                              group=f"{self.options.group}-candles-reader", watch=self.watch, registry=self.registry,
                              # catch_up() reads our own latest candles back before each publish: keep it short
                              config={"fetch.wait.max.ms": 10})
        self.prices = self.member("streams", [settings.prices_topic], self.options.group, placed_tick,
                                  decode_value=lambda message: self._ticks.decode(message.value()),
                                  from_end=self.options.from_end,
                                  skip=_backfilled)  # a back-fill rolled its history up itself

    def _new_book(self) -> CandleBook:
        return CandleBook(self.options.grace_ms, self.options.update_every, self.options.idle_close)

    def summary(self) -> str:
        return f"{self.stats}; {self.book.stats}"

    # --- the candles topic: what is decided already ---

    def start(self) -> None:
        with self.talking_to_kafka():
            if not self.decided.positions:  # what was decided in the last LOOKBACK_MS, published since then
                probe = kafka.consumer(self.settings, "streams", f"{self.options.group}-probe", {"log_level": 0})
                try:
                    self.decided.start = kafka.offsets_at(probe, self.settings.candles_topic,
                                                          int(time.time() * 1000) - LOOKBACK_MS)
                finally:
                    probe.close()
            self.decided.open()
            self._partitions = len(kafka.partitions_of(self.decided.client, self.settings.candles_topic))
            self.catch_up()
            self.prices.open()

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read the candles topic up to its current end: learn every final and every ohlc `_id`."""
        with self.talking_to_kafka():
            self.decided.catch_up(self._learn_all, timeout)

    def _learn_decode(self, message: Message) -> tuple[dict[str, Any], int] | None:
        """A candle record and when it was published; None for what decides nothing here: a back-fill's (its
        ticks are never rolled up here) or a bad record."""
        if message.value() is None or kafka.origin(message) is not None:
            return None
        try:
            return self._candles.decode(message.value()), message.timestamp()[1]
        except RegistryUnavailable:
            raise  # an unread ohlc candle could be overwritten: better wait than guess
        except Exception:  # noqa: BLE001 - a bad record on the candles topic decides nothing
            return None

    def _learn_all(self, records: list[tuple[dict[str, Any], int]]) -> None:
        for record, published in records:
            if record.get("origin") == "ohlc":
                self.ohlc_ids[record["_id"]] = published
            if record.get("final", True):
                self.final_ids[record["_id"]] = published
        now = time.monotonic()
        if now - self._pruned > 60:
            self._pruned = now
            cutoff = int(time.time() * 1000) - LOOKBACK_MS
            for ids in (self.ohlc_ids, self.final_ids):
                for old in [cid for cid, published in ids.items() if published < cutoff]:
                    del ids[old]

    # --- the prices topic ---

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Each partition at its commit (the replay point), with the event times the commit recorded."""
        for tp in partitions:
            self.book.restore(_read_event_times(tp))
        self._assigned = True

    def revoked(self) -> None:
        """Partitions taken away (a rebalance, or our session expired while Kafka was away): commit what we
        can, then forget the open candles, exactly as a restart would; the next assignment replays them."""
        try:
            self.commit(flush_timeout=5)
        except (Unavailable, KafkaException, DeliveryError) as error:
            log.info("no commit on revocation (%s); the next owner replays a little more", error)
        self.book = self._new_book()

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
        if cid in self.final_ids or cid in self.ohlc_ids:  # dict lookups: ids decided within LOOKBACK_MS
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
                self.final_ids[candle.id] = int(time.time() * 1000)
            self._produce(candle)

    def _produce(self, candle: Candle) -> None:
        try:
            value = self._candles.encode(candle.to_record())
        except RegistryUnavailable as error:  # only before the schema is known; the candle is made again
            raise Unavailable(self.registry, error) from error
        kafka.produce(self._producer, self.settings.candles_topic, value, candle.id.encode(),
                      partition=kafka.partition_for(candle.symbol, self._partitions or 1),
                      on_delivery=self.on_delivery)
        self.stats.published += 1
        self._producer.poll(0)

    def commit(self, flush_timeout: float = 5.0) -> None:
        """Deliver every queued candle, then commit up to the first tick of the oldest open candle.

        Kafka away (candles still queued, no coordinator, a failed commit): `Unavailable`, try again later.
        A candle whose delivery failed for good is worth stopping for: DeliveryError.
        """
        topic = self.settings.prices_topic
        positions = {p: offset for (t, p), offset in self.prices.positions.items() if t == topic}
        if not positions:
            return
        self.all_delivered("candles")
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
        if self._retention_job is None:
            self._retention_job = RetentionJob(self.options.retention, RetentionReport(self.settings))
        try:
            with store.database(self.settings) as db:
                self._retention_job.run_due(db)
        except Exception as error:  # noqa: BLE001 - retention retries at its next run
            log.warning("retention failed: %s", error)
