"""Ingest throughput on the native stack: the pipeline, the store's ceiling and the original design's way.

    python bench/ingest.py [--ticks 160000] [--store-docs 20000] [--baseline-seconds 60]

Needs the stack (`control stack up`). It works on its own topic, connector and
collections (`bench-prices-<run>`, `bench-mongo-sink-<run>`, `bench_*`), which it removes
afterwards, so it neither reads nor disturbs the real data. Prints:

(a) end to end: ticks published as fast as the producer can into a topic, then
    the rate at which the MongoDB sink connector (same config as
    connectors/mongo-sink-prices.json) lands them in MongoDB, sampled from its
    committed offsets, over at least 60 s; the count is checked at the end;
(b) the store's ceiling: direct pymongo bulk upserts (ReplaceOne by string
    `_id`, upsert) in batches of the connector's size, into a scratch collection;
(c) the original design's way: a Python consumer decoding each record and doing
    one `insert_one` per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient, ReplaceOne

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import stack  # noqa: E402
from control.connectors import ConnectClient, load, placeholder_values
from control.topics import TopicSpec, create_missing  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from producer.sources.simulated import SimulatedMarket  # noqa: E402

RUN = time.strftime("%Y%m%d%H%M%S")  # a fresh topic, connector and consumer group each run
TOPIC = f"bench-prices-{RUN}"
CONNECTOR = f"bench-mongo-sink-{RUN}"
COLLECTION = "bench_prices"


def publish(settings: Settings, count: int) -> float:
    """Publish `count` simulated ticks to TOPIC as fast as possible; returns ticks/s."""
    codec = AvroCodec(settings, TOPIC, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20, "compression.type": "lz4", "queue.buffering.max.messages": 200_000})
    market = SimulatedMarket(["BTC", "ETH", "XRP"], seed=1, start_ms=int(time.time() * 1000) - count * 1000)
    ticks = market.ticks()
    started = time.perf_counter()
    for _ in range(count):
        tick = next(ticks)
        value = codec.encode(tick.to_record(published_at=int(time.time() * 1000)))
        while True:
            try:
                producer.produce(TOPIC, key=tick.symbol.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return count / (time.perf_counter() - started)


def committed(settings: Settings, admin: AdminClient) -> int:
    request = [ConsumerGroupTopicPartitions(f"connect-{CONNECTOR}", [TopicPartition(TOPIC, 0)])]
    (future,) = admin.list_consumer_group_offsets(request).values()
    return max(future.result().topic_partitions[0].offset, 0)


def end_to_end(settings: Settings, count: int, mongo: MongoClient) -> dict:
    base = load(settings.connectors_dir / "mongo-sink-prices.json", placeholder_values(settings)).config
    config = {**base, "topics": TOPIC, "collection": COLLECTION, "errors.deadletterqueue.topic.name": f"{TOPIC}-dlq"}
    create_missing(settings, [TopicSpec(name, 1, {}, "benchmark") for name in (TOPIC, f"{TOPIC}-dlq")])
    print(f"(a) publishing {count:,} ticks to {TOPIC} ...", flush=True)
    produce_rate = publish(settings, count)
    print(f"    producer: {produce_rate:,.0f} ticks/s", flush=True)

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    connect = ConnectClient(settings.connect_url)
    started = time.perf_counter()
    connect.put_config(CONNECTOR, config)
    connect.wait_running(CONNECTOR)
    samples, last = [], (started, 0)
    while True:
        time.sleep(5)
        now, done = time.perf_counter(), committed(settings, admin)
        samples.append((done - last[1]) / (now - last[0]))
        last = (now, done)
        print(f"    sink: {done:,} / {count:,} committed, {samples[-1]:,.0f}/s in the last 5 s", flush=True)
        if done >= count:
            break
    elapsed = last[0] - started
    landed = mongo[settings.database][COLLECTION].count_documents({})  # exact (an estimate can be off)
    return {"rate": count / elapsed, "seconds": elapsed, "landed": landed, "producer_rate": produce_rate,
            "median_5s": statistics.median(samples[1:-1] or samples)}


def store_ceiling(settings: Settings, docs: int, mongo: MongoClient, batch: int) -> float:
    collection = mongo[settings.database]["bench_store"]
    collection.drop()
    market = SimulatedMarket(["BTC", "ETH", "XRP"], seed=2, start_ms=0).ticks()
    records = [next(market).to_record(published_at=0) for _ in range(docs)]
    started = time.perf_counter()
    for i in range(0, docs, batch):
        collection.bulk_write([ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in records[i:i + batch]])
    rate = docs / (time.perf_counter() - started)
    assert collection.estimated_document_count() == docs
    collection.drop()
    return rate


def one_insert_per_message(settings: Settings, seconds: float, mongo: MongoClient) -> float:
    collection = mongo[settings.database]["bench_baseline"]
    collection.drop()
    codec = AvroCodec(settings, TOPIC, "tick")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"bench-baseline-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    inserted, started = 0, None
    while started is None or time.perf_counter() - started < seconds:
        message = consumer.poll(1)
        if message is None or message.error():
            continue
        started = started or time.perf_counter()
        collection.insert_one(codec.decode(message.value()))
        inserted += 1
    rate = inserted / (time.perf_counter() - started)
    consumer.close()
    collection.drop()
    return rate


def cleanup(settings: Settings, mongo: MongoClient) -> None:
    requests.delete(f"{settings.connect_url}/connectors/{CONNECTOR}", timeout=30)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.delete_topics([TOPIC, f"{TOPIC}-dlq"])
    admin.delete_consumer_groups([f"connect-{CONNECTOR}"])
    for name in (COLLECTION, "bench_store", "bench_baseline"):
        mongo[settings.database][name].drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=160_000, help="(a) ticks to publish; enough for 60 s or more")
    parser.add_argument("--store-docs", type=int, default=20_000, help="(b) documents to upsert")
    parser.add_argument("--baseline-seconds", type=float, default=60, help="(c) how long to run the baseline")
    args = parser.parse_args()
    settings = Settings()
    mongo = MongoClient(settings.mongodb_uri)
    batch = int(load(settings.connectors_dir / "mongo-sink-prices.json", placeholder_values(settings))
                .config["max.batch.size"])
    try:
        a = end_to_end(settings, args.ticks, mongo)
        print(f"(b) {args.store_docs:,} bulk upserts by _id, batches of {batch} ...", flush=True)
        b = store_ceiling(settings, args.store_docs, mongo, batch)
        print(f"(c) one insert_one per consumed message for {args.baseline_seconds:.0f} s ...", flush=True)
        c = one_insert_per_message(settings, args.baseline_seconds, mongo)
    finally:
        cleanup(settings, mongo)

    memory = {row["name"]: row["rss_mib"] for row in stack.status(settings)}
    print()
    print(f"(a) end to end, producer -> Kafka -> Connect -> MongoDB: {a['rate']:,.0f} ticks/s "
          f"({args.ticks:,} ticks in {a['seconds']:.0f} s; median 5 s window {a['median_5s']:,.0f}/s; "
          f"{a['landed']:,} documents landed; producer alone {a['producer_rate']:,.0f}/s)")
    print(f"(b) store ceiling, pymongo bulk upserts by _id:          {b:,.0f} docs/s")
    print(f"(c) original design, one insert per message:            {c:,.0f} docs/s")
    print(f"ratios: a/b = {a['rate'] / b:.2f}, a/c = {a['rate'] / c:.2f}, b/c = {b / c:.2f}")
    print("stack memory (RSS, MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items() if v)
          + f"; total {sum(v or 0 for v in memory.values()):.0f}")
    return 0 if a["landed"] == args.ticks else 1


if __name__ == "__main__":
    sys.exit(main())
