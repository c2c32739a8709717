"""Retention after a long back-fill: the store holds what the old back-fill left (a tick and a candle every minute
for `--days`, every coarser interval too), retention runs once, and what is left is printed per collection.

    python bench/retention.py [--days 60] [--coins 3]

In a database of its own (`bench_retention_<pid>`, dropped afterwards), written directly (the bench is about the
store, not the pipeline). Prints, per collection: documents before, deleted, the run's seconds and rate, documents
after, and the oldest left against the limit (none may be older).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import ASCENDING, MongoClient  # noqa: E402

from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_of  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402
from cryptopulse.store import PRICES, Retention, candle_collection  # noqa: E402
from cryptopulse.times import DAY_MS, MINUTE_MS, iso_utc, now_ms  # noqa: E402
from streams.retention import RetentionJob  # noqa: E402


def seed(db, days: int, coins: list[str], now: int) -> dict[str, int]:
    counts = {}
    docs = []

    def flush(collection: str) -> None:
        if docs:
            db[collection].insert_many(docs, ordered=False)
            counts[collection] = counts.get(collection, 0) + len(docs)
            docs.clear()

    for minute in range(bucket_of(now - days * DAY_MS, "1m"), now, MINUTE_MS):
        for symbol in coins:
            docs.append({"_id": f"{symbol}|simulated|{minute}", "symbol": symbol, "source": "simulated",
                         "ts": datetime.fromtimestamp(minute / 1000, UTC), "price": 100.0})
        if len(docs) >= 10_000:
            flush(PRICES)
    flush(PRICES)
    for interval in INTERVALS:
        width = INTERVAL_MS[interval]
        collection = candle_collection(interval)
        for start in range(bucket_of(now - days * DAY_MS, interval), now, width):
            for symbol in coins:
                docs.append({"_id": f"{symbol}|simulated|{interval}|{start}", "symbol": symbol, "source": "simulated",
                             "interval": interval, "start": datetime.fromtimestamp(start / 1000, UTC), "open": 1.0,
                             "high": 1.0, "low": 1.0, "close": 1.0, "ticks": 1, "origin": "ohlc", "final": True})
            if len(docs) >= 10_000:
                flush(collection)
        flush(collection)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--coins", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    client = MongoClient(settings.mongodb_uri, tz_aware=True)
    db = client[f"bench_retention_{os.getpid()}"]
    now = now_ms()
    try:
        started = time.monotonic()
        before = seed(db, args.days, ["BTC", "ETH", "XRP", "SOL", "ADA"][:args.coins], now)
        print(f"seeded {sum(before.values()):,} documents ({args.days} days, {args.coins} coins) in "
              f"{time.monotonic() - started:.0f} s")
        retention = Retention()
        runs = RetentionJob(retention).run_due(db, now=now)
        print(f"{'collection':12} {'keeps':>9} {'before':>9} {'deleted':>9} {'seconds':>8} {'docs/s':>8} "
              f"{'after':>9}  oldest left")
        for run in runs:
            after = db[run.collection].count_documents({})
            field = "ts" if run.collection == PRICES else "start"
            oldest = db[run.collection].find_one({}, {field: 1}, sort=[(field, ASCENDING)])
            keep = "for ever" if run.keep_ms is None else f"{run.keep_ms / DAY_MS:g} d"
            left = iso_utc(oldest[field]) if oldest else "-"
            too_old = oldest and run.cutoff is not None and oldest[field].timestamp() * 1000 < run.cutoff
            rate = run.deleted / run.seconds if run.seconds else 0
            print(f"{run.collection:12} {keep:>9} {before.get(run.collection, 0):>9,} {run.deleted:>9,} "
                  f"{run.seconds:>8.1f} {rate:>8,.0f} {after:>9,}  {left}"
                  + ("  OLDER THAN THE LIMIT" if too_old else "") + (f"  FAILED: {run.error}" if run.error else ""))
        return 0
    finally:
        client.drop_database(db.name)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
