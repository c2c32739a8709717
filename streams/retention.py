"""Retention of raw ticks and candles: TTL indexes on real MongoDB, a periodic delete on FerretDB (no TTL).

The cut-off is computed from the wall clock at each run and deletes strictly older documents, so nothing
newer than the limit is ever removed. FerretDB scans the collection for each delete; keeping `prices`
small is the point of running it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pymongo.collection import Collection
from pymongo.database import Database

from cryptopulse import store
from cryptopulse.settings import env_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each collection keeps its documents, by which date field."""

    ticks: timedelta = field(default_factory=lambda: timedelta(
        hours=env_number("RETENTION_TICKS_HOURS", 48, 0.001, 1e6, unit="hours")))
    candles: timedelta = field(default_factory=lambda: timedelta(
        days=env_number("RETENTION_CANDLES_DAYS", 30, 0.001, 1e6, unit="days")))

    def rules(self) -> list[tuple[str, str, timedelta]]:
        return [(store.PRICES, "ts", self.ticks), (store.CANDLES, "start", self.candles)]


def is_ferretdb(db: Database) -> bool:
    """FerretDB answers buildInfo with a `ferretdbVersion` field; MongoDB does not."""
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def delete_older(collection: Collection, date_field: str, cutoff: datetime) -> int:
    """Delete the documents whose `date_field` is strictly before `cutoff`; returns how many."""
    return collection.delete_many({date_field: {"$lt": cutoff}}).deleted_count


def ensure_ttl(collection: Collection, date_field: str, keep: timedelta) -> None:
    """A TTL index on `date_field` (real MongoDB); a changed period replaces the index."""
    name = f"ttl_{date_field}"
    seconds = int(keep.total_seconds())
    existing = collection.index_information().get(name)
    if existing and existing.get("expireAfterSeconds") == seconds:
        return
    if existing:
        collection.drop_index(name)
    collection.create_index([(date_field, 1)], name=name, expireAfterSeconds=seconds)


def run_once(db: Database, policy: RetentionPolicy, now: datetime | None = None,
             ferretdb: bool | None = None) -> dict[str, int]:
    """Apply the policy once: {collection: documents deleted} (TTL indexes on MongoDB delete by themselves)."""
    now = now or datetime.now(UTC)
    ferretdb = is_ferretdb(db) if ferretdb is None else ferretdb
    deleted: dict[str, int] = {}
    for name, date_field, keep in policy.rules():
        if ferretdb:
            deleted[name] = delete_older(db[name], date_field, now - keep)
        else:
            ensure_ttl(db[name], date_field, keep)
            deleted[name] = 0
    if any(deleted.values()):
        log.info("retention deleted %s", deleted)
    return deleted
