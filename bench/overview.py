"""The markets overview with many coins: the size of its message and the server's time to build it.

    python bench/overview.py [--coins 50] [--days 1] [--runs 20]

No service needed: the real app (in-process, Quart's test client, the real WebSocket handler and HistoryStore)
with its 1-minute candles' view filled as a running dashboard holds it, `--days` of 1-minute simulated candles for
each of `--coins` coins (the view keeps 26 hours), and the last 600 live ticks of each coin in the hub's buffer. Prints
the `overview` message's size (bytes, and gzip-compressed as a proxy would send it), the server's build time
(`server_ms`, a fresh build each run) and the client's round trip, then the same for one coin's 24 h chart
snapshot, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptopulse.settings import Settings  # noqa: E402
from cryptopulse.times import DAY_MS, MINUTE_MS  # noqa: E402
from webui.app import create_app  # noqa: E402
from webui.history import OVERVIEW_SECONDS  # noqa: E402
from webui.series import CandleRow  # noqa: E402
from webui.state import state  # noqa: E402
from webui.views import WindowView, candle_spec  # noqa: E402


def coins(count: int) -> tuple[str, ...]:
    names = ["BTC", "ETH", "XRP"]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(names) < count:
        i = len(names)
        names.append("S" + letters[i // 26 % 26] + letters[i % 26])
    return tuple(names[:count])


def fill(view: WindowView, symbols: tuple[str, ...], days: float) -> int:
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    rng = random.Random(42)
    count = 0
    for symbol in symbols:
        price = rng.uniform(0.1, 50_000)
        for start in range(now - int(days * DAY_MS), now + 1, MINUTE_MS):
            close = price * (1 + rng.gauss(0, 0.001))
            view.put(symbol, "simulated", CandleRow(start, price, max(price, close) * 1.0005,
                                                    min(price, close) * 0.9995, close, rng.uniform(1e3, 1e5)))
            price = close
            count += 1
    view.ready.set()
    return count


def live_ticks(symbols: tuple[str, ...]) -> list[dict]:
    now = int(time.time() * 1000)
    return [{"type": "tick", "symbol": s, "source": "simulated", "ts": now - (600 - i) * 1000, "price": 100.0 + i,
             "volume_24h": 1e6, "change_24h_pct": 0.1, "published_at": now} for s in symbols for i in range(600)]


async def measure(args: argparse.Namespace) -> None:
    symbols = coins(args.coins)
    settings = Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")
    app = create_app(settings, start_consumer=False, views=False, probe_seconds=0, symbols=symbols)
    async with app.test_app() as test_app:
        shared = state(app)
        view = WindowView(settings, candle_spec(settings, "1m"))
        started = time.perf_counter()
        rows = await asyncio.to_thread(fill, view, symbols, args.days)
        print(f"{args.coins} coins, {rows:,} candles in the candle view ({args.days} days each), "
              f"filled in {time.perf_counter() - started:.1f} s")
        shared.views["1m"] = view  # the app's views, which the history store reads
        shared.hub.publish(live_ticks(symbols))
        results: dict[str, list[tuple[float, float, int]]] = {"overview": [], "chart": []}
        async with test_app.test_client().websocket("/ws") as ws:
            for _ in range(args.runs):
                for kind, ask in (("overview", {"type": "overview"}),
                                  ("chart", {"type": "subscribe", "symbol": "BTC", "range": "24h"})):
                    if kind == "overview":
                        shared.history._overview = None  # a fresh build every run, not the shared answer
                    else:
                        shared.history._cache.entries.clear()
                        shared.history._cache.size = 0
                    sent = time.perf_counter()
                    await ws.send(json.dumps(ask))
                    while True:
                        text = await asyncio.wait_for(ws.receive(), 60)
                        if json.loads(text)["type"] in ("overview", "snapshot"):
                            break
                    message = json.loads(text)
                    results[kind].append((message["server_ms"], (time.perf_counter() - sent) * 1000, len(text)))
                    await asyncio.sleep(0.05)
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "overview"}))
            cached_text = await asyncio.wait_for(ws.receive(), 60)
            cached_ms = (time.perf_counter() - sent) * 1000
        overview = json.loads(cached_text)
        assert len(overview["coins"]) == args.coins and all(len(c["spark"]) >= 48 for c in overview["coins"])
        for kind, label in (("overview", f"overview ({args.coins} coins)"), ("chart", "one coin's 24 h chart")):
            server = [r[0] for r in results[kind]]
            trip = [r[1] for r in results[kind]]
            size = results[kind][-1][2]
            packed = len(gzip.compress(cached_text.encode())) if kind == "overview" else None
            print(f"{label}: {size:,} bytes" + (f" ({packed:,} gzipped)" if packed else "")
                  + f"; server_ms median {statistics.median(server):.1f}, max {max(server):.1f}; "
                  f"round trip median {statistics.median(trip):.1f} ms ({args.runs} fresh builds)")
        print(f"overview again within {OVERVIEW_SECONDS:g} s (the shared answer): round trip {cached_ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coins", type=int, default=50)
    parser.add_argument("--days", type=float, default=1)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
