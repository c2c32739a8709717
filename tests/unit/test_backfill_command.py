"""`control backfill` at any interval without services: its bounds refused in one line before anything is reached,
and what it publishes, in which order and with which header, against an in-memory store and publishers (the real
stack's run is tests/integration/test_backfill_years.py)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator

import pytest

from control import backfill
from control.backfill import Filled, Stored, summary
from cryptopulse import kafka
from cryptopulse.candle import INTERVAL_MS, Candle, aggregate, bucket_of
from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS, now_ms
from producer.sources.coingecko import IDS
from tests.fakes import FakeHttp, Reply, run

# --- the bounds, one line and exit 2, before any service is reached ------------------------------------------

REFUSED = [
    (["--interval", "1m", "--days", "90"], "control: 1m candles are kept 30 days (RETENTION_1M_DAYS), so 90 days at "
     "1m would be deleted as they land: ask --days 30 or less at 1m, or a coarser interval (--interval 5m keeps "
     "180 days)"),
    (["--interval", "5m", "--days", "400"], "control: 5m candles are kept 180 days (RETENTION_5M_DAYS), so 400 days "
     "at 5m would be deleted as they land: ask --days 180 or less at 5m, or a coarser interval (--interval 1h "
     "keeps 730 days)"),
    (["--source", "coingecko", "--interval", "1m", "--days", "30"], "control: coingecko cannot back-fill 30 days at "
     "1m: its points are 5 minutes apart for the last 24 hours only (hourly before, then daily), too sparse for 1m "
     "candles further back; ask --hours 24 or less at 1m, or use --interval 1h (hourly points)"),
    (["--source", "coingecko", "--interval", "1d", "--days", "400"], "control: coingecko cannot back-fill 400 days "
     "at 1d: the public plan serves the last 365 days of history only; ask --days 365 or less at 1d, or set a paid "
     "key in COINGECKO_PRO_API_KEY"),
]


@pytest.mark.parametrize(("args", "line"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_span_beyond_a_bound_is_refused_in_one_line_before_anything_is_reached(args, line):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("COINGECKO_", "RETENTION_"))}
    environment.update(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", MONGODB_URI="mongodb://127.0.0.1:1")  # unreachable
    result = subprocess.run(["control", "backfill", *args], capture_output=True, text=True, timeout=60,
                            env=environment, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.strip() == line, result.stderr


@pytest.mark.parametrize("args", [["--days", "2", "--hours", "3"], ["--interval", "2h"], ["--days", "0"]])
def test_bad_span_options_are_one_line(args):
    result = subprocess.run(["control", "backfill", *args], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("control backfill: "), result.stderr


# --- the summary ---------------------------------------------------------------------------------------------

def test_the_summary_says_what_was_published_per_symbol_and_rolled_up():
    minutes = {"BTC": Filled(360, 360, {"5m": 72, "15m": 24, "1h": 6, "4h": 2, "1d": 1, "1w": 1}),
               "ETH": Filled(360, 360, {"5m": 72, "15m": 24, "1h": 6, "4h": 2, "1d": 1, "1w": 1})}
    assert summary(minutes, "1m") == ("published 720 points (BTC 360, ETH 360), 720 1m candles and 212 rolled up "
                                      "(5m to 1w)")
    assert summary({"BTC": Filled()}, "1m") == "published 0 points (BTC 0), 0 1m candles and nothing rolled up"
    days = {"BTC": Filled(365, 0, {"1w": 53}), "ETH": Filled(365, 0, {"1w": 53})}
    assert summary(days, "1d") == "published 730 1d candles (BTC 365, ETH 365) and 106 rolled up (1w)"
    assert summary({"BTC": Filled(52)}, "1w") == "published 52 1w candles (BTC 52)"


# --- the run, against an in-memory store and publishers ------------------------------------------------------

class Published(list):
    """Every publish, in order: (kind, header, records)."""


class Candles:
    def __init__(self, published: Published) -> None:
        self.published = published

    def publish(self, candles: list[Candle], timeout: float = 60.0, origin: bytes = kafka.BACKFILL) -> None:
        self.published.append(("candles", origin, list(candles)))


class Ticks:
    def __init__(self, published: Published) -> None:
        self.published = published
        self.stats = type("Stats", (), {"failed": 0})()

    async def publish(self, tick) -> None:
        self.published.append(("tick", kafka.BACKFILL, [tick]))

    async def drain(self, timeout: float) -> int:
        return 0


class Collection:
    def __init__(self, docs: dict[str, dict]) -> None:
        self.docs = docs

    def find_one(self, query: dict) -> dict | None:
        return self.docs.get(query["_id"])


class Database(dict):
    def __missing__(self, name: str) -> Collection:
        self[name] = Collection({})
        return self[name]


@pytest.fixture
def stack(monkeypatch) -> Iterator[tuple[Published, Database, dict]]:
    """The back-fill's services replaced: publishers that record, a store of candles by `_id`, what it holds."""
    published, db, holds = Published(), Database(), {"ticks": {}, "candles": {}}
    monkeypatch.setattr(backfill, "CandlePublisher", lambda settings: Candles(published))
    monkeypatch.setattr(backfill, "TickPublisher", lambda settings, origin: Ticks(published))
    monkeypatch.setattr(backfill, "_wait_for_sinks", lambda settings, interval, filled: True)

    @contextlib.contextmanager
    def database(settings, timeout_ms: int = 5_000):
        yield db

    monkeypatch.setattr(backfill.store, "database", database)

    def read(cls, settings, source, symbols, window):
        return Stored({s: holds["ticks"].get(s, []) for s in symbols},
                      {s: holds["candles"].get(s, []) for s in symbols})

    monkeypatch.setattr(Stored, "read", classmethod(read))
    for name in list(os.environ):
        if name.startswith("RETENTION_"):
            monkeypatch.delenv(name)
    yield published, db, holds


def fill(source: str, symbols: list[str], hours: float, interval: str) -> tuple[dict[str, Filled], str]:
    out = io.StringIO()
    filled = run(backfill.backfill(Settings(), source, symbols, hours, out=out, interval=interval), timeout=60)
    return filled, out.getvalue()


def test_a_year_of_days_publishes_the_days_then_the_weeks_rolled_up_and_no_tick(stack):
    published, _, _ = stack
    filled, out = fill("simulated", ["BTC"], 365 * 24, "1d")
    kinds = [(kind, origin, {c.interval for c in records}) for kind, origin, records in published]
    first_rollup = kinds.index(("candles", kafka.BACKFILL_ROLLUP, {"1w"}))
    assert first_rollup == len(kinds) - 1  # the weeks, after every day
    assert all(k == ("candles", kafka.BACKFILL, {"1d"}) for k in kinds[:first_rollup])
    days = [c for _, origin, records in published if origin == kafka.BACKFILL for c in records]
    weeks = published[-1][2]
    end = bucket_of(now_ms(), "1d")
    assert [d.start for d in days] == list(range(end - 365 * DAY_MS, end, DAY_MS))
    assert [w.start for w in weeks] == list(range(bucket_of(end - 365 * DAY_MS, "1w"), end, 7 * DAY_MS))
    for week in weeks:
        mine = [d for d in days if bucket_of(d.start, "1w") == week.start]
        assert week == aggregate("BTC", "simulated", "1w", week.start, mine, final=week.end <= now_ms())
    assert filled["BTC"] == Filled(365, 0, {"1w": len(weeks)})
    assert "back-filling 365 days of 1d candles of BTC from simulated" in out and f"rolled up {len(weeks)} 1w" in out


def test_a_second_run_over_what_is_stored_fetches_and_publishes_nothing(stack):
    published, _, holds = stack
    end = bucket_of(now_ms(), "1d")
    holds["candles"]["BTC"] = list(range(end - 30 * DAY_MS, end, DAY_MS))
    filled, out = fill("simulated", ["BTC"], 30 * 24, "1d")
    assert published == [] and filled["BTC"] == Filled()
    assert "nothing to fill: 30 1d candles already stored" in out


def test_a_gap_inside_stored_days_rolls_its_edge_weeks_up_with_the_stored_days(stack):
    published, db, holds = stack
    end = bucket_of(now_ms(), "1d")
    start = end - 60 * DAY_MS
    week = bucket_of(start + 30 * DAY_MS, "1w") + 7 * DAY_MS  # a Monday inside the window
    gap = range(week - 2 * DAY_MS, week + 3 * DAY_MS, DAY_MS)  # Saturday to Wednesday
    stored = [Candle.ohlc("BTC", "simulated", t, 5.0, 9.0, 1.0, 6.0, 100.0, interval="1d")
              for t in range(start, end, DAY_MS) if t not in gap]
    holds["candles"]["BTC"] = [c.start for c in stored]
    db["candles_1d"].docs.update({c.id: c.to_record() for c in stored})
    filled, _ = fill("simulated", ["BTC"], 60 * 24, "1d")
    days = [c for _, origin, records in published if origin == kafka.BACKFILL for c in records]
    assert [d.start for d in days] == list(gap)
    weeks = {w.start: w for w in published[-1][2]}
    assert set(weeks) == {week - 7 * DAY_MS, week}  # the two weeks the gap touches, and only those
    for monday, w in weeks.items():
        children = [c for c in stored + days if bucket_of(c.start, "1w") == monday]
        assert w == aggregate("BTC", "simulated", "1w", monday, children, final=w.end <= now_ms())
    assert filled["BTC"].candles == 5


def test_a_coingecko_year_of_daily_points_becomes_days_and_weeks(stack, monkeypatch):
    published, _, _ = stack
    end = bucket_of(now_ms(), "1d")
    http = FakeHttp()
    points = [[t, 300.0 + (t - end) / DAY_MS] for t in range(end - 200 * DAY_MS, end + DAY_MS, DAY_MS)]
    http.reply(f"/api/v3/coins/{IDS['BTC']}/market_chart/range",
               Reply(body={"prices": points, "total_volumes": [[t, 5e9] for t, _ in points]}))
    for key in ("COINGECKO_API_KEY", "COINGECKO_PRO_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COINGECKO_URL", http.url)
    monkeypatch.setenv("COINGECKO_CALLS_PER_MINUTE", "100000")
    try:
        filled, _ = fill("coingecko", ["BTC"], 200 * 24, "1d")
    finally:
        http.close()
    days = [c for _, origin, records in published if origin == kafka.BACKFILL for c in records]
    assert [d.start for d in days] == list(range(end - 200 * DAY_MS, end, DAY_MS))
    assert all((d.origin, d.ticks, d.volume) == ("ticks", 1, None) and d.open == d.close for d in days)
    assert [r["path"] for r in http.requests] == [f"/api/v3/coins/{IDS['BTC']}/market_chart/range"]  # one request
    assert filled["BTC"].points == 0 and published[-1][1] == kafka.BACKFILL_ROLLUP


def test_minutes_publish_ticks_only_where_ticks_are_kept(stack, monkeypatch):
    published, _, _ = stack
    monkeypatch.setenv("RETENTION_TICKS_HOURS", "1")
    filled, out = fill("simulated", ["BTC"], 3, "1m")
    end = bucket_of(now_ms(), "1m")
    ticks = [r[0] for kind, _, r in published if kind == "tick"]
    minutes = [c for kind, origin, records in published if origin == kafka.BACKFILL and kind == "candles"
               for c in records]
    assert [c.start for c in minutes] == list(range(end - 3 * HOUR_MS, end, MINUTE_MS))
    assert min(t.ts for t in ticks) >= end - HOUR_MS and 59 <= len(ticks) <= 60  # the minutes of the last hour
    assert filled["BTC"].points == len(ticks) and filled["BTC"].candles == 180
    assert "ticks for the last 1 h only" in out
    rolled = {c.interval for kind, origin, records in published if origin == kafka.BACKFILL_ROLLUP for c in records}
    assert rolled == {"5m", "15m", "1h", "4h", "1d", "1w"}
    first_rollup = next(i for i, (_, origin, _) in enumerate(published) if origin == kafka.BACKFILL_ROLLUP)
    assert all(origin == kafka.BACKFILL for _, origin, _ in published[:first_rollup])  # after every base candle
    five = [c for _, origin, records in published if origin == kafka.BACKFILL_ROLLUP for c in records
            if c.interval == "5m"]
    assert all(c == aggregate("BTC", "simulated", "5m", c.start,
                              [m for m in minutes if bucket_of(m.start, "5m") == c.start],
                              final=c.start + INTERVAL_MS["5m"] <= now_ms()) for c in five)
