"""Publishing ticks to Kafka as Avro: the producer's transport, separate from the sources."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

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

    def __init__(self, settings: Settings, stats: DeliveryStats | None = None, max_queued: int = 100_000) -> None:
        self.topic = settings.prices_topic
        self.stats = stats or DeliveryStats()
        self._codec = AvroCodec(settings, self.topic, "tick")
        self.kafka = Outage("Kafka", log)
        self.registry = Outage("the schema registry", log)
        self.watch = KafkaWatch(self.kafka)
        # kafka.RELIABLE: acks=all, idempotent, and a tick waits in the queue however long the broker is away
        self._producer = kafka.producer(settings, "producer", {"queue.buffering.max.messages": max_queued},
                                        self.watch)

    async def publish(self, tick: Tick) -> None:
        """Queue one tick; while the local queue is full, wait (without blocking the loop) for deliveries."""
        record = tick.to_record(published_at=int(time.time() * 1000))
        if reason := non_finite(record):  # whatever the path (live, back-fill): no NaN reaches the topic
            self.stats.rejected += 1
            if self.stats.rejected == 1 or self.stats.rejected % 1000 == 0:
                log.warning("tick %s not published: %s (%d so far)", tick.id, reason, self.stats.rejected)
            return
        backoff: Backoff | None = None  # made only when the registry cannot answer (the hot path never does)
        while True:
            try:
                value = self._codec.encode(record)
                break
            except RegistryUnavailable as error:
                self.registry.down(error)
                backoff = backoff or Backoff(0.5, 10.0)
                await asyncio.sleep(backoff.next())
        self.registry.up()
        while True:
            try:
                self._producer.produce(self.topic, key=tick.symbol.encode(), value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0)
                await asyncio.sleep(0.05)  # queue full: backpressure until Kafka takes more
        self.stats.queued += 1
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.stats.delivered += 1
            self.watch.alive()
            return
        self.stats.failed += 1
        if self.stats.failed == 1 or self.stats.failed % 1000 == 0:
            log.error("delivery failed (%d so far): %s", self.stats.failed, error)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not delivered."""
        return self._producer.flush(timeout)

    async def drain(self, timeout: float = 60.0) -> int:
        """`flush` off the event loop, in slices of half a second: Ctrl-C during a final flush ends the command at
        once (on the way out the interpreter waits only for the slice in the worker thread, not for `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = await asyncio.to_thread(self.flush, max(0.0, min(0.5, deadline - time.monotonic())))
            if not left or time.monotonic() >= deadline:
                return left
