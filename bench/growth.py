"""Time is a load too: does what CryptoPulse costs stay flat as the days it has run grow?

    python bench/growth.py [--days 1,30,365] [--coins 3,50] [--rss-after 60] [--no-dashboard]

For each number of days N and of coins C, a namespace of its own (topics, groups, subjects `bench-growth-...`,
removed afterwards) is filled with what a system that ran N days holds in Kafka: every interval's candles of the
last N days within that interval's retention (1m 30 d, 5m and 15m 180 d, 1h 2 y, 4h, 1d and 1w for ever; simulated
prices), each record stamped with the time it would have been published (the end of its bucket), plus the roll-up's
checkpoints and a few minutes of live ticks. Nothing goes to MongoDB: what starts and charts from Kafka is measured.
Then it prints, per N and C:
- the roll-up (`streams run`: the 1-minute roll-up and the cascade): seconds from start to assigned and caught up
  (both say "assigned" once their state is read back), and its resident memory after `--rss-after` seconds;
- the candle topics: records and bytes on disk;
- the dashboard (`webui`): seconds from start to its first 24 h and 7 d charts (each asked for by a client of its own
  as soon as it takes connections) and to every view loaded, its resident memory, and, once loaded, the server time
  of a 1 y chart of 1d, a 30 d chart of 1h and a 24 h chart of 1m (the snapshots' `server_ms`: the first ask's, and
  the median of five builds after it, each asked past the answer cache).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import TopicPartition  # noqa: E402

from control import scratch  # noqa: E402
from cryptopulse import kafka, topics  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.candle import INTERVAL_MS, INTERVALS, Candle, bucket_of  # noqa: E402
from cryptopulse.settings import PROJECT_DIR, Settings  # noqa: E402
from cryptopulse.store import Retention, candle_collection  # noqa: E402
from cryptopulse.tick import Tick  # noqa: E402
from cryptopulse.times import DAY_MS, MINUTE_MS, now_ms  # noqa: E402

PREFIX = "bench-growth-"
COINS = ["BTC", "ETH", "XRP", "SOL", "ADA", "DOGE", "DOT", "LINK", "LTC", "BCH", "XLM", "TRX", "ATOM", "ETC",
         "FIL", "APT", "ARB", "OP", "NEAR", "ICP", "HBAR", "VET", "ALGO", "EGLD", "SAND", "MANA", "AAVE", "GRT",
         "EOS", "XTZ", "THETA", "AXS", "FTM", "RUNE", "KAVA", "ZEC", "DASH", "NEO", "IOTA", "WAVES", "CHZ", "ENJ",
         "BAT", "ZIL", "ONE", "QTUM", "ICX", "ONT", "SC", "RVN"]


def namespace(days: int, coins: int) -> dict[str, str]:
    return scratch.environment(f"{PREFIX}{os.getpid()}-{days}d-{coins}c-", f"bench_growth_{os.getpid()}")


def fill(settings: Settings, days: int, coins: list[str], rng: random.Random) -> dict[str, int]:
    """Every interval's candles of the last `days` within its retention, stamped with their publish time."""
    topics.create_missing(settings)
    retention = Retention()
    producer = kafka.producer(settings, "bench-growth", {"linger.ms": 50, "queue.buffering.max.messages": 500_000,
                                                         "batch.size": 1_000_000})
    codecs = {i: AvroCodec(settings, settings.candle_topic(i), "candle") for i in INTERVALS}
    partitions = settings.candles_partitions
    now = now_ms()
    counts = dict.fromkeys(INTERVALS, 0)
    for interval in INTERVALS:
        keep = retention.keep_ms(candle_collection(interval))
        span = days * DAY_MS if keep is None else min(days * DAY_MS, keep)
        width = INTERVAL_MS[interval]
        first = bucket_of(now - span, interval) + width
        last = bucket_of(now, interval)  # the open bucket is the live roll-up's
        prices = {symbol: 100.0 * (1 + rng.random()) for symbol in coins}
        for start in range(first, last, width):  # in time order, as a running system publishes them
            for symbol in coins:
                price = prices[symbol] = prices[symbol] * (1 + rng.gauss(0, 0.002 * (width / MINUTE_MS) ** 0.5))
                candle = Candle(symbol, "simulated", start, price, price * 1.002, price * 0.998, price, 60,
                                final=True, interval=interval)
                value = codecs[interval].encode(candle.to_record())
                while True:
                    try:
                        producer.produce(settings.candle_topic(interval), value, candle.id.encode(),
                                         kafka.partition_for(symbol, partitions), timestamp=min(now, start + width))
                        break
                    except BufferError:
                        producer.poll(0.05)
                counts[interval] += 1
            producer.poll(0)
    ticks = AvroCodec(settings, settings.prices_topic, "tick")
    for second in range(600):  # ten minutes of live ticks
        for symbol in coins:
            tick = Tick(symbol, "simulated", now - (600 - second) * 1000, 100.0)
            producer.produce(settings.prices_topic, ticks.encode(tick.to_record()), symbol.encode())
        producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("the history was not delivered")
    return counts


def topic_sizes(settings: Settings) -> tuple[int, int]:
    """Records (end minus start offsets) and bytes on disk (blocks allocated: Kafka's index files are sparse) of
    every candle topic."""
    client = kafka.consumer(settings, "bench-growth", "bench-growth-probe", {"log_level": 0})
    records = 0
    try:
        for interval in INTERVALS:
            topic = settings.candle_topic(interval)
            for p in kafka.partitions_of(client, topic):
                low, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                records += high - low
    finally:
        client.close()
    data = settings.state_dir / "kafka" / "data"
    size = sum(f.stat().st_blocks for interval in INTERVALS
               for folder in data.glob(f"{settings.candle_topic(interval)}-*") if folder.is_dir()
               for f in folder.iterdir() if f.is_file()) * 512
    return records, size


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_streams(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, float]:
    """`streams run` (no retention: nothing is stored), and the seconds until both stages are assigned."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--from-end", "--no-retention"],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **env},
                               cwd=PROJECT_DIR)
    while log.read_text().count("assigned ") < 2:
        if process.poll() is not None or time.monotonic() - started > 600:
            raise RuntimeError(f"streams run did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return process, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def views_ready(port: int, started: float) -> float:
    """Seconds from `started` until /healthz says every view of the dashboard is ready."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                    views = json.load(answer).get("views") or {}
            except urllib.error.HTTPError as unhealthy:  # a 503 says the same of the views
                views = json.load(unhealthy).get("views") or {}
            if views and all(view.get("ready") for view in views.values()):
                return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    raise RuntimeError("the dashboard's views were not ready within 300 s")


def dashboard(env: dict[str, str], log: Path, symbol: str) -> dict[str, Any]:
    """Start `webui`, time its first 24 h and 7 d charts, then the server time of 1 y of 1d, 30 d of 1h and 24 h
    of 1m (median of 5), and its resident memory."""
    import websockets

    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "webui.cli", "--port", str(port)], stdout=log.open("w"),
                               stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=PROJECT_DIR)

    async def connect() -> Any:
        deadline = time.monotonic() + 300
        while True:
            try:
                return await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def snapshot(ws: Any, ask: dict[str, Any]) -> dict[str, Any]:
        while True:  # asked again after a "busy" (a window read from the store while the views load)
            await ws.send(json.dumps({"type": "subscribe", "symbol": symbol, **ask}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message.get("type") == "snapshot":
                    return message
                if message.get("type") == "error":
                    if message.get("retry_ms") is None:
                        raise RuntimeError(message)
                    await asyncio.sleep(message["retry_ms"] / 1000)
                    break

    async def first_chart(range_: str) -> tuple[float, int]:
        """A client of its own that asks for `range_` as soon as the dashboard takes connections."""
        async with await connect() as ws:
            snap = await snapshot(ws, {"range": range_})
            return round(time.monotonic() - started, 2), len(snap.get("candles", []))

    async def charts() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for range_, (seconds, bars) in zip(("24h", "7d"), await asyncio.gather(first_chart("24h"), first_chart("7d")),
                                           strict=True):
            out[f"first {range_} after start s"], out[f"first {range_} bars"] = seconds, bars
        # the server times below are those of a loaded dashboard, not of one sharing the GIL with its loading
        out["all views ready after start s"] = await asyncio.to_thread(views_ready, port, started)
        async with await connect() as ws:
            for name, ask in (("1y of 1d", {"range": "1y", "interval": "1d"}),
                              ("30d of 1h", {"range": "30d", "interval": "1h"}),
                              ("24h of 1m", {"range": "24h", "interval": "1m"})):
                times = []
                for _ in range(6):  # each past the answer cache's 2 s: a build of its own
                    times.append((await snapshot(ws, ask)).get("server_ms", float("nan")))
                    await asyncio.sleep(2.1)
                out[f"{name} server ms, first"] = times[0]  # its rows decoded then (webui/views.py)
                out[f"{name} server ms"] = round(sorted(times[1:])[2], 2)
                out[f"{name} bars"] = len((await snapshot(ws, ask)).get("candles", []))
        return out

    try:
        result = asyncio.run(charts())
        time.sleep(2)
        result["rss MiB"] = round(rss_mib(process.pid), 1)
        return result
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def one(days: int, coins: int, rss_after: float, with_dashboard: bool, work: Path) -> dict[str, Any]:
    env = namespace(days, coins)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        settings = Settings()
        fill_started = time.monotonic()
        counts = fill(settings, days, COINS[:coins], random.Random(days * 1000 + coins))
        row: dict[str, Any] = {"days": days, "coins": coins, "candles published": sum(counts.values()),
                               "fill s": round(time.monotonic() - fill_started, 1)}
        process, startup = start_streams(env, work / f"streams-{days}-{coins}.log")
        try:
            row["roll-up start-up s"] = round(startup, 2)
            time.sleep(rss_after)
            row["roll-up rss MiB"] = round(rss_mib(process.pid), 1)
        finally:
            process.terminate()
            process.wait(60)
        row["topic records"], size = topic_sizes(settings)
        row["topic MiB"] = round(size / 2**20, 1)
        if with_dashboard:
            row |= dashboard(env, work / f"webui-{days}-{coins}.log", COINS[0])
        return row
    finally:
        scratch.remove(Settings(), env["CONNECTOR_PREFIX"], env["MONGODB_DATABASE"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", default="1,30,365")
    parser.add_argument("--coins", default="3,50")
    parser.add_argument("--rss-after", type=float, default=60.0)
    parser.add_argument("--no-dashboard", action="store_true")
    args = parser.parse_args()
    work = Path("test-artifacts") / "growth"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for coins in map(int, args.coins.split(",")):
        for days in map(int, args.days.split(",")):
            row = one(days, coins, args.rss_after, not args.no_dashboard, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
