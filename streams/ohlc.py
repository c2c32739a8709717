"""Publishing an exchange's own 1-minute candles (back-fill history) to the candles topic, as origin "ohlc".

Kept apart from the processor because the back-fill (control/backfill.py) publishes them: they are real
trades' open/high/low/close and volume, which a candle rolled up from one sampled price a minute cannot
match, so the processor never replaces them (see docs/rollups.md). Each batch is delivered before the
caller publishes the matching ticks, so the processor always knows the ohlc `_id`s before it sees them.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from control import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.settings import Settings
from producer.sources.history import Candle as HistoryCandle
from streams.candles import Candle


def from_history(candle: HistoryCandle) -> Candle:
    """An exchange candle as a final ohlc candle; `ticks` is 0: the APIs' candles do not carry our tick count."""
    return Candle(candle.symbol, candle.source, candle.start_ms, candle.open, candle.high, candle.low, candle.close,
                  0, volume=candle.volume, origin="ohlc", final=True, interval=candle.interval)


class OhlcPublisher:
    """acks=all, idempotent; `publish` returns only when every candle of the batch is delivered."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.candles_topic
        topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == self.topic])
        self._codec = AvroCodec(settings, self.topic, "candle")
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                   "enable.idempotence": True, "linger.ms": 20,
                                   "client.id": "cryptopulse-backfill-candles"})
        self._failed = 0
        self.published = 0

    def publish(self, candles: list[HistoryCandle], timeout: float = 60.0) -> None:
        for history_candle in candles:
            candle = from_history(history_candle)
            self._producer.produce(self.topic, key=candle.id.encode(), value=self._codec.encode(candle.to_record()),
                                   on_delivery=self._on_delivery)
            self._producer.poll(0)
        left = self._producer.flush(timeout)
        if left or self._failed:
            raise RuntimeError(f"{left + self._failed} candles were not delivered to {self.topic}; run again to retry")
        self.published += len(candles)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed += 1
