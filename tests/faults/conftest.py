"""The fault-injection suite: parts of the real native stack are killed with -9 while the demo's processes run.

It runs last (tests/conftest.py orders it), in the tests' own namespace, and needs the stack's supervisor
(`control stack up` starts it), which brings every killed part back as it would in the demo.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cryptopulse.settings import Settings
from tests import namespace


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with namespace.test_stack() as settings:
        yield settings
