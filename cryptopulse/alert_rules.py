"""Price-alert rules on their topic: read them, add one, remove one — the one implementation behind
`control alerts` (control/cli.py) and the dashboard's rule form (webui/rules.py).

The rules topic is compacted, keyed by rule id: adding publishes the rule (Avro, schemas/alert_rule.avsc),
removing publishes a tombstone under its id. `streams alerts` follows the topic and evaluates ticks against
what is there (docs/alerts.md). Every function blocks (Kafka, the registry): the dashboard runs them in a thread.
"""

from __future__ import annotations

from cryptopulse import alert_channels, topics
from cryptopulse.alert import Rule
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings


def ensure_topic(settings: Settings) -> None:
    wanted = settings.alert_rules_topic
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == wanted])


def rules(settings: Settings) -> list[Rule]:
    """Every live rule: the topic read to its end, the last version of each id, tombstones removing (and a rule no
    processor would take)."""
    if not topics.end_offsets_by_partition(settings, settings.alert_rules_topic):
        return []
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    found = topics.latest_by_key(settings, settings.alert_rules_topic,
                                 lambda value: Rule.from_record(codec.decode(value)))
    return sorted(found.values(), key=lambda r: (r.created, r.id))


def add(settings: Settings, rule: Rule, timeout: float = 30.0) -> Rule:
    """Publish a new rule (made by cryptopulse.alert's `new_rule` from values its rule_* functions checked); a
    channel it names that does not exist is a ConfigError (`control channels list`)."""
    if rule.channels:
        known = {c.name for c in alert_channels.channels(settings)}
        unknown = [name for name in rule.channels if name not in known]
        if unknown:
            raise ConfigError(f"no channel {', '.join(unknown)} (channels: {', '.join(sorted(known)) or 'none'}; "
                              "add one with `control channels add`)")
    ensure_topic(settings)
    codec = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
    topics.publish_one(settings, settings.alert_rules_topic, rule.id, codec.encode(rule.to_record()), timeout,
                       "the rule")
    return rule


def remove(settings: Settings, rule_id: str, timeout: float = 30.0) -> Rule:
    """Publish the tombstone of a live rule; ConfigError when there is no such rule."""
    live = {r.id: r for r in rules(settings)}
    if rule_id not in live:
        known = ", ".join(sorted(live)) or "none"
        raise ConfigError(f"no rule {rule_id!r} (rules: {known}; see `control alerts list`)")
    topics.publish_one(settings, settings.alert_rules_topic, rule_id, None, timeout, "the rule's removal")
    return live[rule_id]
