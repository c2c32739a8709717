"""Back-fill history as candles: an exchange's own OHLC as it is, a point history rolled up here.

`control backfill` publishes history through the prices topic like live ticks, but the stream processor
rolls up by event time per (symbol, source): history older than what it has seen live is late to it, and
dropped. So the back-fill publishes the candles of its history itself, on the candles topic, each batch
delivered before the ticks it was made of; the processor then finds those minutes decided and leaves them.

- OHLC history (Binance klines, Coinbase candles, the simulated market's): trades' open/high/low/close
  and volume, origin "ohlc", which no candle rolled up from sampled prices ever replaces (docs/rollups.md).
- Point history (CoinGecko): rolled up by the same `CandleBook` as the processor, origin "ticks",
  only for minutes MongoDB holds nothing for (neither a tick nor a candle): a minute already rolled up
  from live ticks is never replaced by one made of a history's sparse points.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, Message

from cryptopulse import kafka, topics
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import INTERVALS, Candle
from cryptopulse.errors import DeliveryError
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from cryptopulse.times import bucket_start
from streams.candles import CandleBook


class PointRollup:
    """One gap of one symbol's point history, page by page, into final 1-minute candles.

    A page's last minute may go on in the next page, so its points are held back until its candle is
    final: `add` returns the candles that closed and the points whose candle went out (or is skipped).
    """

    def __init__(self, skip_minutes: Iterable[int] = ()) -> None:
        self.skip = set(skip_minutes)  # minute starts MongoDB holds something for
        self._book = CandleBook(grace_ms=0, idle_close=float("inf"))
        self._held: list[Tick] = []

    def add(self, points: list[Tick]) -> tuple[list[Candle], list[Tick]]:
        for tick in points:
            self._book.add(tick.symbol, tick.source, tick.ts, tick.price)
        self._held += points
        candles = self._wanted(self._book.poll(0.0))
        open_from = min((c.start for c in self._book.open_candles()), default=None)
        if open_from is None:
            ready, self._held = self._held, []
        else:
            ready = [t for t in self._held if bucket_start(t.ts) < open_from]
            self._held = [t for t in self._held if bucket_start(t.ts) >= open_from]
        return candles, ready

    def finish(self) -> tuple[list[Candle], list[Tick]]:
        """The end of the gap: its last minute is whole."""
        ready, self._held = self._held, []
        return self._wanted(self._book.close_all()), ready

    def _wanted(self, candles: list[Candle]) -> list[Candle]:
        return [c for c in candles if c.final and c.start not in self.skip]


class CandlePublisher:
    """A back-fill's candles, of any interval, each on its interval's topic and its symbol's partition, marked with
    the back-fill's header (kafka.BACKFILL; its own roll-ups kafka.BACKFILL_ROLLUP): acks=all, idempotent; `publish`
    returns only when every candle of the batch is delivered."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        wanted = {settings.candle_topic(interval) for interval in INTERVALS}
        topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name in wanted])
        self._codecs = {interval: AvroCodec(settings, settings.candle_topic(interval), "candle")
                        for interval in INTERVALS}
        self._producer = kafka.producer(settings, "backfill-candles")
        self._partitions = len(kafka.partitions_of(self._producer, settings.candles_topic))
        self._failed = 0
        self.published = 0

    def publish(self, candles: list[Candle], timeout: float = 60.0, origin: bytes = kafka.BACKFILL) -> None:
        headers = [(kafka.ORIGIN_HEADER, origin)]
        for candle in candles:
            self._producer.produce(self.settings.candle_topic(candle.interval),
                                   self._codecs[candle.interval].encode(candle.to_record()), candle.id.encode(),
                                   kafka.partition_for(candle.symbol, self._partitions),
                                   on_delivery=self._on_delivery, headers=headers)
            self._producer.poll(0)
        left = self._producer.flush(timeout)
        if left or self._failed:
            raise DeliveryError(f"{left + self._failed} candles were not delivered to the candle topics; run again "
                                "to retry")
        self.published += len(candles)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed += 1
