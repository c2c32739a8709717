"""Failures on the local cluster (3 KRaft brokers, 2 Connect workers: tests/cluster/conftest.py), each while the
producer publishes: nothing lost, nothing doubled, nothing stops.

- A broker killed with -9 (the leader of the partition the test's ticks go to) and kept down 15 s: the producer
  (acks=all, idempotent) never exits and never reports an error; the topic holds every tick it says it
  delivered, once; MongoDB holds each once.
- The Connect worker running prices sink tasks killed with -9 and kept down: its tasks move to the other worker
  (after Connect's scheduled rebalance delay, 20 s here) and every tick lands in MongoDB once.
- One of two roll-up processes killed with -9 mid-minute: the other takes its partitions over and the candles
  equal a one-process roll-up of the same ticks (tests/integration/test_scaling.py's scenario, on the cluster).
The figures of each run go to test-artifacts/cluster.txt.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from control.stack import components, processes
from cryptopulse.settings import Settings
from tests import children
from tests.faults.test_faults import ARTIFACTS, published
from tests.integration.conftest import wait_for
from tests.integration.test_scaling import one_processor_killed

DELIVERED = re.compile(r"delivered (\d+), delivery errors (\d+), reconnects \d+, undelivered (\d+)")


def component(settings: Settings, name: str) -> components.Component:
    return next(c for c in components.components(settings) if c.name == name)


def record(figures: str) -> None:
    print(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "cluster.txt").open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {figures}\n")


class Publishing:
    """`producer run` of the simulated market for two fresh symbols, on one partition of the prices topic."""

    def __init__(self, settings: Settings, log: Path) -> None:
        partitions = len(AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(
            settings.prices_topic, timeout=10).topics[settings.prices_topic].partitions)
        tag = uuid.uuid4().hex[:4].upper()
        # the default partitioner's choice (CRC-32 of the key): both symbols on partition 0
        self.symbols = [s for s in (f"C{tag}{i:03d}" for i in range(1000))
                        if zlib.crc32(s.encode()) % partitions == 0][:2]
        self.partition = 0
        self.log = log
        # stopped with Ctrl-C: started as a terminal starts a foreground command, so that SIGINT is not ignored
        # when this test run was started in the background (tests/children.py)
        self.proc = children.start(
            ["producer", "run", "--source", "simulated", "--symbols", ",".join(self.symbols), "--interval-ms", "50",
             "--metrics-port", "-1"], log, at_a_terminal=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Ctrl-C it; the number of ticks it says Kafka acknowledged (it must have no error and nothing left)."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(120) == 0, self.tail()
        found = DELIVERED.findall(self.log.read_text(errors="replace"))
        assert found, self.tail()
        delivered, errors, undelivered = map(int, found[-1])
        assert (errors, undelivered) == (0, 0), self.tail()
        return delivered

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def producer(cluster: Settings, tmp_path: Path) -> Iterator[Publishing]:
    publishing = Publishing(cluster, tmp_path / "producer.log")
    yield publishing
    publishing.kill()


def leader(settings: Settings, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(settings.prices_topic,
                                                                                       timeout=10)
    return metadata.topics[settings.prices_topic].partitions[partition].leader


def stored_once(settings: Settings, symbols: list[str], ids: list[str], within: float) -> float:
    """Wait until MongoDB holds exactly the ticks `ids`; the seconds it took."""
    started = time.monotonic()
    with MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=30_000) as mongo:
        prices = mongo[settings.database].prices
        wait_for(lambda: prices.count_documents({"symbol": {"$in": symbols}}) >= len(ids), within,
                 f"all {len(ids)} ticks in MongoDB")
        found = [d["_id"] for d in prices.find({"symbol": {"$in": symbols}}, {"_id": 1})]
    assert sorted(found) == sorted(ids), "MongoDB does not hold exactly the published ticks"
    return time.monotonic() - started


def bring_back(settings: Settings, name: str, old_pid: int) -> None:
    processes.release(settings, name)
    part = component(settings, name)
    wait_for(lambda: part.pid(settings.state_dir) not in (None, old_pid) and part.ready(), 240,
             f"the supervisor to bring {name} back")


def test_a_broker_killed_while_the_producer_publishes_loses_and_doubles_nothing(cluster, producer) -> None:
    time.sleep(6)
    node = leader(cluster, producer.partition)
    name = f"kafka-{node}"
    broker = component(cluster, name)
    pid = broker.pid(cluster.state_dir)
    assert pid, f"{name} is not running"
    processes.hold(cluster, name)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: leader(cluster, producer.partition) not in (node, -1), 60, "a new leader for the partition")
    moved_s = time.monotonic() - killed
    time.sleep(max(0.0, 15 - (time.monotonic() - killed)))
    assert producer.running(), f"the producer exited while {name} was down\n{producer.tail()}"
    bring_back(cluster, name, pid)
    time.sleep(6)
    assert producer.running(), producer.tail()
    delivered = producer.stop()

    ticks = published(cluster, set(producer.symbols))
    ids = [t["_id"] for _, t in ticks]
    assert len(ids) == len(set(ids)), "a tick was written to the topic twice"
    assert len(ids) == delivered, f"the producer says {delivered} delivered, the topic holds {len(ids)}"
    times = sorted(t["ts"] for _, t in ticks if t["symbol"] == producer.symbols[0])
    longest_gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert longest_gap.total_seconds() < 2, f"the producer stopped making ticks for {longest_gap}"
    stored_s = stored_once(cluster, producer.symbols, ids, 120)
    record(f"broker {name} (leader of the ticks' partition) kill -9, down 15 s: {delivered} ticks delivered, "
           f"all in the topic once, a new leader after {moved_s:.1f} s, all in MongoDB once {stored_s:.1f} s after "
           "the producer stopped")


def prices_tasks(settings: Settings) -> list[dict]:
    try:
        response = requests.get(f"{settings.connect_url}/connectors/{settings.prices_sink}/status", timeout=10)
        return response.json()["tasks"] if response.ok else []
    except (requests.RequestException, ValueError, KeyError):
        return []


def test_a_connect_worker_killed_hands_its_tasks_over_and_every_tick_lands_once(cluster, producer) -> None:
    # the other worker's REST API answers for the group while the first is gone
    workers = {f"127.0.0.1:{c.port}": c for c in components.components(cluster) if c.role == "connect"}
    time.sleep(6)
    tasks = prices_tasks(cluster)
    assert tasks and all(t["state"] == "RUNNING" for t in tasks), tasks
    victim_address = tasks[0]["worker_id"]
    victim = workers[victim_address]
    survivor = next(address for address in workers if address != victim_address)
    on_survivor = Settings(connect_url=f"http://{survivor}")
    pid = victim.pid(cluster.state_dir)
    processes.hold(cluster, victim.name)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def all_on_survivor() -> bool:
        now = prices_tasks(on_survivor)
        return bool(now) and all(t["state"] == "RUNNING" and t["worker_id"] == survivor for t in now)

    wait_for(all_on_survivor, 120, f"every prices task RUNNING on {survivor}")
    moved_s = time.monotonic() - killed
    time.sleep(6)
    assert producer.running(), producer.tail()
    delivered = producer.stop()
    ticks = published(cluster, set(producer.symbols))
    ids = [t["_id"] for _, t in ticks]
    assert len(ids) == len(set(ids)) == delivered
    stored_s = stored_once(cluster, producer.symbols, ids, 120)
    bring_back(cluster, victim.name, pid)
    record(f"Connect worker {victim.name} (running prices tasks) kill -9, kept down: its tasks RUNNING on the other "
           f"worker after {moved_s:.1f} s; {delivered} ticks, all in MongoDB once {stored_s:.1f} s after the producer "
           "stopped")


def test_one_of_two_roll_up_processes_killed_changes_no_candle(cluster, tmp_path, monkeypatch) -> None:
    with MongoClient(cluster.mongodb_uri, tz_aware=True) as mongo:
        record(f"roll-up on the cluster: {one_processor_killed(cluster, mongo, tmp_path, monkeypatch)}")
