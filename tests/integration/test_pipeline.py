"""Producer → Kafka (Avro) → Connect + MongoDB sink → crypto_db.prices, on the real stack."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime

import requests
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from control.status import dead_letters as dead_letter_census
from tests import children
from tests.integration.conftest import wait_for
from tests.namespace import PREFIX

SINK = f"{PREFIX}mongo-sink-prices"  # the tests' own sink (tests/namespace.py)


def run_producer(*args: str) -> children.Finished:
    result = children.run(["producer", "run", *args], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def sink_committed_offset(settings) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(f"connect-{SINK}", [TopicPartition(settings.prices_topic, 0)])]
    )
    (result,) = [f.result() for f in futures.values()]
    return max(tp.offset for tp in result.topic_partitions)


def sink_states(settings) -> list[str]:
    status = requests.get(f"{settings.connect_url}/connectors/{SINK}/status", timeout=10).json()
    return [status["connector"]["state"], *(t["state"] for t in status["tasks"])]


def topic_end_offset(settings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_ten_thousand_ticks_land_once_each_even_when_published_twice(settings, mongo):
    # A window of event time no other test or demo uses: a random day in 2001.
    start = int(datetime(2001, 1, 1).timestamp() * 1000) + random.randrange(365) * 86_400_000
    interval = 1000
    count = 10_000
    window = {"ts": {"$gte": datetime.fromtimestamp(start / 1000).astimezone(),
                     "$lt": datetime.fromtimestamp((start + count * interval) / 1000).astimezone()}}
    prices = mongo[settings.database]["prices"]
    assert prices.count_documents(window) == 0

    args = ["--fast", "--count", str(count), "--start-ms", str(start), "--interval-ms", str(interval),
            "--symbols", "BTC,ETH,XRP", "--seed", str(start)]
    run_producer(*args)
    wait_for(lambda: prices.count_documents(window) >= count, 240, f"{count} documents in {settings.database}.prices")

    # Written by the connector: its consumer group has committed past every record we published.
    end = topic_end_offset(settings, settings.prices_topic)
    wait_for(lambda: sink_committed_offset(settings) >= end, 60, "the sink to commit its offsets")

    doc = prices.find_one(window)
    assert isinstance(doc["_id"], str) and doc["_id"].count("|") == 2
    assert isinstance(doc["ts"], datetime)  # a BSON date
    assert isinstance(doc["price"], float)  # a BSON double
    assert doc["source"] == "simulated"
    by_symbol = {s: prices.count_documents({**window, "symbol": s}) for s in ("BTC", "ETH", "XRP")}
    assert sum(by_symbol.values()) == count and min(by_symbol.values()) >= count // 3

    # The same ticks again (a replay): each is written once already, so the sink's insert is refused as a
    # duplicate; the connector keeps running and the dead-letter census counts them as redelivered, not broken.
    before = dead_letter_census(settings, settings.prices_dlq_topic)
    run_producer(*args)
    end = topic_end_offset(settings, settings.prices_topic)
    wait_for(lambda: sink_committed_offset(settings) >= end, 240, "the sink to consume the second run")
    assert prices.count_documents(window) == count
    assert sink_states(settings) == ["RUNNING", "RUNNING"]
    after = dead_letter_census(settings, settings.prices_dlq_topic, budget_s=60)
    assert after["duplicate"] - before.get("duplicate", 0) == count
    assert after["unconvertible"] + after["rejected"] == before.get("unconvertible", 0) + before.get("rejected", 0)
    assert after["uncounted"] == 0


def test_a_batch_mixing_redelivered_and_new_ticks_writes_every_new_one(settings, mongo):
    """Unordered inserts: the duplicates in a batch are refused one by one, the new ticks beside them land."""
    start = int(datetime(2002, 1, 1).timestamp() * 1000) + random.randrange(365) * 86_400_000
    first, total = 1_250, 3_000  # the second run repeats the first 1,250 ticks, in the middle of a batch
    window = {"ts": {"$gte": datetime.fromtimestamp(start / 1000).astimezone(),
                     "$lt": datetime.fromtimestamp((start + total * 1000) / 1000).astimezone()}}
    prices = mongo[settings.database]["prices"]
    common = ["--fast", "--start-ms", str(start), "--interval-ms", "1000", "--symbols", "BTC,ETH,XRP",
              "--seed", str(start)]
    run_producer(*common, "--count", str(first))
    end = topic_end_offset(settings, settings.prices_topic)
    wait_for(lambda: sink_committed_offset(settings) >= end, 240, "the sink to consume the first run")
    before = dead_letter_census(settings, settings.prices_dlq_topic)

    run_producer(*common, "--count", str(total))
    end = topic_end_offset(settings, settings.prices_topic)
    wait_for(lambda: sink_committed_offset(settings) >= end, 240, "the sink to consume the second run")
    assert prices.count_documents(window) == total
    after = dead_letter_census(settings, settings.prices_dlq_topic, budget_s=60)
    assert after["duplicate"] - before.get("duplicate", 0) == first
    assert after["rejected"] == before.get("rejected", 0)
    assert sink_states(settings) == ["RUNNING", "RUNNING"]


def test_bytes_that_are_not_avro_go_to_the_dead_letter_topic(settings):
    marker = f"not-avro-{uuid.uuid4()}".encode()
    dlq_start = topic_end_offset(settings, settings.prices_dlq_topic)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.prices_topic, key=b"BTC", value=marker)
    framed_garbage = b"\x00\x00\x00\x00\x01garbage after a valid-looking header"
    producer.produce(settings.prices_topic, key=b"BTC", value=framed_garbage)
    assert producer.flush(10) == 0

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"dlq-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(settings.prices_dlq_topic, 0, dlq_start)])
    found = []

    def dead_letters():
        message = consumer.poll(1)
        if message is not None and not message.error():
            found.append(message)
        return len(found) >= 2

    try:
        wait_for(dead_letters, 90, "two records in the dead-letter topic", interval=0)
    finally:
        consumer.close()
    first = next(m for m in found if m.value() == marker)
    headers = dict(first.headers())
    assert headers["__connect.errors.topic"] == settings.prices_topic.encode()
    assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert b"__connect.errors.exception.class.name" in {k.encode() for k in headers}

    assert sink_states(settings) == ["RUNNING", "RUNNING"]

    # `control status` tells them apart from redelivered duplicates and names the last one's cause
    census = wait_for(lambda: (c := dead_letter_census(settings, settings.prices_dlq_topic))["uncounted"] == 0 and c,
                      30, "the dead-letter census")
    assert census["unconvertible"] >= 2
    assert census["last_broken"]["why"].startswith("VALUE_CONVERTER")
    assert census["last_broken"]["offset"] >= dlq_start + 1


def test_deploy_connectors_twice_reports_unchanged(settings):
    first = children.run(["control", "deploy-connectors"], timeout=120)
    second = children.run(["control", "deploy-connectors"], timeout=120)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert f"{SINK}: unchanged, RUNNING" in second.stdout


def test_the_registry_refuses_an_incompatible_tick_schema(settings):
    base = settings.schema_registry_url
    subject = f"{PREFIX}compat-check-{uuid.uuid4()}"
    tick = (settings.schemas_dir / "tick.avsc").read_text()
    ok = requests.post(f"{base}/subjects/{subject}/versions", json={"schema": tick}, timeout=10)
    assert ok.status_code == 200, ok.text
    # Adding a required field without a default breaks BACKWARD compatibility.
    schema = json.loads(tick)
    schema["fields"].append({"name": "exchange_fee", "type": "double"})
    refused = requests.post(f"{base}/subjects/{subject}/versions", json={"schema": json.dumps(schema)}, timeout=10)
    assert refused.status_code == 409, refused.text
    schema["fields"][-1]["default"] = 0.0
    accepted = requests.post(f"{base}/subjects/{subject}/versions", json={"schema": json.dumps(schema)}, timeout=10)
    assert accepted.status_code == 200, accepted.text
