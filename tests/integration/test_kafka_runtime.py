"""cryptopulse/kafka.py's Reader on the real broker: reading a topic to its end when the end holds nothing to deliver.

A topic written in transactions ends with commit markers, and one whose last records were aborted ends with records a
read_committed consumer never sees. librdkafka's position() stays unknown until a record is delivered, so the end is
known from the partition's end event: before, a roll-up restarted after a day without candles waited for ever for the
candles topic "to its end" (tests/integration/test_rollups.py timed out on it).
"""

from __future__ import annotations

import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cryptopulse import kafka


def transactional_producer(settings) -> Producer:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"test-{uuid.uuid4()}"})
    producer.init_transactions(30)
    return producer


def test_a_reader_catches_up_over_a_tail_of_markers_and_aborted_records(settings):
    topic = f"{settings.prices_topic}-markers-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        producer = transactional_producer(settings)
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"kept")
        producer.commit_transaction(30)  # offset 0: the record, 1: its commit marker
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"aborted")
        producer.abort_transaction(30)  # 2: a record read_committed never delivers, 3: its abort marker
        seen: list[bytes] = []

        def decode(message):
            return message.value()

        for start in (kafka.BEGINNING, {(topic, 0): 1}, kafka.END):
            reader = kafka.Reader(settings, "test-markers", [topic], decode, start=start,
                                  config={"isolation.level": "read_committed"})
            try:
                reader.catch_up(seen.extend, timeout=20)  # TimeoutError before the fix, for each start
            finally:
                reader.close(5)
        assert seen == [b"kept"]  # from the beginning: the one committed record, and the end after it
    finally:
        admin.delete_topics([topic])[topic].result(30)
