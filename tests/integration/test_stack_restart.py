"""`control stack down` stops everything; `control stack up` brings back the same data."""

from __future__ import annotations

import os
import time

import pytest
import requests

from control.stack import probes
from cryptopulse.settings import Settings, StackLayout
from tests import children
from tests.integration.conftest import wait_for

PORTS = StackLayout.of(Settings().state_dir).ports


def stack_processes(state_dir) -> list[str]:
    """Command lines of live processes that mention the state folder (every stack process does)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:150]}")
    return found


def control(*args: str, timeout: float = 600) -> children.Finished:
    result = children.run(["control", *args], timeout=timeout)
    assert result.returncode == 0, f"control {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.restarts_stack
def test_down_stops_everything_and_up_brings_back_the_same_data(settings, mongo):
    prices = mongo[settings.database]["prices"]
    count = prices.count_documents({})
    assert count > 0, "run after the pipeline tests, which leave documents behind"
    subject = f"{settings.schema_registry_url}/subjects/{settings.prices_topic}-value/versions/latest"
    latest = requests.get(subject, timeout=10).json()

    control("stack", "down")
    assert stack_processes(settings.state_dir) == []
    assert [p for p in PORTS if probes.port_open(p)] == []
    status = children.run(["control", "stack", "status"], timeout=120)
    assert status.returncode == 3 and "ready" not in status.stdout

    started = time.monotonic()
    control("stack", "up")
    print(f"stack up after down: {time.monotonic() - started:.0f}s")
    assert prices.count_documents({}) == count
    # Schema ids keep their meaning: the registry's storage is a Kafka topic.
    again = requests.get(subject, timeout=10).json()
    assert (again["id"], again["version"]) == (latest["id"], latest["version"])
    by_id = requests.get(f"{settings.schema_registry_url}/schemas/ids/{latest['id']}", timeout=10)
    assert by_id.ok and '"Tick"' in by_id.json()["schema"]

    # The connector comes back by itself (its config lives in Kafka) and the pipeline still flows.
    control("deploy-connectors")
    start = int(time.time() * 1000) - 60_000
    children.run(["producer", "run", "--fast", "--count", "30", "--start-ms", str(start), "--seed", "99"],
                 check=True, timeout=120)
    wait_for(lambda: prices.count_documents({}) >= count + 30, 120, "30 new ticks after the restart")
