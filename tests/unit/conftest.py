"""Fixtures for the source tests: the fake exchanges of tests/fakes.py, started per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeHttp, FakeWs, Sleeps


@pytest.fixture
def http() -> Iterator[FakeHttp]:
    server = FakeHttp()
    yield server
    server.close()


@pytest.fixture
def ws() -> Iterator[FakeWs]:
    server = FakeWs()
    yield server
    server.close()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
