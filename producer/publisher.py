"""Publishing ticks to Kafka as Avro: the producer's transport, separate from the sources."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from math import isfinite
from typing import Any

from confluent_kafka import KafkaError, Message

from cryptopulse import kafka
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import KafkaWatch
from cryptopulse.outage import Backoff, Outage
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from producer.sources.validation import non_finite

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    rejected: int = 0  # ticks holding NaN or an infinity: never published (producer/sources/validation.py)


class TickPublisher:
    """Sends ticks to the prices topic, keyed by symbol, with acks=all and idempotence.

    librdkafka's local queue is bounded (`queue.buffering.max.messages`); when it
    is full, `publish` waits for deliveries instead of growing memory, so a broker
    outage slows the source down rather than losing ticks. A queued tick waits for
    the broker however long it is away (`message.timeout.ms` 0), and a registry that
    cannot answer before the schema is known makes `publish` wait and retry. Each
    outage is said once when it starts and once when it ends.
    """

    def __init__(self, settings: Settings, stats: DeliveryStats | None = None, max_queued: int = 100_000,
                 origin: bytes | None = None) -> None:
        self.topic = settings.prices_topic
        # a back-fill's ticks carry its header (kafka.BACKFILL): history, which no roll-up rolls up again; and their
        # event time (kafka.EVENT_TIME_HEADER), by which a reader of the last hour skips older ones unread
        self._headers = [(kafka.ORIGIN_HEADER, origin)] if origin else None
        self.stats = stats or DeliveryStats()
        self._codec = AvroCodec(settings, self.topic, "tick")
        self.kafka = Outage("Kafka", log)
        self.registry = Outage("the schema registry", log)
        self.watch = KafkaWatch(self.kafka)
        # kafka.RELIABLE: acks=all, idempotent, and a tick waits in the queue however long the broker is away
        self._producer = kafka.producer(settings, "producer", {
            "queue.buffering.max.messages": max_queued,
            # a report for a failed delivery only: delivered ones are counted from the queue's length
            "delivery.report.only.error": True, "on_delivery": self._on_delivery}, self.watch)

    async def publish(self, tick: Tick) -> None:
        """Queue one tick; while the local queue is full, wait (without blocking the loop) for deliveries."""
        price, volume, change = tick.price, tick.volume_24h, tick.change_24h_pct
        if not (isfinite(price) and (volume is None or isfinite(volume)) and (change is None or isfinite(change))):
            self._reject(tick)  # whatever the path (live, back-fill): no NaN reaches the topic
            return
        record = tick.to_record(published_at=time.time_ns() // 1_000_000)
        try:
            value = self._codec.encode(record)  # no registry call once the schema is known (the hot path)
        except RegistryUnavailable:
            value = await self._encode_waiting(record)
        producer = self._producer
        try:
            if self._headers is None:  # produce(topic, value, key): positional, the cheapest call
                producer.produce(self.topic, value, tick.symbol.encode())
            else:
                producer.produce(self.topic, value, tick.symbol.encode(), headers=self._headers_of(tick))
        except BufferError:
            await self._produce_waiting(tick.symbol.encode(), value, self._headers_of(tick))
        stats = self.stats
        stats.queued += 1
        producer.poll(0)  # serves the error callbacks (a failed delivery, a broker gone)
        delivered = stats.queued - stats.failed - len(producer)
        if self.watch.is_down and delivered > stats.delivered:
            self.watch.alive()  # deliveries go on: Kafka is back
        stats.delivered = delivered

    def _reject(self, tick: Tick) -> None:
        self.stats.rejected += 1
        if self.stats.rejected == 1 or self.stats.rejected % 1000 == 0:
            log.warning("tick %s not published: %s (%d so far)", tick.id, non_finite(tick.to_record()),
                        self.stats.rejected)

    async def _encode_waiting(self, record: dict[str, Any]) -> bytes:
        """The registry cannot answer before the schema is known: wait for it (said once) and encode then."""
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                value = self._codec.encode(record)
            except RegistryUnavailable as error:
                self.registry.down(error)
                await asyncio.sleep(backoff.next())
                continue
            self.registry.up()
            return value

    def _headers_of(self, tick: Tick) -> list[tuple[str, bytes]] | None:
        """A back-fill's headers: its origin, and the tick's event time (kafka.EVENT_TIME_HEADER)."""
        if self._headers is None:
            return None
        return [*self._headers, (kafka.EVENT_TIME_HEADER, str(tick.ts).encode())]

    async def _produce_waiting(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None) -> None:
        """The local queue is full (the broker is slow or away): backpressure until Kafka takes more."""
        while True:
            self._producer.poll(0)
            await asyncio.sleep(0.05)
            try:
                self._producer.produce(self.topic, value, key, headers=headers)
                return
            except BufferError:
                continue

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """Called for failed deliveries only (delivery.report.only.error): a delivered tick costs no callback."""
        if error is None:
            return
        self.stats.failed += 1
        if self.stats.failed == 1 or self.stats.failed % 1000 == 0:
            log.error("delivery failed (%d so far): %s", self.stats.failed, error)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not delivered."""
        left = self._producer.flush(timeout)
        self.stats.delivered = self.stats.queued - self.stats.failed - left
        return left

    async def drain(self, timeout: float = 60.0) -> int:
        """`flush` off the event loop, in slices of half a second: Ctrl-C during a final flush ends the command at
        once (on the way out the interpreter waits only for the slice in the worker thread, not for `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = await asyncio.to_thread(self.flush, max(0.0, min(0.5, deadline - time.monotonic())))
            if not left or time.monotonic() >= deadline:
                return left
