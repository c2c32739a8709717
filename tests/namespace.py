"""The tests' own corner of the stack: a database, topics, sinks, consumer groups and registry subjects of
their own, made before the integration tests and removed after them, so running the tests never shows up
in the user's `crypto_db`, dashboard or `control schemas list`.

Everything the tests create is named with `PREFIX` (topics, subjects, connectors, groups) or is the
database `DATABASE`; `clean()` removes exactly those (control/scratch.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from control import connectors, scratch
from control.stack import probes
from cryptopulse.avro import AvroCodec
from cryptopulse.settings import Settings, StackLayout

# Each worker of a parallel run (pytest-xdist: `./run test` runs the tests that share the stack three at a time) has a
# namespace of its own: `test-gw0-...` and `cryptopulse_test_gw0`.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
PREFIX = f"test-{WORKER}-" if WORKER else "test-"
DATABASE = f"cryptopulse_test_{WORKER}" if WORKER else "cryptopulse_test"

ENVIRONMENT = scratch.environment(PREFIX, DATABASE)


@contextlib.contextmanager
def environment(values: dict[str, str] = ENVIRONMENT, unset: tuple[str, ...] = ()) -> Iterator[None]:
    """`values` in os.environ and `unset` out of it, as they were afterwards: by default the test namespace
    (inherited by every `control`, `producer`, `streams` subprocess)."""
    saved = {name: os.environ.get(name) for name in (*values, *unset)}
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def probes_of(layout: StackLayout) -> dict[str, Callable[[], bool]]:
    """What must answer before the tests start, each under the name a failure shows."""
    return {
        "Kafka": partial(probes.kafka_ready, layout.broker_port(1)),
        "the schema registry": partial(probes.registry_ready, layout.registry_port),
        "Kafka Connect": partial(probes.connect_ready, layout.connect_port(1)),
        "FerretDB": partial(probes.ferretdb_ready, layout.ferretdb_port),
    }


@contextlib.contextmanager
def test_stack() -> Iterator[Settings]:
    """Check the stack is up, enter the test namespace, deploy its sinks; remove it all on the way out."""
    down = [name for name, probe in probes_of(StackLayout.of(Settings().state_dir)).items() if not probe()]
    if down:
        pytest.fail(f"not reachable: {', '.join(down)}. "
                    "Start the stack: `control stack up && control deploy-connectors`")
    with environment(), exclusive(Settings().state_dir / "run" / f"{PREFIX}tests.lock"):
        settings = Settings()
        clean(settings)
        connectors.deploy(settings, say=lambda line: None)
        for topic, schema in ((settings.prices_topic, "tick"), (settings.candles_topic, "candle")):
            AvroCodec(settings, topic, schema).register()  # the subjects exist before any test publishes
        try:
            yield settings
        finally:
            clean(settings)


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """One test session at a time uses the namespace (another one's clean-up would delete our topics)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"\nwaiting for another test session to finish (it holds {lock})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def clean(settings: Settings) -> dict[str, int]:
    """Remove every connector, topic, consumer group and registry subject named `PREFIX...`, and the test database
    (a session without workers, `test-`, removes what workers left too)."""
    assert settings.database == DATABASE and settings.prices_topic.startswith(PREFIX), "not the test namespace"
    return scratch.remove(settings, PREFIX, DATABASE)
