"""Ingest throughput on the native stack: the pipeline, the store's best write path, the old ways, a replay.

    python bench/ingest.py [--ticks 720000] [--replay 100000] [--store-docs 20000] [--seed-seconds 60]
                           [--candles 6000] [--backfill-hours 0] [--connectors DIR] [--set KEY=VALUE ...]

Needs the stack (`control stack up`). It works in a namespace of its own: topics, connectors, consumer
groups and registry subjects named `bench-<run>-...`, the databases `cryptopulse_bench*`; it removes all of
it afterwards, so it neither reads nor disturbs the real data. In one run it measures:

(a) end-to-end: ticks published as fast as the producer can into a topic, then the rate at which the
    MongoDB sink connector (connectors/mongo-sink-prices.json, or --connectors' copy, with --set overrides)
    lands them in MongoDB: from the connector's creation until the last tick is in the collection, at least
    60 s with the default --ticks; the count is checked at the end;
(b) the store's best write path: pymongo InsertOne, unordered, in batches of the sink's size and of 500,
    into an empty collection, the best of 3 before (a) and 3 after (d): a ceiling on a shared machine; and
    what whole batches of duplicates cost there (each one is refused). The direct writes (b, c, f) run in
    a database of their own (FerretDB keeps one SQLite file each);
(c) the sink's old way: ReplaceOne upserts by `_id`, ordered, batches of 50;
(d) the original design's way: a Python consumer decoding each record and doing one insert_one per message;
(e) a replay: the first --replay ticks published a second time while the connector is paused, then the
    rate at which it gets through them; the document count must be unchanged, the connector RUNNING, and
    the dead-letter census (`control status`) must count them as redelivered duplicates, not broken records;
(f) candles: the candles sink's write (ReplaceOne upserts, batches of 50) of open candles being updated;
(g) with --backfill-hours: `control backfill` of BTC, ETH, XRP from the simulated market into a namespace
    of its own with both sinks deployed from the connector files: its wall time, and how long the candles
    sink needs after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from confluent_kafka import Consumer, KafkaException, Producer
from pymongo import InsertOne, MongoClient, ReplaceOne
from pymongo.errors import BulkWriteError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import backfill, status  # noqa: E402
from control.connectors import ConnectClient, deploy, load, placeholder_values  # noqa: E402
from control.stack import processes  # noqa: E402
from cryptopulse import kafka, topics  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.candle import Candle  # noqa: E402
from cryptopulse.settings import Settings, sink_group  # noqa: E402
from producer.sources.simulated import SimulatedMarket  # noqa: E402

RUN = time.strftime("%Y%m%d%H%M%S")  # fresh topics, connectors and consumer groups each run
PREFIX = f"bench-{RUN}-"  # every topic, connector, consumer group and registry subject of the run
TOPIC = f"{PREFIX}prices"
DLQ = f"{TOPIC}-dlq"
CONNECTOR = f"{PREFIX}mongo-sink-prices"
DATABASE = "cryptopulse_bench"
STORE_DATABASE = f"{DATABASE}_store"  # the direct writes get a database (a SQLite file) of their own
COLLECTION = "prices"
SYMBOLS = ["BTC", "ETH", "XRP"]
START_MS = 1_600_000_000_000  # event time of the first tick: the same ticks for the run and the replay


def ticks(count: int):
    market = SimulatedMarket(SYMBOLS, seed=1, start_ms=START_MS).ticks()
    return (next(market) for _ in range(count))


def publish(settings: Settings, count: int) -> float:
    """Publish the first `count` ticks to TOPIC as fast as possible; returns ticks/s."""
    codec = AvroCodec(settings, TOPIC, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20, "compression.type": "lz4", "queue.buffering.max.messages": 200_000})
    started = time.perf_counter()
    for tick in ticks(count):
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


def patiently(fn, *args, minutes: float = 3):
    """fn(*args), tried again for a few minutes while Kafka does not answer (a restart must not end a run)."""
    deadline = time.monotonic() + minutes * 60
    while True:
        try:
            return fn(*args)
        except (KafkaException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def end_offset(settings: Settings, topic: str) -> int:
    """Records written to `topic`, all partitions."""
    return patiently(lambda: sum(topics.end_offsets_by_partition(settings, topic).values()))


def committed(settings: Settings) -> int:
    """Records the sink has committed, all partitions."""
    partitions = list(patiently(lambda: topics.end_offsets_by_partition(settings, TOPIC)))
    return patiently(lambda: sum(max(offset, 0) for offset in topics.committed_offsets(
        settings, sink_group(CONNECTOR), TOPIC, partitions).values()))


def sink_config(settings: Settings, overrides: dict[str, str]) -> dict[str, str]:
    base = load(settings.connectors_dir / "mongo-sink-prices.json", placeholder_values(settings)).config
    return {**base, "topics": TOPIC, "database": DATABASE, "collection": COLLECTION,
            "errors.deadletterqueue.topic.name": DLQ, **overrides}


def connector_state(settings: Settings) -> str:
    state = requests.get(f"{settings.connect_url}/connectors/{CONNECTOR}/status", timeout=10).json()
    return "/".join([state["connector"]["state"], *(t["state"] for t in state["tasks"])])


def end_to_end(settings: Settings, count: int, config: dict[str, str], mongo: MongoClient) -> dict:
    prices_spec = topics.project_topics(settings)
    create_missing = [dataclasses.replace(prices_spec[0], name=TOPIC), dataclasses.replace(prices_spec[1], name=DLQ)]
    topics.create_missing(settings, create_missing)
    print(f"(a) publishing {count:,} ticks to {TOPIC} ...", flush=True)
    produce_rate = publish(settings, count)
    print(f"    producer: {produce_rate:,.0f} ticks/s; starting the sink", flush=True)
    last_ids = {t.symbol: t.id for t in ticks(count)}  # a symbol's ticks are on one partition, written in order:
    collection = mongo[DATABASE][COLLECTION]           # when each symbol's last tick is in, all are

    connect = ConnectClient(settings.connect_url)
    started = time.perf_counter()
    connect.put_config(CONNECTOR, config)
    connect.wait_running(CONNECTOR)
    samples, last, last_report = [], (started, 0), started
    while any(collection.find_one({"_id": i}, {"_id": 1}) is None for i in last_ids.values()):
        time.sleep(0.2)
        now = time.perf_counter()
        if now - last_report >= 5:
            done = committed(settings)
            samples.append((done - last[1]) / (now - last[0]))
            last, last_report = (now, done), now
            print(f"    sink: {done:,} / {count:,} committed, {samples[-1]:,.0f}/s in the last 5 s", flush=True)
    elapsed = time.perf_counter() - started
    landed = collection.count_documents({})  # exact (an estimate can be off)
    return {"rate": count / elapsed, "seconds": elapsed, "landed": landed, "producer_rate": produce_rate,
            "median_5s": statistics.median(samples[1:-1] or samples or [0])}


def replay(settings: Settings, count: int, landed_before: int, mongo: MongoClient) -> dict:
    """The first `count` ticks again, published while the sink is paused; then how fast it gets through them."""
    connect = ConnectClient(settings.connect_url)
    requests.put(f"{settings.connect_url}/connectors/{CONNECTOR}/pause", timeout=10).raise_for_status()
    while not connector_state(settings).startswith("PAUSED"):
        time.sleep(0.5)
    dlq_before = end_offset(settings, DLQ)
    census_before = status.dead_letters(settings, DLQ)
    print(f"(e) replay: publishing the first {count:,} ticks again, the sink paused ...", flush=True)
    publish(settings, count)
    target = end_offset(settings, TOPIC)
    started = time.perf_counter()
    requests.put(f"{settings.connect_url}/connectors/{CONNECTOR}/resume", timeout=10).raise_for_status()
    connect.wait_running(CONNECTOR)
    # With inserts every replayed tick is refused as a duplicate and reported once: the dead-letter topic's end
    # says when it is through. With upserts (the old way) only the committed offsets tell, every 5 s or so.
    while end_offset(settings, DLQ) < dlq_before + count and committed(settings) < target:
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    while committed(settings) < target:  # and its offsets are committed (at the next offset flush)
        time.sleep(0.5)
    counted = time.perf_counter()
    census = status.dead_letters(settings, DLQ, budget_s=120)  # what `control status` does, but to the end
    counted = time.perf_counter() - counted
    landed = mongo[DATABASE][COLLECTION].count_documents({})
    return {"rate": count / elapsed, "seconds": elapsed, "before": landed_before, "after": landed,
            "state": connector_state(settings),
            "duplicates": census["duplicate"] - census_before.get("duplicate", 0),
            "broken": (census["unconvertible"] + census["rejected"]
                       - census_before.get("unconvertible", 0) - census_before.get("rejected", 0)),
            "dlq_mib": dlq_size_mib(settings), "census_s": counted}


def dlq_size_mib(settings: Settings) -> float:
    """MiB the dead-letter topic holds in the native stack's broker data folder (nan if it is not there)."""
    folder = settings.state_dir / "kafka" / "data" / f"{DLQ}-0"
    if not folder.is_dir():
        return float("nan")
    return sum(f.stat().st_size for f in folder.glob("*.log")) / 2**20


def documents(docs: int, seed: int = 2) -> list[dict]:
    market = SimulatedMarket(SYMBOLS, seed=seed, start_ms=0).ticks()
    return [next(market).to_record(published_at=0) for _ in range(docs)]


def store_inserts(mongo: MongoClient, docs: int, batch: int, repeats: int = 3) -> tuple[float, float]:
    """(docs/s of unordered InsertOne batches into an empty collection, the best of `repeats` runs: a ceiling;
    docs/s of the same batches again, every document a duplicate)."""
    collection = mongo[STORE_DATABASE]["bench_store"]
    records = documents(docs)

    def write() -> float:
        started = time.perf_counter()
        for i in range(0, docs, batch):
            with contextlib.suppress(BulkWriteError):
                collection.bulk_write([InsertOne(r) for r in records[i:i + batch]], ordered=False)
        rate = docs / (time.perf_counter() - started)
        assert collection.count_documents({}) == docs
        return rate

    rates = []
    for _ in range(repeats):
        collection.drop()
        rates.append(write())
    duplicates = write()
    collection.drop()
    return max(rates), duplicates


def store_upserts(mongo: MongoClient, docs: int, batch: int = 50) -> float:
    """docs/s of ReplaceOne upserts by `_id`, ordered, into an empty collection: the sink's old way."""
    collection = mongo[STORE_DATABASE]["bench_store"]
    collection.drop()
    records = documents(docs)
    started = time.perf_counter()
    for i in range(0, docs, batch):
        collection.bulk_write([ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in records[i:i + batch]])
    rate = docs / (time.perf_counter() - started)
    assert collection.count_documents({}) == docs
    collection.drop()
    return rate


def candle_upserts(mongo: MongoClient, candles: int, batch: int = 50) -> float:
    """updates/s of open candles replaced by `_id` (ordered, batches of 50), as the candles sink writes them.

    60 candles (20 symbols, 3 sources) are open at once and each update changes its close; the collection
    holds a week of closed candles for those, so lookups by `_id` work on a realistic table.
    """
    collection = mongo[STORE_DATABASE]["bench_candles"]
    collection.drop()
    keys = [(f"C{i:02d}", source) for i in range(20) for source in ("simulated", "binance", "coinbase")]
    week = 7 * 24 * 60
    base = START_MS - START_MS % 60_000

    def candle(symbol: str, source: str, minute: int, close: float) -> dict:
        record = Candle(symbol, source, base + minute * 60_000, 1.0, max(1.0, close), min(1.0, close), close,
                        1, 1.0).to_record()
        return {**record, "start": datetime.fromtimestamp(record["start"] / 1000, UTC)}  # a BSON date, as stored

    history = [candle(s, src, m, 1.0) for m in range(week // 10) for s, src in keys]  # 1/10 of a week: enough rows
    for i in range(0, len(history), 1000):
        collection.insert_many(history[i:i + 1000], ordered=False)
    updates = [candle(s, src, week // 10, 1.0 + n / candles) for n in range(candles // len(keys)) for s, src in keys]
    started = time.perf_counter()
    for i in range(0, len(updates), batch):
        collection.bulk_write([ReplaceOne({"_id": c["_id"]}, c, upsert=True) for c in updates[i:i + batch]])
    rate = len(updates) / (time.perf_counter() - started)
    collection.drop()
    return rate


def one_insert_per_message(settings: Settings, seconds: float, mongo: MongoClient) -> float:
    collection = mongo[STORE_DATABASE]["bench_baseline"]
    collection.drop()
    codec = AvroCodec(settings, TOPIC, "tick")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{PREFIX}seed-way",
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


def backfill_run(settings: Settings, hours: float) -> dict:
    """`control backfill --hours H` of BTC, ETH, XRP from the simulated market, in a namespace of its own."""
    ns = dataclasses.replace(
        settings, database=f"{DATABASE}_backfill", prices_topic=f"{PREFIX}bf-prices",
        prices_dlq_topic=f"{PREFIX}bf-prices-dlq", candles_topic_prefix=f"{PREFIX}bf-candles",
        connector_prefix=f"{PREFIX}bf-")
    print(f"(g) backfill --hours {hours:g} of {', '.join(SYMBOLS)} from the simulated market ...", flush=True)
    deploy(ns, say=lambda line: None)
    started = time.perf_counter()
    published = asyncio.run(backfill.backfill(ns, "simulated", SYMBOLS, hours, out=sys.stdout))
    wall = time.perf_counter() - started
    candle_end = end_offset(ns, ns.candles_topic)
    while max(topics.committed_offsets(ns, sink_group(ns.candles_sink), ns.candles_topic, [0]).get(0, 0), 0) \
            < candle_end:
        time.sleep(0.5)
    candles_done = time.perf_counter() - started
    return {"wall": wall, "points": sum(f.points for f in published.values()), "candles": candle_end,
            "candles_done": candles_done, "namespace": ns}


def remove_namespace(settings: Settings, mongo: MongoClient, prefix: str, databases: tuple[str, ...]) -> None:
    """Every connector, topic, consumer group and registry subject whose name starts with `prefix`; the databases."""
    admin = kafka.admin(settings)
    for name in requests.get(f"{settings.connect_url}/connectors", timeout=10).json():
        if name.startswith(prefix):
            requests.delete(f"{settings.connect_url}/connectors/{name}", timeout=30)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in (admin.delete_topics(names, operation_timeout=30).values() if names else []):
        with contextlib.suppress(Exception):
            future.result()
    ours = (prefix, f"connect-{prefix}")
    deadline = time.monotonic() + 30
    while True:  # a removed connector's group empties a few seconds later
        groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid
                  if g.group_id.startswith(ours)]
        left = []
        for group, future in (admin.delete_consumer_groups(groups).items() if groups else []):
            try:
                future.result()
            except Exception:  # noqa: BLE001 - still has members: again in a moment
                left.append(group)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    registry = settings.schema_registry_url
    for subject in requests.get(f"{registry}/subjects", timeout=10).json():
        if subject.startswith(prefix):
            requests.delete(f"{registry}/subjects/{subject}", timeout=10)
            requests.delete(f"{registry}/subjects/{subject}", params={"permanent": "true"}, timeout=10)
    for database in databases:
        mongo.drop_database(database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=720_000, help="(a) ticks to publish; enough for 60 s or more")
    parser.add_argument("--replay", type=int, default=100_000, help="(e) ticks to publish a second time")
    parser.add_argument("--store-docs", type=int, default=20_000, help="(b, c) documents to write directly")
    parser.add_argument("--seed-seconds", type=float, default=60, help="(d) how long to run the original design")
    parser.add_argument("--candles", type=int, default=6_000, help="(f) candle updates to write")
    parser.add_argument("--backfill-hours", type=float, default=0, help="(g) hours to back-fill; 0: skip it")
    parser.add_argument("--connectors", type=Path, help="connector files to use instead of connectors/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sink setting")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` still removes what the run made
    settings = Settings()
    if args.connectors:
        settings = dataclasses.replace(settings, connectors_dir=args.connectors)
    config = sink_config(settings, dict(kv.split("=", 1) for kv in args.set))
    batch = int(config.get("max.batch.size") or 500)
    mongo = MongoClient(settings.mongodb_uri, tz_aware=True)
    print(f"sink: {config['writemodel.strategy'].rsplit('.', 1)[-1]}, "
          f"{'ordered' if config.get('bulk.write.ordered', 'true') == 'true' else 'unordered'}, "
          f"batches of {batch}" + "".join(f", {kv}" for kv in args.set), flush=True)
    bf = None
    sizes = list(dict.fromkeys((batch, 500)))
    try:
        print(f"(b) {args.store_docs:,} InsertOne, unordered, batches of {' and '.join(map(str, sizes))}, best of 3, "
              "then the same again (all duplicates) ...", flush=True)
        b = {size: store_inserts(mongo, args.store_docs, size) for size in sizes}
        print(f"(c) {args.store_docs:,} ReplaceOne upserts by _id, ordered, batches of 50 ...", flush=True)
        c = store_upserts(mongo, args.store_docs)
        print(f"(f) {args.candles:,} candle updates, ReplaceOne upserts, batches of 50 ...", flush=True)
        f = candle_upserts(mongo, args.candles)
        a = end_to_end(settings, args.ticks, config, mongo)
        e = replay(settings, args.replay, a["landed"], mongo) if args.replay else None
        print(f"(d) one insert_one per consumed message for {args.seed_seconds:.0f} s ...", flush=True)
        d = one_insert_per_message(settings, args.seed_seconds, mongo)
        print("(b) again, after the pipeline's runs (the best of both counts: a ceiling) ...", flush=True)
        b = {size: tuple(map(max, b[size], store_inserts(mongo, args.store_docs, size))) for size in sizes}
        if args.backfill_hours:
            bf = backfill_run(settings, args.backfill_hours)
    finally:
        patiently(remove_namespace, settings, mongo, PREFIX, (DATABASE, STORE_DATABASE, f"{DATABASE}_backfill"))

    best_size, (best, _) = max(b.items(), key=lambda kv: kv[1][0])
    memory = {row["name"]: row["rss_mib"] for row in processes.status(settings)}
    print()
    print(f"end-to-end: {a['rate']:,.0f} ticks/s (producer -> Kafka -> Connect -> MongoDB: {args.ticks:,} ticks in "
          f"{a['seconds']:.0f} s, median 5 s window {a['median_5s']:,.0f}/s, {a['landed']:,} documents landed; "
          f"producer alone {a['producer_rate']:,.0f}/s)")
    print(f"store best: {best:,.0f} docs/s (pymongo InsertOne, unordered, batches of {best_size}; "
          + ", ".join(f"batches of {size}: {rate:,.0f}/s, again as duplicates {dup:,.0f}/s"
                      for size, (rate, dup) in b.items()) + ")")
    print(f"old sink way: {c:,.0f} docs/s (ReplaceOne upserts by _id, ordered, batches of 50)")
    print(f"seed way: {d:,.0f} docs/s (one insert_one per consumed message)")
    if e:
        print(f"replay: {e['rate']:,.0f} ticks/s ({args.replay:,} ticks published again, through in "
              f"{e['seconds']:.0f} s; documents {e['before']:,} before, {e['after']:,} after; connector {e['state']}; "
              f"dead letters: {e['duplicates']:,} redelivered duplicates, {e['broken']:,} broken; "
              f"dead-letter topic {e['dlq_mib']:.1f} MiB, counted by cause in {e['census_s']:.1f} s)")
    print(f"candles: {f:,.0f} updates/s (ReplaceOne upserts of open candles, batches of 50; live needs at most "
          f"one per open candle per second)")
    if bf:
        print(f"backfill: {bf['wall']:.1f} s wall time for --hours {args.backfill_hours:g} ({bf['points']:,} points "
              f"published and stored); the candles sink done {bf['candles_done']:.1f} s after the start "
              f"({bf['candles']:,} candles)")
    print(f"ratios: end-to-end/store best = {a['rate'] / best:.2f}, end-to-end/seed way = {a['rate'] / d:.1f}, "
          f"end-to-end/old sink way = {a['rate'] / c:.1f}, store best/old sink way = {best / c:.1f}"
          + (f", replay/end-to-end = {e['rate'] / a['rate']:.2f}" if e else ""))
    print("stack memory (RSS, MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items() if v)
          + f"; total {sum(v or 0 for v in memory.values()):.0f}")
    inserts = config["writemodel.strategy"].endswith(".InsertOneDefaultStrategy")  # else upserts: no duplicates
    ok = a["landed"] == args.ticks and (not e or (
        e["after"] == e["before"] and e["duplicates"] == (args.replay if inserts else 0) and e["broken"] == 0
        and e["state"] == "RUNNING/RUNNING"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
