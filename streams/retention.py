"""Retention: each collection keeps what its resolution deserves (cryptopulse.store.Retention: ticks 48 h, 1-minute
candles 30 d, 5m and 15m 180 d, 1h 2 y, 4h, 1d and 1w for ever), whatever is due, however much.

- Real MongoDB: a TTL index per collection on its time field deletes by itself (`ttl_<field>`, replaced when the
  period changes, dropped for a collection kept for ever).
- FerretDB has no TTL indexes, and deletes everything a `delete_many` matches in one SQL statement with a variable
  per document: past ~32,000 documents due it fails ("too many SQL variables"), every time, so nothing is ever
  deleted again. So the times due are read (a scan, as every FerretDB range query is), at most `READ_AT_ONCE` at a
  time, and deleted in time slices of at most `SLICE` documents, one `delete_many` each (`delete_older`).
  A collection is looked at once per `period(keep)`: its retention / 144 between 10 minutes and a day (ticks every
  20 minutes, minutes every 5 hours, hours daily), so the scans cost little.

The cut-off is computed from the wall clock at each run and strictly older documents are deleted: nothing newer
than the limit is ever removed. Every run is reported (`RetentionRun`) on the retention topic, one record per
collection, and `control status` shows the last one: when, what it deleted, any failure.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaException
from pymongo import DeleteOne
from pymongo.collection import Collection
from pymongo.database import Database

from cryptopulse import kafka
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import CryptoPulseError
from cryptopulse.settings import Settings
from cryptopulse.store import Retention
from cryptopulse.times import DAY_MS, MINUTE_MS, now_ms

log = logging.getLogger(__name__)

SLICE = 25_000  # documents one delete_many may match: under SQLite's 32,766 variables, room left for newcomers
READ_AT_ONCE = 200_000  # times due held at once (the oldest): bounded memory, whatever is due
BATCH = 1_000  # one-document deletes per bulk write, where one instant holds more than a slice


@dataclass(frozen=True)
class RetentionRun:
    """What one run did to one collection (schemas/retention_run.avsc)."""

    collection: str
    at: int  # epoch ms, when it ran
    keep_ms: int | None  # None: kept for ever
    cutoff: int | None  # epoch ms: documents strictly older were deleted
    deleted: int
    seconds: float
    store: str  # "ferretdb" (deleted here) or "mongodb" (a TTL index deletes)
    error: str | None = None

    def to_record(self) -> dict[str, object]:
        return asdict(self)


def period(keep_ms: int) -> float:
    """Seconds between two looks at a collection that keeps `keep_ms`: often enough to stay near its limit, rarely
    enough that the scans cost little."""
    return min(DAY_MS, max(10 * MINUTE_MS, keep_ms / 144)) / 1000


def is_ferretdb(db: Database) -> bool:
    """FerretDB answers buildInfo with a `ferretdbVersion` field; MongoDB does not."""
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def delete_older(collection: Collection, date_field: str, cutoff: datetime, slice_size: int = SLICE,
                 read_at_once: int = READ_AT_ONCE) -> int:
    """Delete the documents whose `date_field` is strictly before `cutoff`, in bounded batches; returns how many.

    The times due are read (at most `read_at_once`, the oldest: every document older than the newest of them is
    among them), cut into time slices of at most `slice_size` documents, and each slice deleted by one
    `delete_many` on its time range: one statement under SQLite's variable limit (measured here: ~35,000 documents
    a second, against ~1,000 for deletes by `_id` one by one, which are the fallback when a pass finds only one
    instant)."""
    deleted = 0
    while True:
        due = collection.find({date_field: {"$lt": cutoff}}, {date_field: 1, "_id": 0}, batch_size=10_000)
        times = heapq.nsmallest(read_at_once, (doc[date_field] for doc in due))
        if not times:
            return deleted
        whole = len(times) < read_at_once  # every document due was read: the last slice ends at the cut-off
        upper = cutoff if whole else times[-1]
        bounds = [*times[::slice_size], upper]
        before = deleted
        for low, high in zip(bounds, bounds[1:], strict=False):
            if low < high:
                deleted += collection.delete_many({date_field: {"$gte": low, "$lt": high}}).deleted_count
        if deleted == before:  # one instant holds more than a slice: by `_id`, in bulk writes of BATCH
            ids = [doc["_id"] for doc in collection.find({date_field: times[0]}, {"_id": 1})]
            for i in range(0, len(ids), BATCH):
                deleted += collection.bulk_write([DeleteOne({"_id": _id}) for _id in ids[i:i + BATCH]],
                                                 ordered=False).deleted_count
        if whole:
            return deleted


def ensure_ttl(collection: Collection, date_field: str, keep_ms: int | None) -> None:
    """A TTL index on `date_field` (real MongoDB); a changed period replaces it, for ever drops it."""
    name = f"ttl_{date_field}"
    existing = collection.index_information().get(name)
    seconds = None if keep_ms is None else keep_ms // 1000
    if existing and existing.get("expireAfterSeconds") == seconds:
        return
    if existing:
        collection.drop_index(name)
    if seconds is not None:
        collection.create_index([(date_field, 1)], name=name, expireAfterSeconds=seconds)


class RetentionJob:
    """Applies the retention to each collection when it is due; what each run did goes to `report`."""

    def __init__(self, retention: Retention | None = None, report: Callable[[RetentionRun], None] = lambda run: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention or Retention()
        self.report = report
        self.clock = clock
        self._next: dict[str, float] = {}  # collection -> when it is due (clock)

    def run_due(self, db: Database, now: int | None = None, ferretdb: bool | None = None,
                everything: bool = False) -> list[RetentionRun]:
        """One run of every collection that is due (of every one, with `everything`)."""
        ferretdb = is_ferretdb(db) if ferretdb is None else ferretdb
        runs = []
        for name, date_field, keep in self.retention.collections():
            if not everything and self.clock() < self._next.get(name, float("-inf")):
                continue
            runs.append(self._run(db, name, date_field, keep, now or now_ms(), ferretdb))
            if keep is not None:
                self._next[name] = self.clock() + period(keep)
            else:
                self._next[name] = self.clock() + DAY_MS / 1000
        for run in runs:
            self.report(run)
        return runs

    def _run(self, db: Database, name: str, date_field: str, keep: int | None, now: int,
             ferretdb: bool) -> RetentionRun:
        started = time.perf_counter()
        cutoff = None if keep is None else now - keep
        store = "ferretdb" if ferretdb else "mongodb"
        try:
            if not ferretdb:
                ensure_ttl(db[name], date_field, keep)
                deleted = 0
            elif cutoff is None:
                deleted = 0
            else:
                deleted = delete_older(db[name], date_field, datetime.fromtimestamp(cutoff / 1000, UTC))
        except Exception as error:  # noqa: BLE001 - reported, and tried again at its next run
            log.warning("retention of %s failed: %s", name, error)
            return RetentionRun(name, now, keep, cutoff, 0, round(time.perf_counter() - started, 3), store,
                                str(error).splitlines()[0][:300])
        seconds = round(time.perf_counter() - started, 3)
        if deleted:
            log.info("retention deleted %d from %s (older than %s) in %.1f s", deleted, name,
                     timedelta(milliseconds=keep or 0), seconds)
        return RetentionRun(name, now, keep, cutoff, deleted, seconds, store)


class RetentionReport:
    """Publishes each run on the retention topic (compacted, key = collection), for `control status`; a report that
    cannot be delivered is logged, never retried (the next run reports again)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.retention_topic
        self._codec = AvroCodec(settings, self.topic, "retention_run")
        self._producer = kafka.producer(settings, "retention", {"message.timeout.ms": 60_000, "linger.ms": 0})

    def __call__(self, run: RetentionRun) -> None:
        try:
            self._producer.produce(self.topic, self._codec.encode(run.to_record()), run.collection.encode())
            self._producer.flush(10)
        except (CryptoPulseError, KafkaException, BufferError) as error:
            log.warning("retention run of %s not reported: %s", run.collection, error)
