"""The store: MongoDB's collections (written only by the sink connectors), how long each keeps what it holds, and
one way to open it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from pymongo import MongoClient
from pymongo.database import Database

from cryptopulse.candle import INTERVALS
from cryptopulse.settings import Settings, env_number
from cryptopulse.times import DAY_MS, HOUR_MS

PRICES = "prices"  # ticks, `_id` = symbol|source|ts, time field `ts`
ALERTS = "alerts"  # price alerts (connectors/mongo-sink-alerts.json), `_id` = rule|symbol|source|ts, time field `ts`
# accounts (connectors/mongo-sink-accounts.json, docs/security.md): `_id` = name, token id, random id
USERS = "users"
API_TOKENS = "api_tokens"
AUDIT = "audit"
# every outcome of an alert's delivery to a channel (connectors/mongo-sink-alert-deliveries.json),
# `_id` = alert id|channel|at, time field `at`
ALERT_DELIVERIES = "alert_deliveries"


def candle_collection(interval: str) -> str:
    """One collection per interval, `_id` = symbol|source|interval|start, time field `start`: FerretDB scans a whole
    collection for a range query, so a year of daily candles is read without touching a month of minutes."""
    return f"candles_{interval}"


CANDLES = candle_collection("1m")
CANDLE_COLLECTIONS = {interval: candle_collection(interval) for interval in INTERVALS}
TIME_FIELD = {PRICES: "ts", **{name: "start" for name in CANDLE_COLLECTIONS.values()}}

# How long each resolution is kept (days; None: for ever): minutes for weeks, hours for years, days for ever.
CANDLE_DAYS = {"1m": 30, "5m": 180, "15m": 180, "1h": 730, "4h": None, "1d": None, "1w": None}


def _candle_days() -> dict[str, int | None]:
    days = {}
    for interval, default in CANDLE_DAYS.items():
        value = env_number(f"RETENTION_{interval.upper()}_DAYS", default or 0, 0, 1e6, unit="days (0: for ever)")
        days[interval] = value or None
    return days


@dataclass(frozen=True)
class Retention:
    """How long each collection (and each candle topic) keeps its documents: ticks in hours
    (RETENTION_TICKS_HOURS, 48), candles in days per interval (RETENTION_1M_DAYS ... RETENTION_1W_DAYS; 0 is for
    ever). Kafka's candle topics keep as long as their collections (cryptopulse/topics.py)."""

    ticks_hours: float = field(default_factory=lambda: env_number("RETENTION_TICKS_HOURS", 48, 0.001, 1e6,
                                                                  unit="hours"))
    candle_days: dict[str, float | None] = field(default_factory=_candle_days)

    def keep_ms(self, collection: str) -> int | None:
        """How long `collection` keeps a document (ms), None for ever."""
        if collection == PRICES:
            return int(self.ticks_hours * HOUR_MS)
        interval = collection.removeprefix("candles_")
        days = self.candle_days.get(interval)
        return None if days is None else int(days * DAY_MS)

    def collections(self) -> list[tuple[str, str, int | None]]:
        """(collection, its time field, how long it keeps: ms or None) for the ticks and every interval."""
        return [(name, TIME_FIELD[name], self.keep_ms(name)) for name in (PRICES, *CANDLE_COLLECTIONS.values())]


@contextlib.contextmanager
def database(settings: Settings, timeout_ms: int = 5_000) -> Iterator[Database]:
    """The pipeline's database, with times as aware UTC datetimes; the client is closed on the way out."""
    client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=timeout_ms)
    try:
        yield client[settings.database]
    finally:
        client.close()
