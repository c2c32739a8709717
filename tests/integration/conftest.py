"""Integration tests run against the real native stack (`control stack up`, `control deploy-connectors`).

They never skip: an unreachable service is a failure, with the command that fixes it. They work in a
namespace of their own (tests/namespace.py: database `cryptopulse_test`, `test-*` topics, sinks, groups
and subjects), made before the first of them and removed after the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pymongo import MongoClient

from cryptopulse.settings import Settings


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

