"""Roll-up throughput, on the native stack (the charts drawn from the candles: bench/history.py).

    python bench/rollups.py [--ticks 1000000] [--e2e-ticks 200000]

1. Pure `CandleBook`: ticks/s rolled up in memory (10 symbols, 10 ticks/s each in event time).
2. End to end: `--e2e-ticks` Avro ticks are published to a topic of the bench's own, then one `Processor`
   (decode, roll up, publish candles to a second bench topic, commit) reads them all: ticks/s. Both topics
   are deleted afterwards, so the shared topics, the sinks and MongoDB see nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import scratch  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from cryptopulse.tick import Tick  # noqa: E402
from streams.candles import CandleBook  # noqa: E402
from streams.processor import Processor, ProcessorOptions  # noqa: E402

SYMBOLS = [f"S{i}" for i in range(10)]


def bench_book(count: int) -> float:
    ts0 = 1_100_000_000_000
    ticks = [(SYMBOLS[i % 10], ts0 + (i // 10) * 100, 100 + (i % 997) / 100) for i in range(count)]
    book = CandleBook()
    started = time.perf_counter()
    for symbol, ts, price in ticks:
        book.add(symbol, "simulated", ts, price, 0.0)
        if ts % 1000 == 0:
            book.poll(0.0)
    book.close_all()
    return count / (time.perf_counter() - started)


def bench_end_to_end(base: Settings, count: int) -> tuple[float, int]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(prices_topic=f"bench-rollups-prices-{tag}", candles_topic_prefix=f"bench-rollups-candles-{tag}")
    admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap})
    new = [NewTopic(settings.prices_topic, 1, 1),
           NewTopic(settings.candles_topic, 1, 1, config={"cleanup.policy": "compact"})]
    for f in admin.create_topics(new).values():
        f.result()
    try:
        codec = AvroCodec(settings, settings.prices_topic, "tick")
        producer = Producer({"bootstrap.servers": base.kafka_bootstrap, "linger.ms": 50, "compression.type": "lz4",
                             "queue.buffering.max.messages": 1_000_000})
        ts0 = 1_100_000_000_000
        for i in range(count):
            symbol = SYMBOLS[i % 10]
            value = codec.encode(Tick(symbol, "simulated", ts0 + (i // 10) * 100, 100 + (i % 997) / 100).to_record())
            while True:
                try:
                    producer.produce(settings.prices_topic, key=symbol.encode(), value=value)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        processor = Processor(settings, ProcessorOptions(group=f"bench-rollups-{tag}", retention_every=None,
                                                         close_on_stop=True))
        started: list[float] = []
        done = threading.Event()

        def stop() -> bool:
            if not started and processor.stats.consumed:
                started.append(time.perf_counter())
            if processor.stats.consumed >= count:
                done.set()
            return done.is_set()

        processor.run(stop)
        elapsed = time.perf_counter() - started[0]
        return count / elapsed, processor.stats.published
    finally:
        scratch.remove(settings, "bench-rollups-")  # its topics, group and registry subjects


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ticks", type=int, default=1_000_000, help="ticks for the in-memory CandleBook")
    p.add_argument("--e2e-ticks", type=int, default=200_000, help="ticks through Kafka and one processor")
    args = p.parse_args()
    print(f"CandleBook (pure): {bench_book(args.ticks):,.0f} ticks/s over {args.ticks:,} ticks")
    rate, published = bench_end_to_end(Settings(), args.e2e_ticks)
    print(f"end to end (Kafka → decode → roll up → publish candles → commit): {rate:,.0f} ticks/s over "
          f"{args.e2e_ticks:,} ticks, {published:,} candle records published")


if __name__ == "__main__":
    main()
