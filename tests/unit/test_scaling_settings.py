"""Partitions, replication and the sinks' tasks from the settings (issue 9, docs/scaling.md): one machine's defaults
unchanged, a cluster's values where they belong."""

from __future__ import annotations

import asyncio
import logging

import pytest

from control.cli import parser
from control.connectors import load_all
from cryptopulse import topics
from cryptopulse.errors import ConfigError
from cryptopulse.kafka import KafkaWatch
from cryptopulse.outage import Outage
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from producer.publisher import DeliveryStats, TickPublisher

SCALING = ("PRICES_PARTITIONS", "CANDLES_PARTITIONS", "TOPIC_REPLICATION_FACTOR", "TOPIC_MIN_INSYNC_REPLICAS",
           "SINK_TASKS_MAX")


@pytest.fixture(autouse=True)
def no_scaling_variables(monkeypatch):
    for name in SCALING:
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_are_one_partition_one_replica_one_task():
    settings = Settings()
    specs = topics.project_topics(settings)
    assert {s.partitions for s in specs} == {1} and {s.replication for s in specs} == {1}
    assert not any("min.insync.replicas" in s.config for s in specs), "a single node's topics as before"
    assert {c.config["tasks.max"] for c in load_all(settings)} == {"1"}
    assert {c.config["errors.deadletterqueue.topic.replication.factor"] for c in load_all(settings)} == {"1"}


def test_a_clusters_settings_reach_the_topics_and_the_sinks(monkeypatch):
    monkeypatch.setenv("PRICES_PARTITIONS", "12")
    monkeypatch.setenv("CANDLES_PARTITIONS", "6")
    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SINK_TASKS_MAX", "4")
    settings = Settings()
    specs = {s.name: s for s in topics.project_topics(settings)}
    assert specs[settings.prices_topic].partitions == 12
    assert specs[settings.candles_topic].partitions == 6
    assert specs[settings.prices_dlq_topic].partitions == 1
    assert {s.replication for s in specs.values()} == {3}
    assert {s.config["min.insync.replicas"] for s in specs.values()} == {"2"}  # the default for 3 replicas
    assert specs[settings.candles_topic].config["cleanup.policy"] == "compact,delete"  # bounded by its retention
    connectors = load_all(settings)
    assert {c.config["tasks.max"] for c in connectors} == {"4"}
    assert {c.config["errors.deadletterqueue.topic.replication.factor"] for c in connectors} == {"3"}


@pytest.mark.parametrize(("variables", "message"), [
    ({"PRICES_PARTITIONS": "0"}, "PRICES_PARTITIONS='0'"),
    ({"SINK_TASKS_MAX": "many"}, "SINK_TASKS_MAX='many'"),
    ({"TOPIC_REPLICATION_FACTOR": "2", "TOPIC_MIN_INSYNC_REPLICAS": "3"}, "more than TOPIC_REPLICATION_FACTOR=2"),
])
def test_bad_values_are_one_clear_error(monkeypatch, variables, message):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        Settings()


def test_min_insync_replicas_defaults_to_one_below_three_replicas(monkeypatch):
    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "2")
    assert Settings().min_insync_replicas == 1
    monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert Settings().min_insync_replicas == 2


def test_control_topics_partitions_takes_a_topic_and_a_positive_count():
    args = parser().parse_args(["topics", "partitions", "crypto-prices", "4"])
    assert (args.action, args.topic, args.count) == ("partitions", "crypto-prices", 4)
    with pytest.raises(SystemExit):
        parser().parse_args(["topics", "partitions", "crypto-prices", "0"])


def test_the_producer_keys_each_tick_by_its_symbol():
    """Key = symbol: a symbol's ticks hash to one partition, whatever the partition count (docs/scaling.md)."""
    produced: list[tuple[str, bytes]] = []

    class FakeProducer:
        def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0, headers=None):
            produced.append((topic, key))  # confluent-kafka's signature: produce(topic, value, key, ...)

        def poll(self, timeout):
            return 0

        def __len__(self) -> int:
            return 0

    class FakeCodec:
        def encode(self, record):
            return b"avro"

    publisher = TickPublisher.__new__(TickPublisher)  # no Kafka client, no registry
    publisher.topic, publisher.stats, publisher._codec, publisher._producer = (
        "crypto-prices", DeliveryStats(), FakeCodec(), FakeProducer())
    publisher.kafka = publisher.registry = Outage("test", logging.getLogger("test"))
    publisher.watch, publisher._headers = KafkaWatch(publisher.kafka), None

    async def publish_some() -> None:
        for i, symbol in enumerate(["BTC", "ETH", "BTC", "XRP"]):
            await publisher.publish(Tick(symbol, "simulated", 1_086_000_000_000 + i, 1.0))

    asyncio.run(publish_some())
    assert produced == [("crypto-prices", b"BTC"), ("crypto-prices", b"ETH"), ("crypto-prices", b"BTC"),
                        ("crypto-prices", b"XRP")]
