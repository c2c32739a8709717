"""Back-fill history as candles: an exchange's own OHLC as it is, a point history rolled up here.

`control backfill` publishes history through the prices topic like live ticks, but the stream processor
rolls up by event time per (symbol, source): history older than what it has seen live is late to it, and
dropped. So the back-fill publishes the candles of its history itself, on the candles topic, each batch
delivered before the ticks it was made of; the processor then finds those minutes decided and leaves them.

- OHLC history (Binance klines, Coinbase candles, the simulated market's): trades' open/high/low/close
  and volume, origin "ohlc", which no candle rolled up from sampled prices ever replaces (docs/rollups.md).
- Point history (CoinGecko): rolled up here into candles of the back-fill's interval, as the processor rolls ticks
  up into minutes (origin "ticks", a candle per bucket that has points, `ticks` its distinct point times, no
  volume), and for 1m only for minutes MongoDB holds nothing for (neither a tick nor a candle): a minute already
  rolled up from live ticks is never replaced by one made of a history's sparse points.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, Message

from cryptopulse import kafka, topics
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import INTERVAL, INTERVALS, Candle, bucket_of
from cryptopulse.errors import DeliveryError
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick


class PointRollup:
    """One gap of one symbol's point history, page by page (in time order), into final candles of `interval`.

    A page's last bucket may go on in the next page, so its points are held back until its candle is
    final: `add` returns the candles that closed and the points whose candle went out (or is skipped).
    A candle is what the processor makes of ticks: open and close the first and last point by time, a point time
    seen twice keeps its last price, `ticks` the distinct point times, no volume.
    """

    def __init__(self, interval: str = INTERVAL, skip: Iterable[int] = ()) -> None:
        self.interval = interval
        self.skip = set(skip)  # bucket starts MongoDB holds something for
        self._open: dict[int, dict[int, Tick]] = {}  # bucket start -> its points by time
        self._held: list[Tick] = []

    def add(self, points: list[Tick]) -> tuple[list[Candle], list[Tick]]:
        for tick in points:
            self._open.setdefault(bucket_of(tick.ts, self.interval), {})[tick.ts] = tick
        self._held += points
        newest = max(self._open, default=None)  # the only bucket the next page can add to
        candles = self._close([start for start in sorted(self._open) if start != newest])
        ready = [t for t in self._held if bucket_of(t.ts, self.interval) != newest]
        self._held = [t for t in self._held if bucket_of(t.ts, self.interval) == newest]
        return candles, ready

    def finish(self) -> tuple[list[Candle], list[Tick]]:
        """The end of the gap: its last bucket is whole."""
        ready, self._held = self._held, []
        return self._close(sorted(self._open)), ready

    def _close(self, starts: list[int]) -> list[Candle]:
        candles = []
        for start in starts:
            points = self._open.pop(start)
            if start in self.skip:
                continue
            ordered = [points[ts] for ts in sorted(points)]
            prices = [t.price for t in ordered]
            candles.append(Candle(ordered[0].symbol, ordered[0].source, start, prices[0], max(prices), min(prices),
                                  prices[-1], len(prices), None, "ticks", True, self.interval))
        return candles


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
