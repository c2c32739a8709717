"""The local cluster the scale-out failure tests run on: `control stack up --brokers 3 --connect-workers 2` in a
state folder of its own, its ports moved by 10,000 so it runs beside the default stack, with the project's
topics in 3 partitions replicated 3 times (min.insync.replicas 2) and 3 tasks per sink. Started once for the
cluster tests (they run last: tests/conftest.py), stopped and removed afterwards.

CLUSTER_TEST_STATE_DIR names a folder to use instead (kept afterwards, so a running cluster serves several runs
while one works on these tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptopulse.settings import Settings
from tests import children
from tests.namespace import environment

PORT_OFFSET = 10_000
ENVIRONMENT = {"PRICES_PARTITIONS": "3", "CANDLES_PARTITIONS": "3", "SINK_TASKS_MAX": "3"}
# addresses and replication of the default stack, if the session set them: the cluster's own follow its layout
FROM_LAYOUT = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "MONGODB_URI",
               "TOPIC_REPLICATION_FACTOR", "TOPIC_MIN_INSYNC_REPLICAS")


def control(*args: str, timeout: float = 600) -> str:
    result = children.run(["control", *args], timeout=timeout)
    assert result.returncode == 0, f"control {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def cluster() -> Iterator[Settings]:
    kept = os.environ.get("CLUSTER_TEST_STATE_DIR")
    state = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="cryptopulse-cluster-"))
    with environment({**ENVIRONMENT, "CRYPTOPULSE_STATE_DIR": str(state)}, unset=FROM_LAYOUT):
        try:
            control("stack", "up", "--brokers", "3", "--connect-workers", "2", "--port-offset", str(PORT_OFFSET))
            control("deploy-connectors")
            yield Settings()
        finally:
            if not kept:
                control("stack", "down")
                shutil.rmtree(state, ignore_errors=True)
