"""Retention against the real store (streams/retention.py): only what is older than its collection's limit goes,
whatever is due — hundreds of thousands of documents at once on FerretDB, where one delete of everything due used to
fail for good ("too many SQL variables") — and every run is reported on the retention topic for `control status`."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from cryptopulse.settings import PROJECT_DIR
from cryptopulse.store import CANDLE_COLLECTIONS, CANDLE_DAYS, Retention
from cryptopulse.times import epoch_ms
from streams import retention
from tests import children


def test_retention_removes_only_what_is_older_than_the_limit(settings, mongo):
    db = mongo[f"scratch_retention_{uuid.uuid4().hex[:8]}"]  # a scratch database: the real one is shared
    now = datetime.now(UTC).replace(microsecond=0)
    now_ms = epoch_ms(now)
    policy = Retention(ticks_hours=48, candle_days={**CANDLE_DAYS, "1m": 30})
    day, hour, second = timedelta(days=1), timedelta(hours=1), timedelta(seconds=1)
    ages = [40 * day, 30 * day + second, 30 * day, 29 * day, 48 * hour + second, 48 * hour, 47 * hour, 0 * second]
    try:
        db["prices"].insert_many([{"_id": f"p{i}", "ts": now - age} for i, age in enumerate(ages)])
        db["candles_1m"].insert_many([{"_id": f"c{i}", "start": now - age} for i, age in enumerate(ages)])
        db["candles_1d"].insert_many([{"_id": f"d{i}", "start": now - 3650 * age} for i, age in enumerate(ages)])
        ferretdb = retention.is_ferretdb(db)
        job = retention.RetentionJob(policy)
        deleted = {run.collection: run.deleted for run in job.run_due(db, now=now_ms)}
        if ferretdb:
            assert {c: deleted[c] for c in ("prices", "candles_1m", "candles_1d")} == {
                "prices": 5, "candles_1m": 2, "candles_1d": 0}  # days are kept for ever
            # exactly at the limit is not older than it: kept
            assert sorted(d["_id"] for d in db["prices"].find()) == ["p5", "p6", "p7"]
            assert sorted(d["_id"] for d in db["candles_1m"].find()) == [f"c{i}" for i in range(2, 8)]
            assert db["candles_1d"].count_documents({}) == len(ages)
            again = {run.collection: run.deleted for run in job.run_due(db, now=now_ms, everything=True)}
            assert set(again.values()) == {0}
        else:  # real MongoDB: TTL indexes do it
            job.run_due(db, now=now_ms)
            assert db["prices"].index_information()["ttl_ts"]["expireAfterSeconds"] == 48 * 3600
            assert db["candles_1m"].index_information()["ttl_start"]["expireAfterSeconds"] == 30 * 86400
            assert "ttl_start" not in db["candles_1d"].index_information()
    finally:
        mongo.drop_database(db.name)


def test_streams_retention_command_runs(settings):
    # With limits far in the past nothing can be old enough: the command runs against the real collections
    # and must delete nothing.
    result = children.run([sys.executable, "-m", "streams.cli", "retention", "--ticks-hours", "1000000",
                           "--candles-days", "100000"], timeout=120, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == dict.fromkeys(["prices", *CANDLE_COLLECTIONS.values()], 0)


def test_hundreds_of_thousands_due_at_once_are_deleted_in_bounded_batches(settings, mongo):
    # 200,000 ticks older than the limit and 1,000 newer, as after a long back-fill or days of downtime: one
    # delete_many of everything due failed on FerretDB past ~32,000 documents; the job deletes them all.
    db = mongo[f"scratch_retention_{uuid.uuid4().hex[:8]}"]
    now = datetime.now(UTC).replace(microsecond=0)
    old, new = 200_000, 1_000
    try:
        for first in range(0, old, 20_000):
            db["prices"].insert_many([{"_id": f"old{i}", "symbol": "BTC", "ts": now - timedelta(hours=49, seconds=i)}
                                      for i in range(first, first + 20_000)], ordered=False)
        db["prices"].insert_many([{"_id": f"new{i}", "symbol": "BTC", "ts": now - timedelta(seconds=i)}
                                  for i in range(new)])
        reports: list[retention.RetentionRun] = []
        job = retention.RetentionJob(Retention(ticks_hours=48, candle_days=dict(CANDLE_DAYS)), reports.append)
        started = time.monotonic()
        runs = {run.collection: run for run in job.run_due(db, now=epoch_ms(now))}
        took = time.monotonic() - started
        if retention.is_ferretdb(db):
            assert runs["prices"].deleted == old and runs["prices"].error is None, runs["prices"]
            assert db["prices"].count_documents({}) == new
            assert {d["_id"] for d in db["prices"].find({}, {"_id": 1})} == {f"new{i}" for i in range(new)}
        print(f"\n{old:,} due deleted in {took:.1f} s ({old / took:,.0f} documents/s)")
        assert [r.collection for r in reports] == ["prices", *CANDLE_COLLECTIONS.values()]
    finally:
        mongo.drop_database(db.name)


def test_a_run_is_reported_and_control_status_shows_it(settings):
    result = children.run([sys.executable, "-m", "streams.cli", "retention", "--ticks-hours", "1000000",
                           "--candles-days", "100000"], timeout=120, cwd=PROJECT_DIR)
    assert result.returncode == 0, str(result)
    status = children.run(["control", "status", "--json"], timeout=120)
    assert status.returncode == 0, str(status)
    runs = json.loads(status.stdout)["retention"]
    assert set(runs) == {"prices", *CANDLE_COLLECTIONS.values()}, runs
    assert runs["prices"]["deleted"] == 0 and runs["prices"]["error"] is None
    assert runs["candles_1d"]["keep_days"] == 100_000
    text = children.run(["control", "status"], timeout=120).stdout
    assert "retention (the last run per collection" in text and "candles_1m" in text
