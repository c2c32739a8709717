"""The tests' own corner of the stack: a database, topics, sinks, consumer groups and registry subjects of
their own, made before the integration tests and removed after them, so running the tests never shows up
in the user's `crypto_db`, dashboard or `control schemas list`.

Everything the tests create is named with `PREFIX` (topics, subjects, connectors, groups) or is the
database `DATABASE`; `clean()` removes exactly those.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import requests
from pymongo import MongoClient

from control import connectors, stack
from cryptopulse.settings import Settings

PREFIX = "test-"
DATABASE = "cryptopulse_test"

ENVIRONMENT = {
    "MONGODB_DATABASE": DATABASE,
    "PRICES_TOPIC": f"{PREFIX}crypto-prices",
    "PRICES_DLQ_TOPIC": f"{PREFIX}crypto-prices-dlq",
    "CANDLES_TOPIC": f"{PREFIX}crypto-candles-1m",
    "CANDLES_DLQ_TOPIC": f"{PREFIX}crypto-candles-1m-dlq",
    "CONNECTOR_PREFIX": PREFIX,
    "STREAMS_GROUP": f"{PREFIX}cryptopulse-streams",
    "WEBUI_GROUP_PREFIX": f"{PREFIX}cryptopulse-webui",
}


@contextlib.contextmanager
def environment() -> Iterator[None]:
    """The test namespace in os.environ (inherited by every `control`, `producer`, `streams` subprocess)."""
    saved = {name: os.environ.get(name) for name in ENVIRONMENT}
    os.environ.update(ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PROBES = {
    "Kafka": stack.kafka_ready,
    "the schema registry": stack.registry_ready,
    "Kafka Connect": stack.connect_ready,
    "FerretDB": stack.ferretdb_ready,
}


@contextlib.contextmanager
def test_stack() -> Iterator[Settings]:
    """Check the stack is up, enter the test namespace, deploy its sinks; remove it all on the way out."""
    down = [name for name, probe in PROBES.items() if not probe()]
    if down:
        pytest.fail(f"not reachable: {', '.join(down)}. "
                    "Start the stack: `control stack up && control deploy-connectors`")
    with environment():
        settings = Settings()
        clean(settings)
        connectors.deploy(settings, say=lambda line: None)
        try:
            yield settings
        finally:
            clean(settings)


def ours(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith(f"connect-{PREFIX}")


def clean(settings: Settings) -> dict[str, int]:
    """Remove every connector, topic, consumer group and registry subject named `test-...`, and the test database.

    Returns how many of each were removed. The user's names never start with the prefix.
    """
    from control import topics

    assert settings.database == DATABASE and settings.prices_topic.startswith(PREFIX), "not the test namespace"
    removed = {"connectors": 0, "topics": 0, "groups": 0, "subjects": 0}
    for name in requests.get(f"{settings.connect_url}/connectors", timeout=10).json():
        if ours(name):
            requests.delete(f"{settings.connect_url}/connectors/{name}", timeout=30)
            removed["connectors"] += 1
    admin = topics.admin(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if ours(t)]
    for future in (admin.delete_topics(names, operation_timeout=30).values() if names else []):
        with contextlib.suppress(Exception):
            future.result()
    removed["topics"] = len(names)
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid if ours(g.group_id)]
    for future in (admin.delete_consumer_groups(groups).values() if groups else []):
        with contextlib.suppress(Exception):  # a group with live members (a connector being removed) goes later
            future.result()
    removed["groups"] = len(groups)
    registry = settings.schema_registry_url
    for subject in requests.get(f"{registry}/subjects", timeout=10).json():
        if ours(subject):
            requests.delete(f"{registry}/subjects/{subject}", timeout=10)
            requests.delete(f"{registry}/subjects/{subject}", params={"permanent": "true"}, timeout=10)
            removed["subjects"] += 1
    client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=10_000)
    try:
        client.drop_database(DATABASE)
    finally:
        client.close()
    return removed
