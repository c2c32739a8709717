"""The cascade: 1-minute candles rolled up into 5m, 15m, 1h, 4h, 1d and 1w, as a Kafka stream (docs/rollups.md).

It reads the candle topics of 1m to 1d as a member of its own group (`<streams group>-cascade`), feeds a
`CascadeBook` (streams/cascade.py), and publishes each coarser interval's candles on its own topic. What it reads:
- on the 1m topic, the roll-up's candles (updates and finals): the children of the 5-minute buckets;
- on any candle topic, a back-fill's history (header BACKFILL): children of the next interval's bucket when that
  bucket is still open here (a bucket closed already is the back-fill's to roll up, which it did: BACKFILL_ROLLUP);
- nothing else: its own candles on the 5m..1d topics (fed to the next interval in memory already), and the
  back-fill's roll-ups, are left alone without being decoded.
Candles are produced with the partition of their symbol (`kafka.partition_for`), so every interval of a symbol is
on one partition number, read by one member of the group (the range assignor gives a member the same partition of
each topic).

Delivery guarantees, and why they hold: a child is keyed by its start in its bucket, so reading one again replaces
it with itself, and the candles out are a function of the children in. A commit delivers every candle queued, then
writes the state of every key that changed (compacted topic `crypto-candles-state`, key `cascade|symbol|source`,
schemas/candle_state.avsc), then commits the offsets read. A restart, or the next owner of a partition, starts from
those states and reads on from those offsets: what it reads again replaces itself, what it had not read comes
now; a bucket closed after the last commit closes again, the same. The state is bounded by the coins and the
intervals (a couple of open buckets of at most 7 children each per interval and key), never by the days run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from cryptopulse import kafka
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import INTERVALS, Candle
from cryptopulse.errors import DeliveryError, RegistryUnavailable
from cryptopulse.kafka import BACKFILL, Reader, Unavailable
from cryptopulse.settings import Settings
from streams.cascade import CascadeBook, Key

log = logging.getLogger("streams.cascade")

STAGE = "cascade"


@dataclass
class CascadeStats:
    consumed: int = 0
    undecodable: int = 0
    from_backfill: int = 0  # back-filled candles taken as children of a bucket open here
    published: int = 0
    checkpoints: int = 0
    commits: int = 0


class CascadeProcessor(kafka.Processor):
    """A member of the cascade's group over the candle topics, a producer of the coarser intervals, a `CascadeBook`."""

    name = "cascade"

    def __init__(self, settings: Settings, group: str, *, from_end: bool = False, commit_every: float = 1.0,
                 only_symbols: frozenset[str] | None = None, book: CascadeBook | None = None,
                 close_on_stop: bool = False) -> None:
        super().__init__(settings, log, commit_every)
        self.stats = CascadeStats()
        self.book = book or CascadeBook()
        self.close_on_stop = close_on_stop
        self.only_symbols = only_symbols
        self.group = group
        self._codecs = {interval: AvroCodec(settings, settings.candle_topic(interval), "candle")
                        for interval in INTERVALS}
        self._by_topic = {settings.candle_topic(interval): self._codecs[interval] for interval in INTERVALS}
        self._minutes = settings.candle_topic("1m")
        self._states = AvroCodec(settings, settings.candles_state_topic, "candle_state")
        self._partitions: int | None = None  # the candle topics' partition count
        self._owned: set[int] = set()  # the partition numbers assigned to this member
        self._producer = kafka.producer(settings, "cascade", {"delivery.report.only.error": True,
                                                              "on_delivery": self.on_delivery}, self.watch)
        self.candles = self.member("cascade", [settings.candle_topic(i) for i in INTERVALS[:-1]], group, self._child,
                                   decode_value=self._decode, from_end=from_end, skip=self._not_a_child)

    def summary(self) -> str:
        return f"{self.stats}; {self.book.stats}"

    # --- what it reads ---

    def _decode(self, message: Message) -> dict[str, Any]:
        return self._by_topic[message.topic()].decode(message.value())

    def _not_a_child(self, message: Message) -> bool:
        origin = kafka.origin(message)
        return origin != BACKFILL and (origin is not None or message.topic() != self._minutes)

    def _child(self, record: dict[str, Any], message: Message) -> tuple[Candle, bool] | None:
        """(the candle, whether a back-fill published it)."""
        candle = Candle.from_record(record)
        if self.only_symbols is not None and candle.symbol not in self.only_symbols:
            return None
        return candle, kafka.origin(message) == BACKFILL

    def _apply(self, children: list[tuple[Candle, bool]]) -> None:
        now = time.monotonic()
        for child, backfilled in children:
            if backfilled:
                if self.book.is_late(child):
                    continue  # of a bucket closed here: the back-fill rolled that bucket up itself
                self.stats.from_backfill += 1
            self.book.add(child, now)
        self.stats.consumed += len(children)

    # --- assignment: the states of the keys of the partitions assigned ---

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self._owned = {tp.partition for tp in partitions}
        self._restore()

    def revoked(self) -> None:
        try:
            self.commit()
        except (Unavailable, KafkaException, DeliveryError) as error:
            log.info("no commit on revocation (%s); the next owner reads a little more again", error)
        self.book.forget(self.book.keys())
        self._owned = set()

    def _restore(self, timeout: float = 60.0) -> None:
        """Every state of the checkpoint topic whose symbol is on a partition assigned here."""
        partitions = self._partition_count()
        found: dict[str, dict[str, Any]] = {}

        def keep(records: list[tuple[str, dict[str, Any] | None]]) -> None:
            for key, record in records:
                if record is None:
                    found.pop(key, None)
                elif record["stage"] == STAGE:
                    found[key] = record

        reader = Reader(self.settings, "cascade-state", [self.settings.candles_state_topic],
                        kafka.keyed_decoder(lambda value: self._states.decode(value), lambda _key, record: record,
                                            "cascade state", log),
                        group=f"{self.group}-state", watch=self.watch, registry=self.registry)
        try:
            with self.talking_to_kafka(f"reading {self.settings.candles_state_topic}: "):
                reader.catch_up(keep, timeout)
        finally:
            reader.close()
        now = time.monotonic()
        restored = 0
        for record in found.values():
            if kafka.partition_for(record["symbol"], partitions) in self._owned:
                self.book.restore((record["symbol"], record["source"]), record, now)
                restored += 1
        log.info("state of %d (symbol, source) read back", restored)

    def _partition_count(self) -> int:
        if self._partitions is None:
            with self.talking_to_kafka():
                self._partitions = len(kafka.partitions_of(self.candles.client, self._minutes))
        return self._partitions

    # --- what it writes ---

    def _publish(self, candles: list[Candle]) -> None:
        if not candles:
            return
        partitions = self._partition_count()
        for candle in candles:
            codec = self._codecs[candle.interval]
            try:
                value = codec.encode(candle.to_record())
            except RegistryUnavailable as error:  # only before the schema is known; the candle is made again
                raise Unavailable(self.registry, error) from error
            kafka.produce(self._producer, self.settings.candle_topic(candle.interval), value, candle.id.encode(),
                          partition=kafka.partition_for(candle.symbol, partitions))
            self.stats.published += 1
        self._producer.poll(0)

    def commit(self, flush_timeout: float = 5.0) -> None:
        """Deliver the candles, then the states of the keys that changed, then commit the offsets read."""
        positions = self.candles.positions
        if not positions:
            return
        self.all_delivered("candles")
        changed = self.book.take_changed()
        try:
            self._flush(flush_timeout, "candles")
            for key in changed:
                self._checkpoint(key)
            self._flush(flush_timeout, "states")
        except Unavailable:
            self.book.changed |= changed  # written at the next commit
            raise
        offsets = [TopicPartition(topic, p, offset) for (topic, p), offset in positions.items()]
        with self.talking_to_kafka("commit failed: "):
            self.candles.client.commit(offsets=offsets, asynchronous=False)
        self.watch.alive()
        self.stats.commits += 1

    def _flush(self, timeout: float, what: str) -> None:
        left = self._producer.flush(timeout)
        if left:
            raise Unavailable(self.kafka, f"{left} {what} still waiting for the broker; not committing yet")

    def _checkpoint(self, key: Key) -> None:
        symbol, source = key
        record = {"stage": STAGE, "symbol": symbol, "source": source, **self.book.state(key)}
        try:
            value = self._states.encode(record)
        except RegistryUnavailable as error:
            raise Unavailable(self.registry, error) from error
        self._producer.produce(self.settings.candles_state_topic, value, f"{STAGE}|{symbol}|{source}".encode())
        self.stats.checkpoints += 1

    def final_commit(self) -> None:
        self.commit(flush_timeout=30)

    # --- the loop (kafka.Processor.run) ---

    def start(self) -> None:
        with self.talking_to_kafka():
            self.candles.open()

    def step(self) -> None:
        with self.talking_to_kafka():
            self.candles.pump(self._apply, timeout=0.2)
        self._publish(self.book.poll(time.monotonic()))
        self.watch.check(self.candles.client)

    def idle(self, seconds: float) -> None:
        self._producer.poll(seconds)

    def finish(self) -> None:
        if self.close_on_stop and self.started:
            self._publish(self.book.close_all(time.monotonic()))

    def clients(self) -> list[Any]:
        return [self.candles.client]
