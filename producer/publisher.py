"""Publishing ticks to Kafka as Avro: the producer's transport, separate from the sources."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from cryptopulse.avro import AvroCodec
from cryptopulse.settings import Settings
from producer.tick import Tick

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0


class TickPublisher:
    """Sends ticks to the prices topic, keyed by symbol, with acks=all and idempotence.

    librdkafka's local queue is bounded (`queue.buffering.max.messages`); when it
    is full, `publish` waits for deliveries instead of growing memory, so a broker
    outage slows the source down rather than losing ticks.
    """

    def __init__(self, settings: Settings, stats: DeliveryStats | None = None, max_queued: int = 100_000) -> None:
        self.topic = settings.prices_topic
        self.stats = stats or DeliveryStats()
        self._codec = AvroCodec(settings, self.topic, "tick")
        self._producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queued,
            "client.id": "cryptopulse-producer",
        })

    async def publish(self, tick: Tick) -> None:
        """Queue one tick; while the local queue is full, wait (without blocking the loop) for deliveries."""
        value = self._codec.encode(tick.to_record(published_at=int(time.time() * 1000)))
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
            return
        self.stats.failed += 1
        if self.stats.failed == 1 or self.stats.failed % 1000 == 0:
            log.error("delivery failed (%d so far): %s", self.stats.failed, error)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not delivered."""
        return self._producer.flush(timeout)
