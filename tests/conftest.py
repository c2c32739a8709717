"""Test order: unit tests first (fast, no services), then integration tests, the ones that stop and start the
whole stack after them, and the fault-injection suite (which kills parts of the stack) last."""

from __future__ import annotations

import pytest


def _rank(item: pytest.Item) -> int:
    path = str(item.fspath)
    if "/faults/" in path:
        return 3
    if item.get_closest_marker("restarts_stack") is not None:
        return 2
    return 1 if "/integration/" in path else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)
