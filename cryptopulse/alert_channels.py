"""Alert channels on their topic: read them, add one, remove one — behind `control channels` (control/cli.py), the
check of a rule's `--notify` (cryptopulse/alert_rules.py) and the dashboard's rule form (webui/rules.py).

The channels topic is compacted, keyed by channel name: adding publishes the channel (Avro,
schemas/alert_channel.avsc), removing publishes a tombstone under its name. `streams notify` follows the topic
(docs/alerts.md). Every function blocks (Kafka, the registry): the dashboard runs them in a thread.
"""

from __future__ import annotations

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.channel import Channel
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings


def codec(settings: Settings) -> AvroCodec:
    return AvroCodec(settings, settings.alert_channels_topic, "alert_channel")


def ensure_topic(settings: Settings) -> None:
    wanted = settings.alert_channels_topic
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name == wanted])


def channels(settings: Settings) -> list[Channel]:
    """Every live channel, by name: the topic read to its end, tombstones removing (and a channel the notifier
    would refuse)."""
    if not topics.end_offsets_by_partition(settings, settings.alert_channels_topic):
        return []
    values = codec(settings)
    found = topics.latest_by_key(settings, settings.alert_channels_topic,
                                 lambda value: Channel.from_record(values.decode(value)))
    return sorted(found.values(), key=lambda c: c.name)


def find(settings: Settings, name: str) -> Channel:
    """The live channel of that name; ConfigError naming the others when there is none."""
    live = {c.name: c for c in channels(settings)}
    if name not in live:
        raise ConfigError(f"no channel {name!r} (channels: {', '.join(sorted(live)) or 'none'}; see "
                          "`control channels list`)")
    return live[name]


def add(settings: Settings, channel: Channel, timeout: float = 30.0) -> Channel:
    """Publish a new channel (made by cryptopulse.channel's `new_channel`). A name in use is a ConfigError: remove
    the channel first (what it had not delivered is not carried over to the new one)."""
    ensure_topic(settings)
    if any(c.name == channel.name for c in channels(settings)):
        raise ConfigError(f"a channel {channel.name!r} exists: remove it first (`control channels rm "
                          f"{channel.name}`), or choose another name")
    topics.publish_one(settings, settings.alert_channels_topic, channel.name,
                       codec(settings).encode(channel.to_record()), timeout, "the channel")
    return channel


def remove(settings: Settings, name: str, timeout: float = 30.0) -> Channel:
    """Publish the tombstone of a live channel; ConfigError when there is no such channel."""
    channel = find(settings, name)
    topics.publish_one(settings, settings.alert_channels_topic, name, None, timeout, "the channel's removal")
    return channel
