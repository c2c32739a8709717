"""The dashboard under abuse, for a minute: does an ordinary client still get its charts and its ticks?

    python bench/abuse.py [--seconds 60] [--rate 30] [--url http://127.0.0.1:8000 --pid N] [--baseline] [--auth]

Needs the stack (`control stack up`). Without --url it starts `webui serve` on a free port with its default
limits in a namespace of its own (topics `bench-abuse-*`, database `bench_abuse`, removed afterwards): the
database seeded with 10 days of 1-minute candles (and their 5-minute roll-up, the 7 d chart's) and 3 hours of ticks
per coin, the same published on its topics (the dashboard's views load from them), live ticks published (simulated,
BTC, ETH, XRP) at --rate a second into its prices topic. With
--url and --pid it abuses a dashboard that runs already (the ordinary client then needs ticks flowing there).
With --auth, an account and an API token of scope read are made in the namespace first (`control users add`,
`control tokens add`): the dashboard is in login mode, the ordinary client sends the token, the abusers none.

While an ordinary client (a process of its own, from 127.0.0.1: one socket following BTC's live ticks, one asking
for a chart every 2 s, 1h, 24h and 7d in turn) goes on, abusers each from a loopback address of its own (127.0.1.x
to 127.0.5.x, as a botnet would) run for --seconds:
- unread sockets: 4,000-byte frames as fast as the socket takes them, never reading a byte (reconnecting when
  closed), and 64 KiB frames;
- distinct `end` values: subscribes at the protocol's pace with a random `end` in the last 8 days;
- many sockets: as many idle sockets as each address may open, and more (refused);
- re-subscribe storms: sockets switching coin and range as fast as they can send.

Prints the dashboard's RSS before, at its peak and 35 s after; its event-loop lag (the largest seen, and p99 from
its histogram); what the server did (closes, refusals, errors); and for the ordinary client: snapshots asked and
received with their latency, live ticks received of those published for its coin, and their latency
(published_at -> receipt), p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import scratch  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402

RUN = time.strftime("%Y%m%d%H%M%S")
PREFIX = "bench-abuse-"
DATABASE = "bench_abuse"
NAMESPACE = scratch.environment(PREFIX, DATABASE)  # its own topics, database and groups
TOPIC = NAMESPACE["PRICES_TOPIC"]
SYMBOLS = ["BTC", "ETH", "XRP"]
RANGES = ["1h", "24h", "7d"]
DAY_MS = 86_400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metrics(http: str) -> str:
    return requests.get(f"{http}/metrics", timeout=10).text


def series(text: str, name: str) -> dict[str, float]:
    """Every sample of one metric family: {labels: value}."""
    found = {}
    for labels, value in re.findall(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE):
        found[labels] = float(value)
    return found


def histogram_quantile(before: str, after: str, name: str, q: float) -> float:
    """The q-quantile (upper bucket bound) of what a histogram counted between two scrapes."""
    def buckets(text: str) -> list[tuple[float, float]]:
        return sorted((float("inf") if b == "+Inf" else float(b), v)
                      for b, v in ((re.search(r'le="([^"]+)"', k).group(1), v)
                                   for k, v in series(text, f"{name}_bucket").items()))
    start, end = dict(buckets(before)), buckets(after)
    counts = [(bound, value - start.get(bound, 0.0)) for bound, value in end]
    total = counts[-1][1] if counts else 0
    for bound, cumulative in counts:
        if total and cumulative >= q * total:
            return bound
    return float("nan")


# --- the ordinary client (a process of its own, so the abusers' loop does not slow its clock) ---------------


def ordinary(ws_url: str, seconds: float, results: Any, token: str | None = None) -> None:
    asyncio.run(_ordinary(ws_url, seconds, results, token))


async def _ordinary(ws_url: str, seconds: float, results: Any, token: str | None = None) -> None:
    """Two sockets, as two tabs of the page: one follows BTC's live ticks (subscribed once), the other asks for
    a chart every 2 s (1h, 24h, 7d in turn) and measures how long each snapshot takes."""
    deadline = time.monotonic() + seconds
    credentials = {"additional_headers": {"Authorization": f"Bearer {token}"}} if token else {}
    found: dict[str, Any] = {"asked": 0, "received": 0, "snapshot_ms": [], "server_ms": [], "tick_ms": [],
                             "ticks": [],
                             "errors": Counter(), "disconnects": 0, "first_tick_ts": None}

    async def live() -> None:
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(ws_url, max_size=2**24, open_timeout=10, **credentials) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h"}))
                    while time.monotonic() < deadline:
                        try:
                            text = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.monotonic()))
                        except TimeoutError:
                            continue
                        now_ms = time.time() * 1000
                        message = json.loads(text)
                        if message["type"] in ("tick", "ticks"):
                            ticks = message["ticks"] if message["type"] == "ticks" else [message]
                            found["ticks"] += [t["ts"] for t in ticks]
                            found["tick_ms"] += [now_ms - t["published_at"] for t in ticks if t.get("published_at")]
                        elif message["type"] == "error":
                            found["errors"][message["message"][:40]] += 1
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                found["disconnects"] += 1
                found["errors"][f"live socket: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    async def charts() -> None:
        turn = 0
        while time.monotonic() < deadline - 2:
            try:
                async with websockets.connect(ws_url, max_size=2**24, open_timeout=10, **credentials) as ws:
                    while time.monotonic() < deadline - 2:
                        sent = time.perf_counter()
                        await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": RANGES[turn % 3]}))
                        turn += 1
                        found["asked"] += 1
                        while True:  # its snapshot (ticks of the chart in between are read and ignored)
                            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                            if message["type"] == "snapshot":
                                found["received"] += 1
                                found["snapshot_ms"].append((time.perf_counter() - sent) * 1000)
                                found["server_ms"].append((message["range"], message.get("server_ms"),
                                                           message.get("basis")))
                                break
                            if message["type"] == "error":
                                found["errors"][message["message"][:40]] += 1
                                break
                        await asyncio.sleep(max(0.0, 2 - (time.perf_counter() - sent)))
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                found["disconnects"] += 1
                found["errors"][f"chart socket: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    await asyncio.gather(live(), charts())
    found["errors"] = dict(found["errors"])
    results.put(found)


# --- abusers -----------------------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_socket(port: int, source: str) -> socket.socket:
    """A WebSocket after the handshake, as a non-blocking socket with a tiny receive buffer (it never reads)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return sock


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()


async def unread_flooder(port: int, source: str, stop: asyncio.Event, tally: Tally, big: bool) -> None:
    loop = asyncio.get_running_loop()
    payload = frame(b"x" * 65536) if big else frame(json.dumps(
        {"type": "subscribe", "symbol": "BTC", "range": "7d", "pad": "x" * 3900}).encode())
    while not stop.is_set():
        try:
            sock = await raw_socket(port, source)
        except (OSError, ConnectionError, TimeoutError):
            tally.counts["flood: connect refused/failed"] += 1
            await asyncio.sleep(0.5)
            continue
        tally.counts["flood: sockets opened"] += 1
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, payload), 1.0)
                    tally.counts["flood: frames sent"] += 1
                except TimeoutError:
                    tally.counts["flood: send blocked (server stopped reading)"] += 1
                    await asyncio.sleep(0.2)
        except OSError:
            tally.counts["flood: closed by the server"] += 1
        finally:
            sock.close()


async def reading_client(ws_url: str, source: str, stop: asyncio.Event, tally: Tally, kind: str,
                         message: Any, pause: float) -> None:
    """A client that reads (so sends do not block) and sends `message()` every `pause` seconds."""
    while not stop.is_set():
        try:
            async with websockets.connect(ws_url, max_size=2**24, open_timeout=5,
                                          local_addr=(source, 0)) as ws:
                tally.counts[f"{kind}: sockets opened"] += 1

                async def drain() -> None:
                    async for _ in ws:
                        tally.counts[f"{kind}: messages received"] += 1

                draining = asyncio.create_task(drain())
                try:
                    while not stop.is_set() and not draining.done():
                        await ws.send(message())
                        tally.counts[f"{kind}: sent"] += 1
                        await asyncio.sleep(pause)
                finally:
                    draining.cancel()
        except websockets.exceptions.InvalidStatus as exc:
            tally.counts[f"{kind}: refused HTTP {exc.response.status_code}"] += 1
            await asyncio.sleep(0.5)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            tally.counts[f"{kind}: closed ({code or type(exc).__name__})"] += 1
            await asyncio.sleep(0.2)


async def idle_sockets(ws_url: str, source: str, count: int, stop: asyncio.Event, tally: Tally) -> None:
    opened = []
    for _ in range(count):
        try:
            opened.append(await websockets.connect(ws_url, open_timeout=5, local_addr=(source, 0)))
            tally.counts["many: sockets opened"] += 1
        except websockets.exceptions.InvalidStatus as exc:
            tally.counts[f"many: refused HTTP {exc.response.status_code}"] += 1
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
            tally.counts["many: failed"] += 1
    await stop.wait()
    for ws in opened:
        await ws.close()


async def abuse(port: int, seconds: float) -> Tally:
    ws_url = f"ws://127.0.0.1:{port}/ws"
    stop = asyncio.Event()
    tally = Tally()
    now = int(time.time() * 1000)

    def distinct_end() -> str:
        return json.dumps({"type": "subscribe", "symbol": random.choice(SYMBOLS), "range": random.choice(RANGES),
                           "end": now - random.randrange(8 * DAY_MS)})

    def storm() -> str:
        return json.dumps({"type": "subscribe", "symbol": random.choice(SYMBOLS), "range": random.choice(RANGES)})

    # every abuser from an address of its own, as a botnet would: the per-address limits (caps, budgets,
    # penalties) are no help against that, so what is measured is what holds whatever the addresses
    tasks = []
    for i in range(8):  # unread sockets with frames within the limit
        tasks.append(unread_flooder(port, f"127.0.1.{i + 1}", stop, tally, big=False))
    for i in range(2):  # and over it
        tasks.append(unread_flooder(port, f"127.0.2.{i + 1}", stop, tally, big=True))
    for i in range(6):  # distinct ends, at the protocol's pace
        tasks.append(reading_client(ws_url, f"127.0.3.{i + 1}", stop, tally, "distinct end", distinct_end, 0.1))
    for i in range(10):  # re-subscribe storms, faster than allowed
        tasks.append(reading_client(ws_url, f"127.0.4.{i + 1}", stop, tally, "storm", storm, 0.01))
    for i in range(3):  # many sockets: the cap of an address, and more
        tasks.append(idle_sockets(ws_url, f"127.0.5.{i + 1}", 40, stop, tally))
    running = [asyncio.create_task(t) for t in tasks]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(running, timeout=15)
    for task in running:
        task.cancel()
    return tally


# --- the run ---------------------------------------------------------------------------------------------------


def seed(settings: Settings, days: int = 10, tick_hours: int = 3) -> tuple[int, int]:
    """History of its own for the dashboard, as the sinks would have stored it: `days` of 1-minute candles and their
    5-minute roll-up, and `tick_hours` of ticks 5 s apart, per coin. Written straight to the bench's scratch database
    (as bench/ingest.py's store measurements do: the run is about the dashboard, not the pipeline), and published on
    its topics, which the dashboard's views load from."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from pymongo import InsertOne, MongoClient

    from cryptopulse import kafka
    from cryptopulse.candle import Candle
    from cryptopulse.tick import Tick
    from streams.history import CandlePublisher
    from tests.integration.history_data import roll_up

    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    now = int(time.time() * 1000) // 60_000 * 60_000
    rng = random.Random(12)
    made: list[Candle] = []
    made_ticks: list[Tick] = []
    for symbol, base in zip(SYMBOLS, (60_000.0, 3_000.0, 0.5), strict=True):
        price = base
        for minute in range(days * 1440, 0, -1):
            start = now - minute * 60_000
            open_ = price
            moves = [price * (1 + rng.gauss(0, 0.0006)) for _ in range(4)]
            price = moves[-1]
            made.append(Candle(symbol, "simulated", start, open_, max(open_, *moves), min(open_, *moves), price, 12,
                               base * rng.uniform(5, 50), "ticks", True))
        for step in range(tick_hours * 720, 0, -1):
            ts = now - step * 5000
            price *= 1 + rng.gauss(0, 0.0002)
            made_ticks.append(Tick(symbol, "simulated", ts, price, volume_24h=base * 1e4, change_24h_pct=0.5))
    fives = [c for symbol in SYMBOLS for c in roll_up([m for m in made if m.symbol == symbol], "5m", now)]
    space = replace(settings, database=DATABASE, prices_topic=TOPIC,
                    candles_topic_prefix=NAMESPACE["CANDLES_TOPIC_PREFIX"])
    publisher = CandlePublisher(space)
    for i in range(0, len(made), 20_000):
        publisher.publish(made[i:i + 20_000] + (fives if i == 0 else []), timeout=120)
    codec, producer = AvroCodec(space, TOPIC, "tick"), kafka.producer(space, "bench-abuse-seed")
    for tick in made_ticks:
        producer.produce(TOPIC, codec.encode(tick.to_record(published_at=tick.ts)), tick.symbol.encode())
        producer.poll(0)
    producer.flush(60)
    writes = {"candles_1m": made, "candles_5m": fives}
    client = MongoClient(settings.mongodb_uri)
    try:
        db = client[DATABASE]
        for name in ("candles_1m", "candles_5m", "prices"):
            db.drop_collection(name)
        for name, rows in writes.items():
            docs = [InsertOne({**c.to_record(), "start": at(c.start)}) for c in rows]
            for i in range(0, len(docs), 500):
                db[name].bulk_write(docs[i:i + 500], ordered=False)
        docs = [InsertOne({**t.to_record(published_at=t.ts), "ts": at(t.ts), "published_at": at(t.ts)})
                for t in made_ticks]
        for i in range(0, len(docs), 500):
            db["prices"].bulk_write(docs[i:i + 500], ordered=False)
    finally:
        client.close()
    return len(made), len(made_ticks)


published_ts: list[int] = []  # event times of the BTC ticks published


def publisher(settings: Settings, rate: float, stop: threading.Event, sent: Counter) -> None:
    from confluent_kafka import Producer

    from producer.sources.simulated import SimulatedMarket

    codec = AvroCodec(settings, TOPIC, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1, "acks": 1})
    ticks = SimulatedMarket(SYMBOLS, seed=7, start_ms=int(time.time() * 1000)).ticks()
    started, count = time.perf_counter(), 0
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate)
        while count < due:
            tick = next(ticks)
            value = codec.encode(tick.to_record(published_at=int(time.time() * 1000)))
            producer.produce(TOPIC, key=tick.symbol.encode(), value=value)
            sent[tick.symbol] += 1
            if tick.symbol == "BTC":
                published_ts.append(tick.ts)
            count += 1
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(10)


def make_account(env: dict[str, str]) -> str:
    """An account and a read token in the bench's namespace (the dashboard then asks every client to log in)."""
    def control(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(["control", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"control {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    control("users", "add", "benchabuse", stdin="a bench passphrase of enough length\n")
    return control("tokens", "add", "bench", "--user", "benchabuse", "--scope", "read", "--expires", "1d").strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=30, help="ticks a second published (all coins)")
    parser.add_argument("--url", help="a dashboard that runs already (then --pid too)")
    parser.add_argument("--pid", type=int, help="its process id, for its memory")
    parser.add_argument("--baseline", action="store_true", help="the ordinary client alone, without abusers")
    parser.add_argument("--auth", action="store_true", help="login mode: an account exists, the ordinary client "
                        "sends an API token, the abusers nothing")
    args = parser.parse_args()
    if args.auth and args.url:
        parser.error("--auth makes the account in the bench's own namespace: not with --url")
    token = None
    settings = Settings()
    app = None
    stop_publishing = threading.Event()
    sent: Counter[str] = Counter()
    if args.url:
        if not args.pid:
            parser.error("--url needs --pid (the dashboard's process, for its memory)")
        http, pid = args.url.rstrip("/"), args.pid
    else:
        port = free_port()
        env = {**os.environ, **NAMESPACE}
        from confluent_kafka import Producer

        Producer({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(TOPIC, timeout=10)  # creates it
        seeded = seed(settings)
        print(f"seeded {DATABASE}: {seeded[0]:,} candles (10 days), {seeded[1]:,} ticks (3 hours)", flush=True)
        if args.auth:
            token = make_account(env)
            print("login mode: an account and a read token made; abusers send no credentials", flush=True)
        app = subprocess.Popen([sys.executable, "-m", "webui.cli", "serve", "--port", str(port)], env=env,
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        http, pid = f"http://127.0.0.1:{port}", app.pid
    port = int(http.rsplit(":", 1)[1])
    publishing = None
    try:
        deadline = time.monotonic() + 180
        while True:  # healthy with its views loaded (from its topics, in about a second)
            try:
                health = requests.get(f"{http}/healthz", timeout=5)
                if health.status_code == 200 and all(v["ready"] for v in health.json().get("views", {}).values()):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or (app is not None and app.poll() is not None):
                raise SystemExit("the dashboard did not become healthy within 180 s; is the stack up?")
            time.sleep(0.5)
        if app is not None:
            publishing = threading.Thread(target=publisher, args=(settings, args.rate, stop_publishing, sent),
                                          daemon=True)
            publishing.start()
        time.sleep(5)  # warm: the ordinary client's first snapshots, ticks flowing
        before_metrics = metrics(http)
        rss_before = rss_mib(pid)
        peak = [rss_before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mib(pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lags: list[float] = []

        def watch_lag() -> None:
            while not sampling.is_set():
                try:
                    lags.append(series(metrics(http), "webui_event_loop_lag_max_seconds").get("", float("nan")))
                except requests.RequestException:
                    pass
                time.sleep(1)

        lag_watcher = threading.Thread(target=watch_lag, daemon=True)
        lag_watcher.start()
        results: Any = multiprocessing.get_context("spawn").Queue()
        client = multiprocessing.get_context("spawn").Process(target=ordinary,
                                                              args=(f"ws://127.0.0.1:{port}/ws", args.seconds + 4,
                                                                    results, token))
        client.start()
        time.sleep(2)
        if args.baseline:
            time.sleep(args.seconds)
            tally = Tally()
        else:
            tally = asyncio.run(abuse(port, args.seconds))
        ordinary_result = results.get(timeout=120)
        client.join(30)
        seen = sorted(ordinary_result["ticks"])
        # published for BTC while the live socket was subscribed: every event time from its first to its last
        expected = [ts for ts in published_ts if seen and seen[0] <= ts <= seen[-1]]
        missing = len(set(expected) - set(seen))
        sampling.set()
        sampler.join()
        lag_watcher.join()
        after_metrics = metrics(http)
        time.sleep(35)  # let it settle: closed sockets released, caches expired, free memory handed back
        rss_after = rss_mib(pid)
        settled_metrics = metrics(http)
        lingering, waited = series(settled_metrics, "webui_open_sockets").get("", 0.0), 35
        while lingering > 0 and waited < 120:  # sockets whose peers read nothing go when the kernel gives up
            time.sleep(5)
            waited += 5
            lingering = series(metrics(http), "webui_open_sockets").get("", 0.0)

        print(f"dashboard pid {pid}: RSS before {rss_before:.0f} MiB, peak {peak[0]:.0f} MiB "
              f"(+{peak[0] - rss_before:.0f}), 35 s after {rss_after:.0f} MiB ({rss_after - rss_before:+.0f})")
        lag_p50, lag_p99 = (histogram_quantile(before_metrics, after_metrics, "webui_event_loop_lag_seconds", q)
                            for q in (0.5, 0.99))
        print(f"event-loop lag (100 ms sleeper): largest {max(lags, default=float('nan')) * 1000:.0f} ms, "
              f"p50 <= {lag_p50 * 1000:g} ms, p99 <= {lag_p99 * 1000:g} ms (histogram bucket bounds)")
        r = ordinary_result
        by_range = {rng: [ms for i, ms in enumerate(r["snapshot_ms"]) if i % 3 == k] for k, rng in enumerate(RANGES)}
        print(f"ordinary client: snapshots {r['received']}/{r['asked']}, latency p50 {pct(r['snapshot_ms'], 50):.0f} "
              f"ms p99 {pct(r['snapshot_ms'], 99):.0f} ms max {max(r['snapshot_ms'], default=float('nan')):.0f} ms ("
              + ", ".join(f"{rng} max {max(v, default=float('nan')):.0f}" for rng, v in by_range.items()) + "); "
              f"live ticks {len(r['ticks'])} received"
              + (f" ({missing} of the {len(expected)} published for BTC meanwhile missing)" if app is not None else "")
              + f", latency p50 {pct(r['tick_ms'], 50):.0f} ms p99 {pct(r['tick_ms'], 99):.0f} ms "
              f"max {max(r['tick_ms'], default=float('nan')):.0f} ms; disconnects {r['disconnects']}, "
              f"errors {r['errors'] or 'none'}")
        closed = series(after_metrics, "webui_connections_closed_total")
        refused = series(after_metrics, "webui_connections_refused_total")
        errors = series(after_metrics, "webui_client_errors_total")
        print("server: closed " + (", ".join(f"{k.split('=')[1][1:-2]} {v:.0f}" for k, v in closed.items())
                                   or "none")
              + "; refused " + (", ".join(f"{k.split('=')[1][1:-2]} {v:.0f}" for k, v in refused.items()) or "none")
              + "; error replies " + ", ".join(f"{k.split('=')[1][1:-2]} {v:.0f}" for k, v in errors.items())
              + f"; snapshots {series(after_metrics, 'webui_snapshots_total').get('', 0):.0f}"
              + f"; sockets open 35 s after: {series(settled_metrics, 'webui_open_sockets').get('', float('nan')):.0f}"
              + f" ({lingering:.0f} after {waited} s)")
        if os.environ.get("ABUSE_DEBUG"):
            print("snapshots (range, server_ms, basis, round trip ms):",
                  [(*a, round(b)) for a, b in zip(r["server_ms"], r["snapshot_ms"], strict=False)])
        print("abusers: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items())))
        ok = (peak[0] - rss_before < 150 and r["received"] == r["asked"] and r["tick_ms"]
              and pct(r["tick_ms"], 99) < 250 and (app is None or missing == 0))
        print("verdict:", "PASS" if ok else "FAIL", "(RSS peak < +150 MiB, every snapshot, live ticks p99 < 250 ms)")
        return 0 if ok else 1
    finally:
        stop_publishing.set()
        if publishing is not None:
            publishing.join(15)
        if app is not None:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(30)
            except subprocess.TimeoutExpired:
                app.kill()
            scratch.remove(settings, PREFIX, DATABASE)  # its topics, groups, registry subjects and database


if __name__ == "__main__":
    sys.exit(main())
