"""Integration tests run against the real native stack (`control stack up`, `control deploy-connectors`).

They never skip: an unreachable service is a failure, with the command that fixes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pymongo import MongoClient

from control import stack
from cryptopulse.settings import Settings

PROBES = {
    "Kafka": stack.kafka_ready,
    "the schema registry": stack.registry_ready,
    "Kafka Connect": stack.connect_ready,
    "FerretDB": stack.ferretdb_ready,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests; the ones that stop and start the whole stack run after all the others."""
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("restarts_stack") is not None)


@pytest.fixture(scope="session")
def settings() -> Settings:
    down = [name for name, probe in PROBES.items() if not probe()]
    if down:
        pytest.fail(f"not reachable: {', '.join(down)}. "
                    "Start the stack: `control stack up && control deploy-connectors`")
    return Settings()


@pytest.fixture(scope="session")
def mongo(settings: Settings) -> Iterator[MongoClient]:
    client = MongoClient(settings.mongodb_uri, tz_aware=True)
    yield client
    client.close()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll until predicate() is truthy; fail with `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {value!r})")

