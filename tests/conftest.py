"""Test order: unit tests first (fast, no services), then integration tests, the ones that stop and start the
whole stack after them, and the fault-injection suite (which kills parts of the stack) last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cryptopulse.settings import Settings
from tests import namespace


def _rank(item: pytest.Item) -> int:
    path = str(item.fspath)
    if "/faults/" in path:
        return 3
    if item.get_closest_marker("restarts_stack") is not None:
        return 2
    return 1 if "/integration/" in path else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs the stack, then order: unit, integration, stack restarts, faults."""
    for item in items:
        for folder in ("integration", "faults"):
            if f"/{folder}/" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, folder))
    items.sort(key=_rank)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """The test namespace's settings (tests/namespace.py), with its own sinks deployed; what the tests made in it
    is removed at the end. Requested only by tests that need the stack, which run after the unit tests."""
    with namespace.test_stack() as settings:
        yield settings
