"""`webui serve --processes 2` on the real stack: one port, two worker processes, each following the topic itself.

Which worker holds a client's socket is read from the kernel (/proc: the workers' socket inodes against the
port's TCP connections), not asked of the server. Ticks are published straight into the test namespace's prices
topic under a symbol made up for this run, so only these tests' ticks are counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websockets
from confluent_kafka import Producer

from cryptopulse.avro import AvroCodec
from producer.sources.simulated import SimulatedMarket
from tests import children
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
RUN_SYMBOL = "ZP" + "".join(random.choices(string.ascii_uppercase, k=4))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.exists() else ():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(found)


def ended(pid: int) -> bool:
    """Gone, or a zombie (ended; its reaper has not collected it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def socket_owners(pids: list[int], port: int) -> dict[int, int]:
    """Client port -> the pid of the process holding the server side of that connection to `port`."""
    inodes: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[int(link[8:-1])] = pid
    owners = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == port and inode in inodes:
            owners[int(remote.split(":")[1], 16)] = inodes[inode]
    return owners


@dataclass
class Dashboard:
    process: subprocess.Popen
    port: int
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return child_pids(self.process.pid)

    def healthy_pids(self, tries: int = 40) -> set[int]:
        """The pids answering /healthz with 200, over fresh connections (each may land on either worker)."""
        pids = set()
        for _ in range(tries):
            try:
                response = requests.get(f"{self.url}/healthz", timeout=5, headers={"Connection": "close"})
            except requests.ConnectionError:
                continue
            if response.status_code == 200:
                pids.add(response.json()["pid"])
        return pids

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(tmp: Path, name: str) -> Dashboard:
    port = free_port()
    log = tmp / f"{name}.log"
    env = {**os.environ, "WEBUI_PORT": str(port), "WEBUI_VIEWS": "0", "SYMBOLS": f"BTC,{RUN_SYMBOL}",
           "WEBUI_ADDRESS_CONNECT_RATE": "1000"}  # many sockets from this one address in a moment
    process = children.start([sys.executable, "-m", "webui.cli", "serve", "--processes", "2"], log, cwd=ROOT, env=env)
    return Dashboard(process, port, log)


def stop(dashboard: Dashboard) -> None:
    pids = dashboard.workers()
    if dashboard.process.poll() is None:
        dashboard.process.send_signal(signal.SIGTERM)
        try:
            dashboard.process.wait(60)
        except subprocess.TimeoutExpired:
            dashboard.process.kill()
    for pid in pids:  # a test that failed half-way leaves no worker behind
        if not ended(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def dashboard(settings, tmp_path_factory) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("webui-processes"), "dashboard")
    try:
        wait_for(lambda: len(dashboard.workers()) == 2 and dashboard.healthy_pids(10) == set(dashboard.workers()),
                 90, "both workers to answer /healthz with 200 (consumers assigned)")
        yield dashboard
    finally:
        stop(dashboard)


class Client:
    """A WebSocket client of the run's symbol, collecting the ticks it receives."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.ticks: list[int] = []  # each received tick's ts, in order
        self.closed = asyncio.Event()
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> Client:
        self.ws = await websockets.connect(f"ws://127.0.0.1:{self.dashboard.port}/ws")
        await self.ws.send(json.dumps({"type": "subscribe", "symbol": RUN_SYMBOL, "range": "1h"}))
        while json.loads(await asyncio.wait_for(self.ws.recv(), 60))["type"] != "snapshot":
            pass
        self.task = asyncio.create_task(self._read())
        return self

    @property
    def port(self) -> int:
        return self.ws.local_address[1]

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                if message["type"] in ("tick", "ticks"):
                    self.ticks += [t["ts"] for t in (message["ticks"] if message["type"] == "ticks" else [message])]
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


async def clients_on_every_worker(dashboard: Dashboard, count: int) -> tuple[list[Client], dict[Client, int]]:
    """At least `count` clients, with at least one on each worker (the kernel picks; more are opened until so)."""
    clients = [await Client(dashboard).open() for _ in range(count)]
    workers = dashboard.workers()
    while True:
        owners = socket_owners(workers, dashboard.port)
        where = {c: owners.get(c.port) for c in clients}
        if set(where.values()) == set(workers) or len(clients) >= 64:
            return clients, where
        clients.append(await Client(dashboard).open())


def publish(settings, count: int, rate: float = 300) -> list[int]:
    """`count` ticks of the run's symbol into the test namespace's prices topic; their `ts`, in order."""
    codec = AvroCodec(settings, settings.prices_topic, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1})
    start_ms = int(time.time() * 1000)
    market = SimulatedMarket([RUN_SYMBOL], seed=start_ms, start_ms=start_ms, interval_ms=100).ticks()
    sent = []
    for _ in range(count):
        tick = next(market)
        producer.produce(settings.prices_topic, key=tick.symbol.encode(),
                         value=codec.encode(tick.to_record(published_at=int(time.time() * 1000))))
        producer.poll(0)
        sent.append(tick.ts)
        time.sleep(1 / rate)
    assert producer.flush(30) == 0
    return sent


async def received_all(clients: list[Client], count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(len(c.ticks) < count for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # a tick sent twice would arrive about now


def test_connections_land_on_both_workers_and_every_client_gets_every_tick_once(dashboard, settings):
    workers = dashboard.workers()
    assert len(workers) == 2
    assert dashboard.healthy_pids(30) == set(workers)  # plain HTTP connections too: both processes answer

    async def scenario() -> tuple[list[Client], dict[Client, int], list[int]]:
        clients, where = await clients_on_every_worker(dashboard, 12)
        sent = await asyncio.to_thread(publish, settings, 150)
        await received_all(clients, len(sent))
        for client in clients:
            await client.close()
        return clients, where, sent

    clients, where, sent = asyncio.run(scenario())
    assert set(where.values()) == set(workers), where  # sockets on both workers (none unaccounted for)
    assert len(sent) == 150
    for client in clients:
        assert client.ticks == sent, (where[client], len(client.ticks))  # each tick once, in order, on every socket


def test_a_worker_killed_is_restarted_while_the_other_keeps_serving(dashboard, settings):
    workers = dashboard.workers()

    async def scenario() -> dict[str, Any]:
        clients, where = await clients_on_every_worker(dashboard, 8)
        victim = where[clients[0]]
        survivors = [c for c in clients if where[c] != victim]
        doomed = [c for c in clients if where[c] == victim]
        os.kill(victim, signal.SIGKILL)
        for client in doomed:
            await asyncio.wait_for(client.closed.wait(), 30)
        sent = await asyncio.to_thread(publish, settings, 100)
        await received_all(survivors, len(sent))
        await asyncio.to_thread(wait_for, lambda: "is back" in dashboard.log_text(), 30,
                                "the parent to say the worker is back")
        restarted = [pid for pid in dashboard.workers() if pid not in workers]
        await asyncio.to_thread(wait_for, lambda: set(restarted) <= dashboard.healthy_pids(10), 60,
                                "the restarted worker to answer /healthz with 200")
        # a page that lost its socket reconnects: it is served again, by either worker, the new one included
        again = [await Client(dashboard).open() for _ in doomed]
        while not set(restarted) <= {socket_owners(dashboard.workers(), dashboard.port).get(c.port) for c in again}:
            assert len(again) < 40, "no new socket landed on the restarted worker"
            again.append(await Client(dashboard).open())
        more = await asyncio.to_thread(publish, settings, 50)
        await received_all([*survivors, *again], len(more))
        for client in [*survivors, *again]:
            await client.close()
        return {"victim": victim, "survivors": survivors, "doomed": doomed, "sent": sent, "restarted": restarted,
                "again": again, "more": more}

    out = asyncio.run(scenario())
    assert out["survivors"] and out["doomed"]
    for client in out["survivors"]:
        assert client.ticks == out["sent"] + out["more"]  # nothing lost or doubled while the other worker died
    for client in out["again"]:
        assert client.ticks == out["more"]
    assert len(out["restarted"]) == 1 and len(dashboard.workers()) == 2 and out["victim"] not in dashboard.workers()
    log = dashboard.log_text()
    died = re.findall(r"worker (\d) \(pid (\d+)\) died \(killed by SIGKILL\); starting it again in 1 s", log)
    assert [pid for _, pid in died] == [str(out["victim"])], log[-3000:]
    back = re.findall(rf"worker {died[0][0]} is back \(pid (\d+)\)", log)
    assert back == [str(out["restarted"][0])], log[-3000:]
    assert dashboard.process.poll() is None


def test_sigterm_on_the_parent_stops_every_worker(dashboard):
    workers = dashboard.workers()
    assert len(workers) == 2
    dashboard.process.send_signal(signal.SIGTERM)
    assert dashboard.process.wait(60) == 0
    assert all(ended(pid) for pid in workers), [pid for pid in workers if not ended(pid)]
    assert "stopping 2 worker(s) (SIGTERM)" in dashboard.log_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{dashboard.url}/healthz", timeout=5)


def test_workers_end_with_a_parent_killed_with_9(settings, tmp_path):
    dashboard = start(tmp_path, "orphans")
    workers: list[int] = []
    try:
        wait_for(lambda: len(re.findall(r"worker \d \(pid \d+\) serving", dashboard.log_text())) == 2, 60,
                 "both workers serving")
        workers = dashboard.workers()
        assert len(workers) == 2
        dashboard.process.kill()
        dashboard.process.wait(10)
        wait_for(lambda: all(ended(pid) for pid in workers), 30, "the workers to end after their parent")
    finally:
        stop(dashboard)
        for pid in workers:  # orphans of a failed run are no longer the parent's children: by their pids
            if not ended(pid):
                os.kill(pid, signal.SIGKILL)
