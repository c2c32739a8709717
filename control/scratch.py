"""Scratch resources: what tests and benchmarks create beside the user's pipeline, and removing it again.

Everything scratch is named with a prefix (`test-`, `bench-`): topics, consumer groups, registry subjects,
connectors (and their `connect-<name>` groups); a scratch database has a name of its own. `remove()` takes
exactly those away, so `control schemas list`, `control topics` and the user's `crypto_db` never show them.
"""

from __future__ import annotations

import contextlib

import requests
from pymongo import MongoClient

from cryptopulse import kafka
from cryptopulse.settings import Settings, sink_group


def environment(prefix: str, database: str) -> dict[str, str]:
    """The variables that put every process of a pipeline (topics, sinks, groups, database) under `prefix`."""
    return {
        "MONGODB_DATABASE": database,
        "PRICES_TOPIC": f"{prefix}crypto-prices",
        "PRICES_DLQ_TOPIC": f"{prefix}crypto-prices-dlq",
        "CANDLES_TOPIC_PREFIX": f"{prefix}crypto-candles",
        "ALERT_RULES_TOPIC": f"{prefix}crypto-alert-rules",
        "ALERTS_TOPIC": f"{prefix}crypto-alerts",
        "ALERTS_DLQ_TOPIC": f"{prefix}crypto-alerts-dlq",
        "ALERTS_STATE_TOPIC": f"{prefix}crypto-alerts-state",
        "ALERT_CHANNELS_TOPIC": f"{prefix}crypto-alert-channels",
        "ALERT_DELIVERIES_TOPIC": f"{prefix}crypto-alert-deliveries",
        "ALERT_DELIVERIES_DLQ_TOPIC": f"{prefix}crypto-alert-deliveries-dlq",
        "ALERTS_UNDELIVERED_TOPIC": f"{prefix}crypto-alerts-undelivered",
        "NOTIFY_GROUP": f"{prefix}cryptopulse-notify",
        "RETENTION_TOPIC": f"{prefix}crypto-retention",
        "USERS_TOPIC": f"{prefix}crypto-users",
        "API_TOKENS_TOPIC": f"{prefix}crypto-api-tokens",
        "SESSIONS_ENDED_TOPIC": f"{prefix}crypto-sessions-ended",
        "AUDIT_TOPIC": f"{prefix}crypto-audit",
        "ACCOUNTS_DLQ_TOPIC": f"{prefix}crypto-accounts-dlq",
        "ALERTS_GROUP": f"{prefix}cryptopulse-alerts",
        "CONNECTOR_PREFIX": prefix,
        "STREAMS_GROUP": f"{prefix}cryptopulse-streams",
        "WEBUI_GROUP_PREFIX": f"{prefix}cryptopulse-webui",
    }


def remove(settings: Settings, prefix: str, database: str | None = None) -> dict[str, int]:
    """Delete every connector, topic, consumer group and registry subject whose name starts with `prefix`
    (groups: also `connect-<prefix>...`), and `database` if given. Returns how many of each went."""
    if len(prefix) < 3:
        raise ValueError(f"refusing to remove everything named {prefix!r}...: give a longer prefix")

    def ours(name: str) -> bool:
        return name.startswith(prefix) or name.startswith(sink_group(prefix))

    removed = {"connectors": 0, "topics": 0, "groups": 0, "subjects": 0}
    with contextlib.suppress(requests.ConnectionError):  # no Connect, no connectors to remove
        for name in requests.get(f"{settings.connect_url}/connectors", timeout=10).json():
            if ours(name):
                requests.delete(f"{settings.connect_url}/connectors/{name}", timeout=30)
                removed["connectors"] += 1
    admin = kafka.admin(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if ours(t)]
    for future in (admin.delete_topics(names, operation_timeout=30).values() if names else []):
        with contextlib.suppress(Exception):  # gone already
            future.result()
    removed["topics"] = len(names)
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid if ours(g.group_id)]
    for future in (admin.delete_consumer_groups(groups).values() if groups else []):
        with contextlib.suppress(Exception):  # a group with live members (a connector going away) goes next time
            future.result()
    removed["groups"] = len(groups)
    registry = settings.schema_registry_url
    for subject in requests.get(f"{registry}/subjects", timeout=10).json():
        if ours(subject):
            requests.delete(f"{registry}/subjects/{subject}", timeout=10)
            requests.delete(f"{registry}/subjects/{subject}", params={"permanent": "true"}, timeout=10)
            removed["subjects"] += 1
    if database:
        client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=10_000)
        try:
            client.drop_database(database)
        finally:
            client.close()
    return removed
