"""History that lasts, the dashboard's half (issue 19): its charts and pages with weeks of candles stored.

    python bench/history.py [--days 60] [--symbols BTC,ETH,XRP] [--runs 5]

In a namespace of its own (topics, sinks, consumer groups and registry subjects `bench-history-*`, a database
`bench_history_<tag>`; all removed afterwards): `--days` of the simulated market's 1-minute candles for each coin and
every coarser interval rolled up from them (the cascade's aggregation), published on the candle topics as a back-fill
publishes them (streams/history.py), with a tick a minute on the prices topic as `control backfill` publishes them,
all stored by the namespace's sinks. So a dashboard started now finds everything published in the last minutes: the
worst case for views that load from their topics. Then:

1. A fresh dashboard (`webui`, a process of its own): once /healthz answers, the past window docs/webui.md gives as
   its example (a day before anything stored, as CSV, with and without `interval`: answered without a scan), then
   its first 24 h and 7 d charts from the history API (wall time to the answer, and `server_ms`), and how long each
   view took to load (/healthz).
2. Once loaded (in this process, its own views, no answer cache): each range's chart, `server_ms`, median of --runs.
3. Older than the views: a page of 1,000 1m bars 20 days back and of 1,000 5m bars 30 days back, read by `_id` (the
   app's way: one lookup per bar) against a range scan of the same window (the way it avoids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import connectors, scratch  # noqa: E402
from cryptopulse import kafka  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.candle import INTERVALS, Candle  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from cryptopulse.store import PRICES, candle_collection  # noqa: E402
from cryptopulse.times import DAY_MS, MINUTE_MS  # noqa: E402
from producer.sources.simulated import simulated_history  # noqa: E402
from streams.history import CandlePublisher  # noqa: E402
from tests.integration.browser import free_port  # noqa: E402
from tests.integration.history_data import roll_up  # noqa: E402
from webui.history import HistoryStore  # noqa: E402
from webui.views import WindowView, all_specs  # noqa: E402

PREFIX = "bench-history-"
PAST_WINDOW = {"start": 1764460800000, "end": 1764547200000, "format": "csv"}  # docs/webui.md's example
CHARTS = (("24h", "1m"), ("7d", "5m"), ("30d", "1h"), ("90d", "1h"), ("1y", "4h"), ("1y", "1d"), ("all", "1d"))


def publish(settings: Settings, symbols: list[str], days: float) -> dict[str, int]:
    """The candles of every interval and a tick a minute, as a back-fill publishes them; how many of each."""
    now = int(time.time() * 1000)
    end = now - now % MINUTE_MS + MINUTE_MS
    counts = dict.fromkeys([*INTERVALS, PRICES], 0)
    candles = CandlePublisher(settings)
    ticks = kafka.producer(settings, "bench-history-ticks")
    codec = AvroCodec(settings, settings.prices_topic, "tick")
    for symbol in symbols:
        minutes = simulated_history(symbol, 7, end - int(days * DAY_MS), end)
        made: list[Candle] = [*minutes, *(c for i in INTERVALS[1:] for c in roll_up(minutes, i, now))]
        for i in range(0, len(made), 20_000):  # within the producer's local queue
            candles.publish(made[i:i + 20_000], timeout=300)
        for candle in made:
            counts[candle.interval] += 1
        for minute in minutes:
            tick = minute.tick()
            value = codec.encode(tick.to_record())
            while True:
                try:
                    ticks.produce(settings.prices_topic, value, symbol.encode(),
                                  headers=[(kafka.ORIGIN_HEADER, kafka.BACKFILL),
                                           (kafka.EVENT_TIME_HEADER, str(tick.ts).encode())])
                    break
                except BufferError:
                    ticks.poll(0.1)
        counts[PRICES] += len(minutes)
    assert ticks.flush(300) == 0, "ticks not delivered"
    return counts


def wait_stored(settings: Settings, counts: dict[str, int], timeout: float = 1800) -> float:
    """Wait until the sinks have stored everything; returns how long it took."""
    started = time.monotonic()
    client = MongoClient(settings.mongodb_uri)
    try:
        database = client[settings.database]
        names = {PRICES: PRICES, **{i: candle_collection(i) for i in INTERVALS}}
        while time.monotonic() - started < timeout:
            if all(database[names[k]].estimated_document_count() >= n for k, n in counts.items()):
                return time.monotonic() - started
            time.sleep(2)
    finally:
        client.close()
    raise TimeoutError("the sinks did not store everything")


def fresh_dashboard(env: dict[str, str], symbol: str) -> dict[str, Any]:
    """`webui` started now: when /healthz first says 200, then its first 24 h and 7 d charts (asked again as told
    while it answers 503), and its views' load times."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "webui.cli"], env={**env, "WEBUI_PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = {}
    try:
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        healthy = time.monotonic()
        out["healthz_s"] = healthy - started
        def ask(params: dict[str, str | int]) -> dict[str, Any]:
            asked = time.monotonic()
            busy = 0
            while True:
                response = requests.get(f"{url}/api/v1/history", params={"symbol": symbol, **params}, timeout=70)
                if response.status_code != 503:
                    break
                busy += 1
                time.sleep(float(response.headers.get("Retry-After", 1)))
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            return {"status": response.status_code, "wall_s": time.monotonic() - asked,
                    "after_healthz_s": time.monotonic() - healthy, "server_ms": body.get("server_ms"),
                    "rows": len(body.get("rows", [])), "interval": body.get("interval"), "busy": busy,
                    "lines": response.text.count("\n")}

        out["past 5m"] = ask({**PAST_WINDOW, "interval": "5m"})
        out["past"] = ask(PAST_WINDOW)
        for range_ in ("24h", "7d"):
            out[range_] = ask({"range": range_})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            views = requests.get(f"{url}/healthz", timeout=5).json()["views"]
            if all(v["ready"] for v in views.values()):
                out["views"] = views
                break
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(30)
    return out


async def loaded(settings: Settings, symbol: str, runs: int) -> dict[str, Any]:
    """Every view loaded in this process, then each range's chart and the deep pages, server time."""
    views = {spec.name: WindowView(settings, spec) for spec in all_specs(settings)}
    started = time.monotonic()
    for view in views.values():
        view.start()
    for view in views.values():
        await asyncio.to_thread(view.ready.wait, 600)
    out: dict[str, Any] = {"load_s": time.monotonic() - started,
                           "rows": {name: view.status()["rows"] for name, view in views.items()}}
    store = HistoryStore(settings.mongodb_uri, settings.database, pool=4, max_points=1500, cache_seconds=0,
                         recent=lambda _symbol: [], views=views, deadline=600)
    scanning = HistoryStore(settings.mongodb_uri, settings.database, pool=4, max_points=1500, cache_seconds=0,
                            recent=lambda _symbol: [], views={}, deadline=600)
    try:
        charts = {}
        for range_, interval in CHARTS:
            times, bars = [], 0
            for _ in range(runs + 1):
                snap = await store.snapshot(symbol, range_, interval=interval)
                times.append(snap["server_ms"])
                bars = len(snap["candles"])
            charts[f"{range_} of {interval}"] = (statistics.median(times[1:]), bars)
        out["charts"] = charts
        now = int(time.time() * 1000)
        pages = {}
        for interval, back in (("1m", 20 * DAY_MS), ("5m", 30 * DAY_MS)):
            by_id = []
            for k in range(runs):
                page = await store.page(symbol, interval, now - back - k * 1000 * MINUTE_MS * 5, 1000)
                by_id.append(json.loads(page.text)["server_ms"])
            scanned = json.loads((await scanning.page(symbol, interval, now - back, 1000)).text)
            pages[interval] = (statistics.median(by_id), scanned["server_ms"])
        out["pages"] = pages
        return out
    finally:
        await store.close()
        await scanning.close()
        for view in views.values():
            await asyncio.to_thread(view.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=60)
    parser.add_argument("--symbols", default="BTC,ETH,XRP")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    symbols = args.symbols.split(",")
    database = f"bench_history_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **scratch.environment(PREFIX, database), "SYMBOLS": args.symbols}
    os.environ.update(env)
    settings = Settings()
    try:
        connectors.deploy(settings, say=lambda line: None)
        started = time.monotonic()
        counts = publish(settings, symbols, args.days)
        published = time.monotonic() - started
        stored = wait_stored(settings, counts)
        print(f"{args.days:g} days of {', '.join(symbols)}: " + ", ".join(f"{n:,} {k}" for k, n in counts.items())
              + f"; published in {published:.0f} s, stored {stored:.0f} s later")
        fresh = fresh_dashboard(env, symbols[0])
        print(f"1. a fresh dashboard: /healthz 200 after {fresh['healthz_s']:.1f} s; then")
        for name in ("past 5m", "past"):
            answer = fresh[name]
            print(f"   docs/webui.md's past window as CSV{' (interval 5m)' if '5m' in name else ''}: HTTP "
                  f"{answer['status']}, {answer['lines']} lines, {answer['wall_s'] * 1000:.0f} ms to the answer, "
                  f"503 busy {answer['busy']} times")
        for range_ in ("24h", "7d"):
            chart = fresh[range_]
            print(f"   its first {range_} chart ({chart['rows']} bars of {chart['interval']}, HTTP {chart['status']}): "
                  f"{chart['wall_s'] * 1000:.0f} ms to the answer ({chart['after_healthz_s']:.2f} s after /healthz), "
                  f"server_ms {chart['server_ms']}, 503 busy {chart['busy']} times")
        views = fresh.get("views", {})
        print("   views loaded in: " + ", ".join(f"{n} {v['load_s']} s ({v['read']:,} read, {v['skipped']:,} skipped)"
                                                for n, v in views.items()))
        out = asyncio.run(loaded(settings, symbols[0], args.runs))
        print(f"2. once loaded (all views in {out['load_s']:.1f} s here; rows: "
              + ", ".join(f"{n} {r:,}" for n, r in out["rows"].items()) + f"), server_ms median of {args.runs}:")
        for name, (ms, bars) in out["charts"].items():
            print(f"   {name}: {ms:.1f} ms ({bars} bars)")
        print("3. pages of 1,000 bars older than the views, server_ms:")
        for interval, (by_id, scanned) in out["pages"].items():
            print(f"   {interval}: by _id {by_id:.0f} ms (median of {args.runs}); by a range scan {scanned:.0f} ms")
    finally:
        removed = scratch.remove(settings, PREFIX, database)
        print(f"removed: {removed}")


if __name__ == "__main__":
    main()
