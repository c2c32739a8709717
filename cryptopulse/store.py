"""The store: MongoDB's collections (written only by the sink connectors) and one way to open it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pymongo import MongoClient
from pymongo.database import Database

from cryptopulse.settings import Settings

PRICES = "prices"  # ticks, `_id` = symbol|source|ts, time field `ts`
CANDLES = "candles_1m"  # 1-minute candles, `_id` = symbol|source|1m|start, time field `start`
ALERTS = "alerts"  # price alerts (connectors/mongo-sink-alerts.json), `_id` = rule|symbol|source|ts, time field `ts`
TIME_FIELD = {PRICES: "ts", CANDLES: "start"}


@contextlib.contextmanager
def database(settings: Settings, timeout_ms: int = 5_000) -> Iterator[Database]:
    """The pipeline's database, with times as aware UTC datetimes; the client is closed on the way out."""
    client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=timeout_ms)
    try:
        yield client[settings.database]
    finally:
        client.close()
