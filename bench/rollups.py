"""Roll-up throughput and chart-from-candles latency, on the native stack.

    python bench/rollups.py [--ticks 1000000] [--e2e-ticks 200000] [--other-symbols 5]

1. Pure `CandleBook`: ticks/s rolled up in memory (10 symbols, 10 ticks/s each in event time).
2. End to end: `--e2e-ticks` Avro ticks are published to a topic of the bench's own, then one `Processor`
   (decode, roll up, publish candles to a second bench topic, commit) reads them all: ticks/s. Both topics
   are deleted afterwards, so the shared topics, the sinks and MongoDB see nothing.
3. Chart requests: 7 days of 1-minute candles for one symbol (plus `--other-symbols` x 7 days beside it,
   since FerretDB scans the whole collection) in a scratch database; the server time (`server_ms`) of
   `webui.history.HistoryStore.snapshot` for 24 h and 7 d, median of 5 after one warm-up, from the dashboard's
   in-memory candle view (and the time it takes to load) and straight from MongoDB. Dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import scratch  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from cryptopulse.tick import Tick  # noqa: E402
from cryptopulse.times import DAY_MS, MINUTE_MS  # noqa: E402
from streams.candles import CandleBook  # noqa: E402
from streams.processor import Processor, ProcessorOptions  # noqa: E402
from webui.history import HistoryStore  # noqa: E402
from webui.views import WindowView, candle_spec  # noqa: E402

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
    settings = Settings(prices_topic=f"bench-rollups-prices-{tag}", candles_topic=f"bench-rollups-candles-{tag}")
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


def bench_charts(base: Settings, other_symbols: int) -> dict[str, Any]:
    database = f"bench_rollups_{uuid.uuid4().hex[:8]}"
    client = MongoClient(base.mongodb_uri, tz_aware=True)
    end = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    rng = random.Random(1)
    try:
        collection = client[database]["candles_1m"]
        for symbol in ["BENCH", *(f"OTHER{i}" for i in range(other_symbols))]:
            docs, price = [], 100.0
            for start in range(end - 7 * DAY_MS, end, MINUTE_MS):
                price *= 1 + rng.gauss(0, 0.001)
                docs.append({"_id": f"{symbol}|simulated|1m|{start}", "symbol": symbol, "source": "simulated",
                             "interval": "1m", "start": datetime.fromtimestamp(start / 1000, UTC), "open": price,
                             "high": price * 1.001, "low": price * 0.999, "close": price, "ticks": 60, "volume": None,
                             "origin": "ticks", "final": True})
            for i in range(0, len(docs), 1000):
                collection.insert_many(docs[i:i + 1000], ordered=False)
        total = collection.estimated_document_count()

        view = WindowView(replace(base, database=database), candle_spec(base))
        started = time.perf_counter()
        view.start()
        if not view.ready.wait(300):
            raise RuntimeError(f"the candle view did not load: {view.status()}")
        loaded = time.perf_counter() - started

        async def measure(use_view: bool) -> dict[str, float]:
            store = HistoryStore(base.mongodb_uri, database, pool=4, max_points=1500, cache_seconds=0,
                                 recent=lambda _symbol: [], candle_view=view if use_view else None)
            try:
                out = {}
                for range_ in ("24h", "7d"):
                    times = []
                    for _ in range(6):
                        snap = await store.snapshot("BENCH", range_, end)
                        assert snap["basis"] == "candles_1m", snap["basis"]
                        times.append(snap["server_ms"])
                    out[range_] = statistics.median(times[1:])
                return out
            finally:
                await store.close()

        try:
            return {"documents": total, "load_s": loaded, "view": asyncio.run(measure(True)),
                    "mongo": asyncio.run(measure(False))}
        finally:
            view.stop()
    finally:
        client.drop_database(database)
        client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ticks", type=int, default=1_000_000, help="ticks for the in-memory CandleBook")
    p.add_argument("--e2e-ticks", type=int, default=200_000, help="ticks through Kafka and one processor")
    p.add_argument("--other-symbols", type=int, default=5, help="other symbols' 7 days of candles in the collection")
    p.add_argument("--charts-only", action="store_true", help="only part 3")
    args = p.parse_args()
    settings = Settings()
    if not args.charts_only:
        print(f"CandleBook (pure): {bench_book(args.ticks):,.0f} ticks/s over {args.ticks:,} ticks")
        rate, published = bench_end_to_end(settings, args.e2e_ticks)
        print(f"end to end (Kafka → decode → roll up → publish candles → commit): {rate:,.0f} ticks/s over "
              f"{args.e2e_ticks:,} ticks, {published:,} candle records published")
    charts = bench_charts(settings, args.other_symbols)
    print(f"chart from candles ({charts['documents']:,} candles in the collection, 10,080 for the symbol), "
          "server time, median of 5:")
    print(f"  candle view (loaded in {charts['load_s']:.1f} s): 24 h {charts['view']['24h']:.1f} ms, "
          f"7 d {charts['view']['7d']:.1f} ms")
    mongo = charts["mongo"]
    print(f"  straight from MongoDB: 24 h {mongo['24h']:.1f} ms, 7 d {mongo['7d']:.1f} ms")


if __name__ == "__main__":
    main()
