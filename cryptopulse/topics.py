"""The project's Kafka topics: their settings in one place, created and described by `control topics`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import ConsumerGroupTopicPartitions, Message, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from cryptopulse import kafka
from cryptopulse.candle import INTERVALS
from cryptopulse.errors import ConfigError, DeliveryError
from cryptopulse.kafka import admin
from cryptopulse.settings import Settings
from cryptopulse.store import Retention, candle_collection
from cryptopulse.times import DAY_MS, HOUR_MS

# The longest a dashboard session may last (WEBUI_SESSION_ABSOLUTE_HOURS is at most this): a logout's record is
# kept that long, then no cookie it ended can be valid anyway.
SESSION_KEPT_MS = 31 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    about: str
    replication: int = 1


def project_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline writes, with the settings it is created with: the prices and candles topics'
    partitions, and every topic's replication, from the settings (docs/scaling.md); the rest one partition."""
    replicated = {"min.insync.replicas": str(settings.min_insync_replicas)} if settings.replication_factor > 1 else {}
    return [dataclasses.replace(spec, config={**spec.config, **replicated}, replication=settings.replication_factor)
            for spec in _specs(settings)]


def _specs(settings: Settings) -> list[TopicSpec]:
    retention = Retention()
    return [
        TopicSpec(settings.prices_topic, settings.prices_partitions,
                  {"retention.ms": str(7 * DAY_MS), "cleanup.policy": "delete"},
                  "ticks (Avro, key = symbol); the sink keeps them in MongoDB, Kafka keeps a week"),
        TopicSpec(settings.prices_dlq_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "records the sink could not convert or write, with error headers"),
        *(candle_topic(settings, interval, retention.keep_ms(candle_collection(interval))) for interval in INTERVALS),
        TopicSpec(settings.candles_dlq_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "candles the candles sink could not convert or write, with error headers"),
        # compacted: one record per (stage, symbol, source), rewritten at each commit; what a restarted roll-up
        # starts from (docs/rollups.md). Small segments, so the cleaner keeps it near one record a key.
        TopicSpec(settings.candles_state_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                                                    "segment.ms": str(10 * 60_000),
                                                    "min.cleanable.dirty.ratio": "0.1"},
                  "the roll-ups' checkpoints per (stage, symbol, source) (Avro); compacted"),
        # compacted: the latest version of each rule (key = rule id) is kept for ever; a tombstone removes it
        TopicSpec(settings.alert_rules_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)},
                  "price-alert rules (Avro, key = rule id; a tombstone removes one); compacted"),
        TopicSpec(settings.alerts_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "alerts fired by `streams alerts` (Avro, key = alert _id, written in transactions)"),
        TopicSpec(settings.alerts_dlq_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "alerts the alerts sink could not convert or write, with error headers"),
        # compacted: the alert processor's armed/fired state per (rule, symbol, source), committed in the same
        # transaction as the alerts and the consumed offsets, read back by a restarted processor
        TopicSpec(settings.alerts_state_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)},
                  "the alert processor's state per (rule, symbol, source) (Avro); compacted"),
        # accounts (docs/security.md). Compacted: the latest version of each account and token is kept for ever (a
        # removed one as a record saying so, without its hash); a logout's session end as long as a session lasts.
        TopicSpec(settings.users_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)},
                  "dashboard accounts (Avro, key = name; argon2id hashes); compacted"),
        TopicSpec(settings.api_tokens_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)},
                  "API tokens (Avro, key = token id; SHA-256 of the secret only); compacted"),
        TopicSpec(settings.sessions_ended_topic, 1,
                  {"cleanup.policy": "compact,delete", "retention.ms": str(SESSION_KEPT_MS),
                   "min.compaction.lag.ms": str(60_000)},
                  "dashboard sessions ended by a logout (Avro, key = session id), kept as long as a session lasts"),
        TopicSpec(settings.audit_topic, 1, {"retention.ms": str(365 * DAY_MS), "cleanup.policy": "delete"},
                  "the audit trail: logins, failed logins, changes to accounts, tokens, rules (Avro); `control audit`"),
        TopicSpec(settings.accounts_dlq_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "accounts, tokens or audit events the accounts sink could not write, with error headers"),
        # compacted: the latest version of each alert channel (key = name) is kept for ever; a tombstone removes it
        TopicSpec(settings.alert_channels_topic, 1, {"cleanup.policy": "compact",
                                                     "min.compaction.lag.ms": str(60_000)},
                  "alert channels: webhook, ntfy, telegram, email (Avro, key = name; never a secret); compacted"),
        TopicSpec(settings.alert_deliveries_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "every outcome of delivering an alert to a channel (Avro, key = channel|alert id, in transactions)"),
        TopicSpec(settings.alert_deliveries_dlq_topic, 1,
                  {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "delivery outcomes the deliveries sink could not convert or write, with error headers"),
        TopicSpec(settings.alerts_undelivered_topic, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"},
                  "alerts `streams notify` gave up on: the alert as fired, the channel and the reason in headers"),
        TopicSpec(settings.retention_topic, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
                  "what each retention run deleted, per collection (Avro, key = collection); compacted"),
    ]


# A candle topic's segments roll this often, so that the log cleaner can compact the updates of open buckets away
# (the active segment is never cleaned) and delete what is past the retention.
SEGMENT_MS = {"1m": HOUR_MS, "5m": 6 * HOUR_MS, "15m": 6 * HOUR_MS}


def candle_topic(settings: Settings, interval: str, keep_ms: int | None) -> TopicSpec:
    """One interval's candles, keyed by `_id`: compacted (a bucket's updates and final replace each other) and,
    unless kept for ever, deleted past the interval's retention, so Kafka holds no more than the store."""
    config = {"cleanup.policy": "compact" if keep_ms is None else "compact,delete",
              "retention.ms": str(-1 if keep_ms is None else keep_ms), "min.compaction.lag.ms": str(60_000),
              "segment.ms": str(SEGMENT_MS.get(interval, DAY_MS))}
    kept = "kept for ever" if keep_ms is None else f"kept {keep_ms / DAY_MS:g} d"
    how = "rolled up from ticks by `streams run`" if interval == "1m" else "rolled up by `streams run` (the cascade)"
    return TopicSpec(settings.candle_topic(interval), settings.candles_partitions, config,
                     f"{interval} candles (Avro, key = candle _id), {how}; compacted, {kept}")


def align_configs(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Set on the project's existing topics every config their spec has and they lack or differ in (a topic made by
    an older version: the candles topic was compacted for ever); returns the names changed."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=10).topics)
    wanted = [s for s in (specs or project_topics(settings)) if s.name in existing]
    if not wanted:
        return []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in wanted]
    current = {resource.name: future.result() for resource, future in client.describe_configs(resources).items()}
    changes = []
    for spec in wanted:
        entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                   for name, value in spec.config.items() if current[spec.name].get(name) is None
                   or current[spec.name][name].value != value]
        if entries:
            changes.append(ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries))
    for future in (client.incremental_alter_configs(changes).values() if changes else []):
        future.result()
    return [c.name for c in changes]


def create_missing(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the project's topics that do not exist yet, and align the configs of those that do
    (`align_configs`); returns the names created."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=10).topics)
    missing = [s for s in (specs or project_topics(settings)) if s.name not in existing]
    align_configs(settings, [s for s in (specs or project_topics(settings)) if s.name in existing])
    if not missing:
        return []
    futures = client.create_topics([NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication,
                                             config=s.config) for s in missing])
    for future in futures.values():
        try:
            future.result()
        except Exception as error:  # noqa: BLE001 - another process creating it at the same time is fine
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return [s.name for s in missing]


def add_partitions(settings: Settings, name: str, count: int) -> int:
    """Raise a topic's partition count to `count`; returns the count it had. Kafka cannot lower it, and a count
    already reached changes nothing. A ConfigError says why not (no such topic, fewer than it has)."""
    client = admin(settings)
    metadata = client.list_topics(timeout=10).topics.get(name)  # all topics: asking for one may auto-create it
    if metadata is None or metadata.error is not None:
        raise ConfigError(f"no topic {name!r}: `control topics` lists the project's topics")
    current = len(metadata.partitions)
    if count < current:
        raise ConfigError(f"{name} has {current} partitions: Kafka cannot lower a topic's partition count "
                          f"(create a new topic and copy the records instead)")
    if count > current:
        (future,) = client.create_partitions([NewPartitions(name, count)]).values()
        future.result()
    return current


def end_offsets_by_partition(settings: Settings, name: str) -> dict[int, int]:
    """{partition: end offset} of one topic ({} when it does not exist)."""
    metadata = admin(settings).list_topics(name, timeout=10).topics.get(name)
    if metadata is None or metadata.error is not None:
        return {}
    consumer = kafka.consumer(settings, "control", "cryptopulse-control-probe", {"log_level": 0})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in metadata.partitions}
    finally:
        consumer.close()


def read_to_end(settings: Settings, name: str, timeout: float = 60) -> list[Message]:
    """Every record of a topic from its beginning up to its end as of now, partition by partition in order
    ([] when it does not exist)."""
    if not end_offsets_by_partition(settings, name):
        return []
    records: list[Message] = []
    reader = kafka.Reader(settings, "control", [name], lambda message: message, group="cryptopulse-control-probe",
                          config={"log_level": 0})
    try:
        reader.catch_up(records.extend, timeout)
    finally:
        reader.close()
    return records


T = TypeVar("T")


def publish_one(settings: Settings, topic: str, key: str | bytes, value: bytes | None, timeout: float = 30.0,
                what: str = "the record") -> tuple[int, int]:
    """One record (or None: a tombstone) acknowledged by every in-sync replica; its (partition, offset). DeliveryError
    when it is not within `timeout` seconds (a rule, a channel: the definitions a person adds and removes)."""
    producer = kafka.producer(settings, "definitions", {"message.timeout.ms": int(timeout * 1000), "log_level": 0,
                                                        "linger.ms": 0})
    errors: list[str] = []
    where: list[tuple[int, int]] = []

    def delivered(error: Any, message: Message) -> None:
        if error:
            errors.append(str(error))
        else:
            where.append((message.partition(), message.offset()))

    producer.produce(topic, key=key.encode() if isinstance(key, str) else key, value=value, on_delivery=delivered)
    if producer.flush(timeout + 5) or errors:
        raise DeliveryError(f"{what} was not delivered to {topic} at {settings.kafka_bootstrap}: "
                            f"{errors[0] if errors else 'timed out'}")
    return where[0]


@dataclass
class Definitions(Generic[T]):
    """A compacted topic of definitions read to its end: the latest value of each key, and the keys whose latest
    value no reader takes (key -> why)."""

    values: dict[str, T]
    bad: dict[str, str]


def latest_by_key(settings: Settings, topic: str, decode_value: Callable[[bytes], dict[str, Any]],
                  make: Callable[[str, dict[str, Any]], T]) -> Definitions[T]:
    """A compacted topic of definitions read to its end (`kafka.definition` for each record)."""
    values: dict[str, T] = {}
    bad: dict[str, str] = {}
    for message in read_to_end(settings, topic):
        change = kafka.definition(message, decode_value, make)
        if change is None:
            continue
        key, value = change
        values.pop(key, None)
        bad.pop(key, None)
        if isinstance(value, kafka.Bad):
            bad[key] = value.reason
        elif value is not None:
            values[key] = value
    return Definitions(values, bad)


def committed_offsets(settings: Settings, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """{partition: offset} the consumer group has committed on `topic` (-1 where it has none)."""
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])]
    client = admin(settings)  # keep it alive until the future resolves: a collected client never answers
    (future,) = client.list_consumer_group_offsets(request).values()
    return {tp.partition: tp.offset for tp in future.result(timeout=30).topic_partitions}


def end_offsets(settings: Settings, names: list[str]) -> dict[str, int]:
    """Records written to each existing topic (sum of its partitions' end offsets)."""
    counts = {name: end_offsets_by_partition(settings, name) for name in names}
    return {name: sum(ends.values()) for name, ends in counts.items() if ends}


def describe(settings: Settings) -> list[dict]:
    """Partitions, retention, cleanup policy, record count and size on disk of each project topic."""
    client = admin(settings)
    metadata = client.list_topics(timeout=10).topics
    specs = [s for s in project_topics(settings) if s.name in metadata]
    configs = {}
    if specs:
        futures = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs])
        configs = {resource.name: future.result() for resource, future in futures.items()}
    sizes = _sizes(settings, [s.name for s in specs])
    counts = end_offsets(settings, [s.name for s in specs])
    rows = []
    for spec in project_topics(settings):
        if spec.name not in metadata:
            rows.append({"topic": spec.name, "exists": False, "about": spec.about})
            continue
        config = configs[spec.name]
        retention = int(config["retention.ms"].value)
        rows.append({
            "topic": spec.name, "exists": True, "partitions": len(metadata[spec.name].partitions),
            "retention": "forever" if retention < 0 else f"{retention / DAY_MS:g} d",
            "cleanup.policy": config["cleanup.policy"].value, "records": counts.get(spec.name, 0),
            "bytes": sizes.get(spec.name), "about": spec.about,
        })
    return rows


def _sizes(settings: Settings, names: list[str]) -> dict[str, int]:
    """Bytes on disk per topic (blocks allocated: Kafka's index files are sparse), read from the native stack's log
    dirs (unknown under Docker)."""
    data = settings.state_dir / "kafka" / "data"
    sizes: dict[str, int] = {}
    for name in names:
        folders = [p for p in data.glob(f"{name}-*") if p.name.rsplit("-", 1)[-1].isdigit()] if data.is_dir() else []
        if folders:
            sizes[name] = sum(f.stat().st_blocks for folder in folders for f in folder.iterdir() if f.is_file()) * 512
    return sizes
