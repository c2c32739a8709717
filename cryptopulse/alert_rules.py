"""Price-alert rules on their topic: read them, add one, remove one — the one implementation behind
`control alerts` (control/cli.py) and the dashboard's rule form (webui/rules.py).

The rules topic is compacted, keyed by rule id: adding publishes the rule (Avro, schemas/alert_rule.avsc),
removing publishes a tombstone under its id. `streams alerts` follows the topic and evaluates ticks against
what is there (docs/alerts.md). Every function blocks (Kafka, the registry): the dashboard runs them in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptopulse import alert_channels, topics
from cryptopulse.alert import Rule, rule_id, rule_source
from cryptopulse.avro import AvroCodec
from cryptopulse.channel import Channel
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings
from cryptopulse.text import terminal_safe


def ensure_topic(settings: Settings) -> None:
    wanted = settings.alert_rules_topic
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == wanted])


def codec(settings: Settings) -> AvroCodec:
    return AvroCodec(settings, settings.alert_rules_topic, "alert_rule")


def make_rule(key: str, record: dict[str, Any]) -> Rule:
    """A rule from its record, checked as what a person gives is (cryptopulse/alert.py: the id, the source, the
    rule's own constraints); its key must be its id. ConfigError with the reason otherwise."""
    rule = Rule.from_record(record)
    rule_id(rule.id)
    if rule.source is not None:
        rule_source(rule.source)
    if rule.id != key:
        raise ConfigError(f"its key is not its id {terminal_safe(rule.id)!r}")
    return rule


def read(settings: Settings) -> topics.Definitions[Rule]:
    """The rules topic read to its end: every live rule by key, and the keys whose record no reader takes (not
    Avro, an unknown schema, a value a rule may not have, a key that is not its id) with why."""
    if not topics.end_offsets_by_partition(settings, settings.alert_rules_topic):
        return topics.Definitions({}, {})
    return topics.latest_by_key(settings, settings.alert_rules_topic, codec(settings).decode, make_rule)


def rules(settings: Settings) -> list[Rule]:
    """Every live rule, oldest first (records no reader takes left out: `read` says which)."""
    return sorted(read(settings).values.values(), key=lambda r: (r.created, r.id))


def key_of(found: topics.Definitions[Rule], text: str) -> str | None:
    """The key a person means by `text`: a key as it is, or as it is shown (`terminal_safe`: a key holding escapes
    is shown escaped, and removed by what is shown)."""
    for key in (*found.values, *found.bad):
        if text in (key, terminal_safe(key)):
            return key
    return None


def add(settings: Settings, rule: Rule, timeout: float = 30.0) -> Rule:
    """Publish a new rule (made by cryptopulse.alert's `new_rule` from values its rule_* functions checked); a
    channel it names that does not exist is a ConfigError (`control channels list`)."""
    if rule.channels:
        check_channels(rule, alert_channels.channels(settings))
    ensure_topic(settings)
    publish(settings, rule.id, rule, timeout)
    return rule


def check_channels(rule: Rule, channels: Iterable[Channel]) -> None:
    """ConfigError naming the channels the rule names that do not exist, or that its owner may not use (another
    account's: cryptopulse/channel.py `usable_by`)."""
    known = sorted(c.name for c in channels if c.usable_by(rule.owner))
    unknown = [name for name in rule.channels if name not in known]
    if unknown:
        raise ConfigError(f"no channel {', '.join(unknown)}{'' if rule.owner is None else ' of ' + rule.owner} "
                          f"(channels: {', '.join(known) or 'none'}; add one with `control channels add`)")


def publish(settings: Settings, key: str, rule: Rule | None, timeout: float = 30.0) -> tuple[int, int]:
    """A rule under its key, or None: the key's tombstone; where it landed (partition, offset)."""
    value = None if rule is None else codec(settings).encode(rule.to_record())
    return topics.publish_one(settings, settings.alert_rules_topic, key, value, timeout,
                              "the rule" if rule else "the rule's removal")


def remove(settings: Settings, text: str, timeout: float = 30.0) -> tuple[str, Rule | None]:
    """Publish the tombstone of the rule under a key (as it is or as it is shown), whatever its record holds: a
    record no reader takes is removed too. (its key, its rule or None); ConfigError when there is no such key."""
    found = read(settings)
    key = key_of(found, text)
    if key is None:
        known = ", ".join(sorted(terminal_safe(k) for k in (*found.values, *found.bad))) or "none"
        raise ConfigError(f"no rule {terminal_safe(text)!r} (rules: {known}; see `control alerts list`)")
    publish(settings, key, None, timeout)
    return key, found.values.get(key)
