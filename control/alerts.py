"""`control alerts`: price-alert rules as data in Kafka (the compacted rules topic, key = rule id).

    control alerts add BTC above 70000 [--source binance]
    control alerts add ETH move 5 --minutes 15
    control alerts list
    control alerts rm 1a2b3c4d

Adding publishes the rule (Avro, schemas/alert_rule.avsc); removing publishes a tombstone under its id.
`streams alerts` follows the topic and evaluates ticks against what is there (docs/alerts.md).
"""

from __future__ import annotations

from confluent_kafka import Producer

from cryptopulse import topics
from cryptopulse.alert import Rule, new_rule_id
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError, DeliveryError
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms, now_ms


def _ensure_topic(settings: Settings) -> None:
    wanted = settings.alert_rules_topic
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == wanted])


def _publish(settings: Settings, key: str, value: bytes | None) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": 30_000, "log_level": 0})
    errors: list[str] = []
    producer.produce(settings.alert_rules_topic, key=key.encode(), value=value,
                     on_delivery=lambda error, _message: errors.append(str(error)) if error else None)
    if producer.flush(35) or errors:
        raise DeliveryError(f"the rule was not delivered to {settings.alert_rules_topic} at "
                            f"{settings.kafka_bootstrap}: {errors[0] if errors else 'timed out'}")


def rules(settings: Settings) -> list[Rule]:
    """Every live rule: the topic read to its end, the last version of each id, tombstones removing."""
    if not topics.end_offsets_by_partition(settings, settings.alert_rules_topic):
        return []
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    found: dict[str, Rule | None] = {}
    for message in topics.read_to_end(settings, settings.alert_rules_topic):
        if message.key() is None:
            continue
        key = message.key().decode(errors="replace")
        try:
            found[key] = Rule.from_record(codec.decode(message.value())) if message.value() is not None else None
        except ConfigError:
            found[key] = None  # a rule no processor would take
    return sorted((r for r in found.values() if r is not None), key=lambda r: (r.created, r.id))


def add(settings: Settings, symbol: str, kind: str, value: float, minutes: int | None = None,
        source: str | None = None) -> Rule:
    """Publish a new rule; returns it (with its id)."""
    if kind == "move":
        if minutes is None:
            raise ConfigError("move: give the window with --minutes N")
        rule = Rule(new_rule_id(), symbol, kind, pct=value, minutes=minutes, source=source, created=now_ms())
    else:
        if minutes is not None:
            raise ConfigError(f"{kind}: --minutes is for `move` rules only")
        rule = Rule(new_rule_id(), symbol, kind, price=value, source=source, created=now_ms())
    _ensure_topic(settings)
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    _publish(settings, rule.id, codec.encode(rule.to_record()))
    return rule


def remove(settings: Settings, rule_id: str) -> Rule:
    """Publish the tombstone of a live rule; ConfigError when there is no such rule."""
    live = {r.id: r for r in rules(settings)}
    if rule_id not in live:
        known = ", ".join(sorted(live)) or "none"
        raise ConfigError(f"no rule {rule_id!r} (rules: {known}; see `control alerts list`)")
    _publish(settings, rule_id, None)
    return live[rule_id]


def render(rule_list: list[Rule]) -> str:
    if not rule_list:
        return "no alert rules (add one: control alerts add BTC above 70000)"
    from datetime import UTC, datetime

    lines = []
    for rule in rule_list:
        created = datetime.fromtimestamp(epoch_ms(rule.created) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{rule.id:10} {rule.describe():44} created {created} UTC")
    return "\n".join(lines)
