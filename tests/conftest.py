"""Test order: unit tests first (fast, no services), then integration tests, the ones that stop and start the
whole stack after them, the fault-injection suite (which kills parts of the stack), and last the failure tests
on a local cluster of their own (tests/cluster)."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from cryptopulse.settings import Settings
from tests import children, namespace


def _rank(item: pytest.Item) -> int:
    path = str(item.fspath)
    if "/cluster/" in path:
        return 4
    if "/faults/" in path:
        return 3
    if item.get_closest_marker("restarts_stack") is not None:
        return 2
    # the session `settings` fixture puts the test namespace in os.environ until the session ends: whatever
    # requests it runs after every test that reads the defaults
    return 1 if "/integration/" in path or "settings" in getattr(item, "fixturenames", ()) else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs the stack (`stack`: everything after the unit tests), then order: unit, integration, stack
    restarts, faults, cluster. `./run test` runs each part in a session of its own: `-m "not stack"`, then the
    rest (tests that set the namespace in os.environ never share a process with those that read the defaults)."""
    for item in items:
        for folder in ("integration", "faults", "cluster"):
            if f"/{folder}/" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, folder))
        if _rank(item) > 0:
            item.add_marker(pytest.mark.stack)
    items.sort(key=_rank)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """The test namespace's settings (tests/namespace.py), with its own sinks deployed; what the tests made in it
    is removed at the end. Requested only by tests that need the stack, which run after the unit tests."""
    with namespace.test_stack() as settings:
        yield settings


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report ends with what its child processes said (tests/children.py): the assertion alone
    rarely tells why a command exited 1."""
    report = yield
    if report.failed:
        report.sections.extend(children.sections())
    if report.when == "teardown":
        children.forget_ended()
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._cryptopulse_exitstatus = exitstatus  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a failed test left running (a Kafka client, a processor) would keep the interpreter from exiting,
    and CI from ending: name such threads, then exit with pytest's status anyway."""
    import os
    import sys
    import threading

    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if left:
        print(f"\nthreads still running after the tests: {', '.join(left)}; exiting anyway", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(config, "_cryptopulse_exitstatus", 1))
