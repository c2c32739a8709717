"""Dashboard latency and history benchmark on the native stack.

    python bench/webui.py [--seconds 10] [--clients 200] [--processes 1] [--client-processes 2]

Starts `webui serve --processes N` as a subprocess on a free port, reading its own topic
`bench-webui-prices` (so nothing reaches MongoDB and the shared topic is untouched; the topic
is deleted afterwards). Publishes simulated ticks at 100 and 1,000 ticks/s (BTC, ETH, XRP)
with published_at set at hand-over, and measures published_at -> receipt by WebSocket
clients (1 client, then `--clients` clients spread over the three symbols and over
`--client-processes` processes, so that the clients' own Python is not what is measured:
each scenario also prints the CPU the server's and the clients' processes used while the
ticks flowed). Then times 24 h history requests (the server's own build time, `server_ms`
in the snapshot, and the round trip) against crypto_db.prices.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import websockets
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import scratch  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from producer.sources.simulated import SimulatedMarket  # noqa: E402

TOPIC = "bench-webui-prices"
SYMBOLS = ["BTC", "ETH", "XRP"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def publish(settings: Settings, rate: int, seconds: float) -> int:
    """Publish at `rate` ticks/s for `seconds`, paced in 10 ms slices; returns how many were sent."""
    codec = AvroCodec(settings, TOPIC, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1, "acks": 1})
    ticks = SimulatedMarket(SYMBOLS, seed=rate, start_ms=int(time.time() * 1000)).ticks()
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            tick = next(ticks)
            value = codec.encode(tick.to_record(published_at=int(time.time() * 1000)))
            producer.produce(TOPIC, key=tick.symbol.encode(), value=value)
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)
    return sent


class Client(asyncio.Protocol):
    """One WebSocket client, lean: frames parsed by hand from the socket's bytes (200 of them through the
    `websockets` library cost the client processes more CPU than the server spent on them, on the same cores).
    It subscribes, waits for the snapshot, then notes each live tick's latency; `seen` holds its ticks' times (a
    tick received twice would show as fewer distinct ones)."""

    def __init__(self, port: int, symbol: str, latencies: list[float], messages: list[int]) -> None:
        self.port, self.symbol, self.latencies, self.messages = port, symbol, latencies, messages
        self.seen: set[int] = set()
        self.ready = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())

    def send(self, payload: bytes, opcode: int = 1) -> None:
        """One final, masked frame (RFC 6455 5.2): the mask is zero, which leaves the payload as it is."""
        size = len(payload)
        header = (struct.pack("!BB", 0x80 | opcode, 0x80 | size) if size < 126 else
                  struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size))
        self.transport.write(header + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        received = time.time() * 1000
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.connection_lost(ConnectionError(f"handshake refused: {bytes(buffer[:40])!r}"))
                return
            del buffer[:end + 4]
            self.upgraded = True
            self.send(json.dumps({"type": "subscribe", "symbol": self.symbol, "range": "1h"}).encode())
        while len(buffer) >= 2:
            opcode, size, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start:start + size])
            del buffer[:start + size]
            if opcode == 1:
                self.message(payload, received)
            elif opcode == 9:
                self.send(payload, 10)  # pong
            elif opcode == 8:
                self.transport.close()

    def message(self, payload: bytes, received: float) -> None:
        message = json.loads(payload)
        kind = message["type"]
        if kind == "snapshot":
            self.ready.set()
            return
        ticks = message["ticks"] if kind == "ticks" else [message] if kind == "tick" else ()
        self.messages[0] += 1
        for t in ticks:
            if t.get("published_at"):
                self.latencies.append(received - t["published_at"])
                self.seen.add(t["ts"])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc or ConnectionError("closed by the server"))


async def client_group(url: str, indices: list[int], ready: Any, go: Any, stop: Any, results: Any) -> None:
    loop = asyncio.get_running_loop()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    latencies: list[float] = []
    messages = [0]
    clients = []
    for i in indices:
        _, protocol = await loop.create_connection(lambda i=i: Client(port, SYMBOLS[i % 3], latencies, messages),
                                                   "127.0.0.1", port)
        clients.append(protocol)
    waiting = asyncio.ensure_future(asyncio.gather(*(c.ready.wait() for c in clients)))
    done, _ = await asyncio.wait([waiting, *(c.closed for c in clients)], timeout=300,
                                 return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:  # a client was closed (or 300 s passed) before every snapshot came
        failed = [c.closed.result() for c in clients if c.closed.done()]
        results.put({"error": repr(failed[0]) if failed else "no snapshot within 300 s"})
        return
    ready.put(len(indices))
    while not go.is_set():
        await asyncio.sleep(0.05)
    cpu, wall, messages[0] = time.process_time(), time.monotonic(), 0
    while not stop.is_set():
        await asyncio.sleep(0.05)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for c in clients:
        c.transport.close()
    results.put({"latencies": latencies, "distinct": sum(len(c.seen) for c in clients), "cpu": cpu, "wall": wall,
                 "messages": messages[0]})


def client_process(url: str, indices: list[int], ready: Any, go: Any, stop: Any, results: Any) -> None:
    """A process of clients (multiprocessing's spawn: a fresh interpreter, no Kafka client inherited)."""
    asyncio.run(client_group(url, indices, ready, go, stop, results))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    numbers = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = numbers[3] + numbers[4]  # idle + iowait
    return sum(numbers) - idle, sum(numbers)


def server_pids(app: subprocess.Popen) -> list[int]:
    """The dashboard's serving processes: the app itself, or with --processes N its N workers."""
    children = []
    for task in Path(f"/proc/{app.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(p) for p in (task / "children").read_text().split()]
    return children or [app.pid]


def push_buckets(base: str, processes: int) -> dict[str, float]:
    """The server's push latency histogram (published_at -> send), cumulative counts per bucket over every process."""
    counts: dict[str, float] = {}
    for text in server_metrics(base, processes):
        for line in text.splitlines():
            if line.startswith("webui_push_latency_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                counts[le] = counts.get(le, 0) + float(line.split()[-1])
    return counts


def scenario(url: str, settings: Settings, rate: int, clients: int, seconds: float, processes: int,
             server: list[int], base: str, server_processes: int) -> str:
    spawn = multiprocessing.get_context("spawn")
    ready, results, go, stop = spawn.Queue(), spawn.Queue(), spawn.Event(), spawn.Event()
    groups = [list(range(clients))[k::processes] for k in range(min(processes, clients))]
    workers = [spawn.Process(target=client_process, args=(url, g, ready, go, stop, results), daemon=True)
               for g in groups]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 300
        for _ in groups:
            with contextlib.suppress(Exception):
                ready.get(timeout=max(1, deadline - time.monotonic()))
                continue
            failed = [] if results.empty() else [results.get()]
            raise SystemExit(f"clients did not all get their snapshot: {failed}")
        pushes = push_buckets(base, server_processes)
        before = {pid: cpu_seconds(pid) for pid in server}
        busy, total = machine_busy()
        wall = time.monotonic()
        go.set()
        sent = publish(settings, rate, seconds)
        time.sleep(2)
        stop.set()
        wall = time.monotonic() - wall
        busy, total = (a - b for a, b in zip(machine_busy(), (busy, total), strict=True))
        used = {pid: cpu_seconds(pid) - before[pid] for pid in server}
        outcome = [results.get(timeout=120) for _ in groups]
        pushes = {le: n - pushes.get(le, 0) for le, n in push_buckets(base, server_processes).items()}
    finally:
        stop.set()
        deadline = time.monotonic() + 30
        for worker in workers:
            while worker.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(Exception):  # a result nobody reads would keep its process from ending
                    results.get(timeout=0.1)
            if worker.is_alive():
                worker.kill()
    errors = [o["error"] for o in outcome if "error" in o]
    if errors:
        raise SystemExit(f"a client process failed: {errors[0]}")
    latencies = [x for o in outcome for x in o["latencies"]]
    twice = len(latencies) - sum(o["distinct"] for o in outcome)
    expected = sum(sent // 3 + (1 if i % 3 < sent % 3 else 0) for i in range(clients))
    ncpu = os.cpu_count() or 1
    messages = sum(o["messages"] for o in outcome)

    def within(le: str) -> str:
        return f"{100 * pushes.get(le, 0) / max(1, pushes.get('+Inf', 0)):.1f}%"
    server_cpu = ", ".join(f"{100 * c / wall:.0f}%" for c in used.values())
    client_cpu = ", ".join(f"{100 * o['cpu'] / o['wall']:.0f}%" for o in outcome)
    return (f"{rate:>5} ticks/s x {clients:>3} clients: received {len(latencies)}/{expected}"
            f"{f' ({twice} twice)' if twice else ''}  "
            f"p50 {pct(latencies, 50):7.1f} ms  p95 {pct(latencies, 95):7.1f} ms  p99 {pct(latencies, 99):7.1f} ms\n"
            f"      cpu over {wall:.0f} s (100% = one core): server {len(server)} process(es) "
            f"{server_cpu}; clients {len(groups)} process(es) {client_cpu}; "
            f"machine ({ncpu} cores) {100 * busy / max(1, total):.0f}% busy; "
            f"{len(latencies) / max(1, messages):.1f} ticks a message\n"
            f"      server side (published_at -> its send): within 100 ms {within('0.1')}, 250 ms {within('0.25')}, "
            f"500 ms {within('0.5')}")


def server_metrics(base: str, processes: int) -> list[str]:
    """/metrics of each serving process: the kernel picks a process per connection, so /healthz (its pid) and
    /metrics are asked on one connection, over fresh connections until every process has answered."""
    texts: dict[int, str] = {}
    for _ in range(100):
        with requests.Session() as http:
            pid = http.get(f"{base}/healthz", timeout=10).json().get("pid", 0)
            if pid not in texts:
                texts[pid] = http.get(f"{base}/metrics", timeout=10).text
        if len(texts) >= processes:
            break
    return list(texts.values())


async def history(url: str, repeats: int) -> str:
    server, trips = [], []
    async with websockets.connect(url, max_size=2**24) as ws:
        for i in range(repeats):
            # a distinct `end` each time so the app's 2 s answer cache is not what is measured
            end = int(time.time() * 1000) - i
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "24h", "end": end}))
            while (message := json.loads(await ws.recv()))["type"] != "snapshot":
                pass
            trips.append((time.perf_counter() - started) * 1000)
            server.append(message["server_ms"])
    return (f"24h history (BTC, crypto_db.prices, {message['stats']['count']} rows, {len(message['line'])} line "
            f"points, {len(message['candles'])} candles): server median {statistics.median(server):.0f} ms "
            f"(min {min(server):.0f}, max {max(server):.0f}); round trip median {statistics.median(trips):.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--history-repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1, help="the dashboard's processes (webui serve --processes)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes the clients are spread over (their Python must not be the bottleneck)")
    args = parser.parse_args()
    settings = Settings()
    port = free_port()
    # 200 clients from one address: no per-address cap or subscribe budget here (docs/security.md)
    env = {**os.environ, "PRICES_TOPIC": TOPIC, "WEBUI_PORT": str(port), "WEBUI_CLIENT_QUEUE": "10000",
           "WEBUI_MAX_CONNECTIONS_PER_ADDRESS": "0", "WEBUI_ADDRESS_RATE": "100000",
           "WEBUI_ADDRESS_CONNECT_RATE": "100000",
           "WEBUI_GROUP_PREFIX": "bench-webui-group"}
    Producer({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(TOPIC, timeout=10)  # auto-creates it
    app = subprocess.Popen([sys.executable, "-m", "webui.cli", "serve", "--processes", str(args.processes)], env=env,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        ready: set[int] = set()
        while True:  # healthy, and its in-memory views loaded (from their topics: not a steady state)
            try:  # every process: each new connection may land on any of them
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if health.status_code == 200 and all(v["ready"] for v in health.json().get("views", {}).values()):
                    ready.add(health.json()["pid"])
                    if len(ready) >= args.processes:
                        break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or app.poll() is not None:
                raise SystemExit("webui did not become healthy within 120 s; is the stack up (`control stack up`)?")
            time.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/ws"
        server = server_pids(app)
        print(f"dashboard: {args.processes} process(es) (pids {', '.join(map(str, server))}); clients spread over "
              f"up to {args.client_processes} processes; {os.cpu_count()} cores", flush=True)
        for rate in (100, 1000):
            for clients in (1, args.clients):
                print(scenario(url, settings, rate, clients, args.seconds, args.client_processes, server,
                               f"http://127.0.0.1:{port}", args.processes), flush=True)
        print(asyncio.run(history(url, args.history_repeats)), flush=True)
        texts = server_metrics(f"http://127.0.0.1:{port}", args.processes)
        dropped = sum(float(line.split()[-1]) for text in texts for line in text.splitlines()
                      if line.startswith("webui_messages_dropped_total"))
        print(f"server: webui_messages_dropped_total {dropped:g} (over {len(texts)} process(es))")
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(30)
        scratch.remove(settings, "bench-webui-")  # its topic, the dashboard's group and the registry subject
    return 0


if __name__ == "__main__":
    sys.exit(main())
