"""Dashboard latency and history benchmark on the native stack.

    python bench/webui.py [--seconds 10] [--clients 200]

Starts `webui` as a subprocess on a free port, reading its own topic `bench-webui-prices`
(so nothing reaches MongoDB and the shared topic is untouched; the topic is deleted
afterwards). Publishes simulated ticks at 100 and 1,000 ticks/s (BTC, ETH, XRP) with
published_at set at hand-over, and measures published_at -> receipt by WebSocket
clients (1 client, then `--clients` clients spread over the three symbols). Then times
24 h history requests (the server's own build time, `server_ms` in the snapshot, and
the round trip) against crypto_db.prices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


async def client(url: str, symbol: str, latencies: list[float], ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "subscribe", "symbol": symbol, "range": "1h"}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "snapshot":
                ready.set()
                break
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            received = time.time() * 1000
            message = json.loads(text)
            ticks = message["ticks"] if message["type"] == "ticks" else [message] if message["type"] == "tick" else []
            latencies += [received - t["published_at"] for t in ticks if t.get("published_at")]


async def scenario(url: str, settings: Settings, rate: int, clients: int, seconds: float) -> str:
    latencies: list[float] = []
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(client(url, SYMBOLS[i % 3], latencies, readies[i], stop)) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    sent = await asyncio.to_thread(publish, settings, rate, seconds)
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    expected = sum(sent // 3 + (1 if i % 3 < sent % 3 else 0) for i in range(clients))
    return (f"{rate:>5} ticks/s x {clients:>3} clients: received {len(latencies)}/{expected}  "
            f"p50 {pct(latencies, 50):7.1f} ms  p95 {pct(latencies, 95):7.1f} ms  p99 {pct(latencies, 99):7.1f} ms")


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
    args = parser.parse_args()
    settings = Settings()
    port = free_port()
    # 200 clients from one address: no per-address cap or subscribe budget here (docs/security.md)
    env = {**os.environ, "PRICES_TOPIC": TOPIC, "WEBUI_PORT": str(port), "WEBUI_CLIENT_QUEUE": "10000",
           "WEBUI_MAX_CONNECTIONS_PER_ADDRESS": "0", "WEBUI_ADDRESS_RATE": "100000",
           "WEBUI_ADDRESS_CONNECT_RATE": "100000",
           "WEBUI_GROUP_PREFIX": "bench-webui-group"}
    Producer({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(TOPIC, timeout=10)  # auto-creates it
    app = subprocess.Popen([sys.executable, "-m", "webui.cli"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # healthy, and its in-memory views loaded (their load scans FerretDB: not a steady state)
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if health.status_code == 200 and all(v["ready"] for v in health.json().get("views", {}).values()):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or app.poll() is not None:
                raise SystemExit("webui did not become healthy within 120 s; is the stack up (`control stack up`)?")
            time.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/ws"
        for rate in (100, 1000):
            for clients in (1, args.clients):
                print(asyncio.run(scenario(url, settings, rate, clients, args.seconds)), flush=True)
        print(asyncio.run(history(url, args.history_repeats)), flush=True)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        dropped = [line for line in metrics.splitlines() if line.startswith("webui_messages_dropped_total")]
        print("server:", *dropped)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(30)
        scratch.remove(settings, "bench-webui-")  # its topic, the dashboard's group and the registry subject
    return 0


if __name__ == "__main__":
    sys.exit(main())
