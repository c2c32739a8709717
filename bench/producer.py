"""Producer throughput: ticks/s serialized and published, Avro against JSON, and the encoded sizes.

    python bench/producer.py [--ticks 200000]

Serialization runs without services; publishing needs the stack (`control stack up`) and
writes to its own topic `bench-producer-<run>`, deleted afterwards. Publishing goes through
the producer's own TickPublisher (acks=all, idempotence, lz4), flushed at the end, so the
rate counts ticks Kafka acknowledged. In the same run, the same Avro bytes are produced by a bare
confluent-kafka Producer of the same configuration (no per-tick work at all): the publisher's rate
is printed as a share of that ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import scratch  # noqa: E402
from cryptopulse import kafka  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from producer.publisher import TickPublisher  # noqa: E402
from producer.sources.simulated import SimulatedMarket  # noqa: E402


def rate(n: int, started: float) -> float:
    return n / (time.perf_counter() - started)


async def publish_all(publisher: TickPublisher, ticks: list) -> None:
    for tick in ticks:
        await publisher.publish(tick)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000)
    args = parser.parse_args()
    topic = f"bench-producer-{time.strftime('%Y%m%d%H%M%S')}"
    settings = dataclasses.replace(Settings(), prices_topic=topic)
    market = SimulatedMarket(["BTC", "ETH", "XRP"], seed=3, start_ms=int(time.time() * 1000)).ticks()
    ticks = [next(market) for _ in range(args.ticks)]
    now = int(time.time() * 1000)

    codec = AvroCodec(settings, topic, "tick")
    started = time.perf_counter()
    avro = [codec.encode(t.to_record(published_at=now)) for t in ticks]
    avro_rate = rate(len(ticks), started)
    started = time.perf_counter()
    plain = [json.dumps(t.to_record(published_at=now)).encode() for t in ticks]
    json_rate = rate(len(ticks), started)

    publisher = TickPublisher(settings)
    started = time.perf_counter()
    asyncio.run(publish_all(publisher, ticks))
    left = publisher.flush(120)
    publish_rate = rate(len(ticks), started)

    raw = kafka.producer(settings, "bench-raw")  # kafka.RELIABLE, as the publisher's
    keys = [t.symbol.encode() for t in ticks]
    started = time.perf_counter()
    for key, value in zip(keys, avro, strict=True):
        while True:
            try:
                raw.produce(topic, value, key)
                break
            except BufferError:
                raw.poll(0.01)
        raw.poll(0)
    raw_left = raw.flush(120)
    raw_rate = rate(len(ticks), started)
    scratch.remove(settings, "bench-producer-")  # its topic and registry subject

    avro_size = sum(map(len, avro)) / len(avro)
    json_size = sum(map(len, plain)) / len(plain)
    print(f"ticks: {args.ticks:,}")
    print(f"serialize, Avro (confluent AvroSerializer, Confluent framing): {avro_rate:>10,.0f} ticks/s")
    print(f"serialize, JSON (json.dumps):                                  {json_rate:>10,.0f} ticks/s")
    print(f"publish (serialize + produce, acks=all, flushed):              {publish_rate:>10,.0f} ticks/s"
          f"  (delivered {publisher.stats.delivered:,}, failed {publisher.stats.failed}, undelivered {left})")
    print(f"raw produce of the same Avro bytes (confluent-kafka, same config):  {raw_rate:>10,.0f} ticks/s"
          f"  (undelivered {raw_left})")
    print(f"publisher / raw produce:                                       {publish_rate / raw_rate:>10.2f}")
    print(f"encoded size: Avro {avro_size:.1f} bytes, JSON {json_size:.1f} bytes ({avro_size / json_size:.0%})")
    return 0 if publisher.stats.delivered == args.ticks else 1


if __name__ == "__main__":
    sys.exit(main())
