"""Price-alert rules on their topic: read them, add one, remove one — the one implementation behind
`control alerts` (control/cli.py) and the dashboard's rule form (webui/rules.py).

The rules topic is compacted, keyed by rule id: adding publishes the rule (Avro, schemas/alert_rule.avsc),
removing publishes a tombstone under its id. `streams alerts` follows the topic and evaluates ticks against
what is there (docs/alerts.md). Every function blocks (Kafka, the registry): the dashboard runs them in a thread.
"""

from __future__ import annotations

from cryptopulse import kafka, topics
from cryptopulse.alert import Rule
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError, DeliveryError
from cryptopulse.settings import Settings


def ensure_topic(settings: Settings) -> None:
    wanted = settings.alert_rules_topic
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == wanted])


def publish(settings: Settings, key: str, value: bytes | None, timeout: float = 30.0) -> None:
    """One record (a rule, or None: its tombstone) on the rules topic, acknowledged by every in-sync replica;
    DeliveryError when it is not within `timeout` seconds."""
    producer = kafka.producer(settings, "rules", {"message.timeout.ms": int(timeout * 1000), "log_level": 0,
                                                  "linger.ms": 0})
    errors: list[str] = []
    producer.produce(settings.alert_rules_topic, key=key.encode(), value=value,
                     on_delivery=lambda error, _message: errors.append(str(error)) if error else None)
    if producer.flush(timeout + 5) or errors:
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


def add(settings: Settings, rule: Rule, timeout: float = 30.0) -> Rule:
    """Publish a new rule (made by cryptopulse.alert's `new_rule` from values its rule_* functions checked)."""
    ensure_topic(settings)
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    publish(settings, rule.id, codec.encode(rule.to_record()), timeout)
    return rule


def remove(settings: Settings, rule_id: str, timeout: float = 30.0) -> Rule:
    """Publish the tombstone of a live rule; ConfigError when there is no such rule."""
    live = {r.id: r for r in rules(settings)}
    if rule_id not in live:
        known = ", ".join(sorted(live)) or "none"
        raise ConfigError(f"no rule {rule_id!r} (rules: {known}; see `control alerts list`)")
    publish(settings, rule_id, None, timeout)
    return live[rule_id]
