"""`control backfill --days N --interval 1d` against the real stack, from a fake Binance: the days land in
candles_1d and the weeks the back-fill rolls up in candles_1w, a second run adds nothing, and a gap filled inside
stored days leaves its edge weeks equal to the aggregate of the days stored under them."""

from __future__ import annotations

import time

from cryptopulse.candle import Candle, aggregate, bucket_of
from cryptopulse.times import DAY_MS, epoch_ms
from tests.fakes import FakeHttp, Reply
from tests.integration.conftest import wait_for
from tests.integration.test_backfill import backfill

WEEK_MS = 7 * DAY_MS
SYMBOL, SOURCE = "DOGE", "binance"  # a market no other test back-fills from binance
DAYS = 40


def daily_klines(start_ms: int, days: int, level: float) -> list[list]:
    """Binance 1d klines in the API's shape (tests/samples/binance-klines-1d.json), prices as strings."""
    rows = []
    for i in range(days):
        t, price = start_ms + i * DAY_MS, level + (i % 9) / 1000
        rows.append([t, f"{price:.5f}", f"{price + 0.004:.5f}", f"{price - 0.003:.5f}", f"{price + 0.001:.5f}",
                     f"{1_000_000 + i:.1f}", t + DAY_MS - 1, f"{300_000 + i * 10:.1f}", 5000 + i, "1.0", "1.0", "0"])
    return rows


def stored(db, interval: str) -> dict[int, Candle]:
    docs = db[f"candles_{interval}"].find({"symbol": SYMBOL, "source": SOURCE})
    return {epoch_ms(d["start"]): Candle.from_record(d) for d in docs}


def weeks_are_their_days(db, now: int) -> bool:
    """Every stored week equals the aggregate of the days stored under it (and is final once it has ended)."""
    days, weeks = stored(db, "1d"), stored(db, "1w")
    for start, week in weeks.items():
        children = [d for d in days.values() if bucket_of(d.start, "1w") == start]
        if not children or week != aggregate(SYMBOL, SOURCE, "1w", start, children, final=start + WEEK_MS <= now):
            return False
    return bool(weeks)


def test_years_of_days_from_binance_land_as_days_and_weeks_once_and_a_gap_refills_its_edge_weeks(settings, mongo):
    db = mongo[settings.database]
    mine = {"symbol": SYMBOL, "source": SOURCE}
    for collection in ("prices", "candles_1d", "candles_1w"):
        db[collection].delete_many(mine)  # an earlier run's, so that the back-fill finds its gaps again
    now = int(time.time() * 1000)
    end = bucket_of(now, "1d")
    start = end - DAYS * DAY_MS
    mondays = range(bucket_of(start, "1w"), end, WEEK_MS)
    fake = FakeHttp()
    fake.reply("/api/v3/klines", Reply(body=daily_klines(start, DAYS, 0.3)))
    args = ["--days", str(DAYS), "--interval", "1d", "--symbols", SYMBOL, "--source", SOURCE]
    env = {"BINANCE_REST_URL": fake.url}
    try:
        first = backfill(*args, env=env)
        assert f"published {DAYS} 1d candles ({SYMBOL} {DAYS}) and {len(mondays)} rolled up (1w)" in first.stdout, \
            first.stdout + first.stderr
        assert [r["query"]["interval"] for r in fake.requests] == ["1d"]  # 40 days: one request
        wait_for(lambda: len(stored(db, "1d")) == DAYS and len(stored(db, "1w")) == len(mondays), 120,
                 "the days and the weeks in MongoDB")
        assert sorted(stored(db, "1d")) == list(range(start, end, DAY_MS))
        assert sorted(stored(db, "1w")) == list(mondays)
        assert weeks_are_their_days(db, now)
        assert db["prices"].count_documents(mine) == 0  # ticks only for a back-fill of minutes

        second = backfill(*args, env=env)
        assert f"published 0 1d candles ({SYMBOL} 0)" in second.stdout and "nothing to fill" in second.stderr
        assert len(fake.requests) == 1  # nothing fetched either

        # A hole in the stored days, Saturday to Tuesday around a Monday inside the window, and history that now
        # says other prices for them: the days come back, and both weeks the hole touches are rolled up again.
        monday = mondays[2]
        hole = list(range(monday - 2 * DAY_MS, monday + 2 * DAY_MS, DAY_MS))
        db["candles_1d"].delete_many({"_id": {"$in": [f"{SYMBOL}|{SOURCE}|1d|{t}" for t in hole]}})
        fake.reply("/api/v3/klines", Reply(body=daily_klines(start, DAYS, 0.5)))
        before = stored(db, "1w")
        third = backfill(*args, env=env)
        assert f"published 4 1d candles ({SYMBOL} 4) and 2 rolled up (1w)" in third.stdout, third.stdout + third.stderr
        wait_for(lambda: len(stored(db, "1d")) == DAYS and weeks_are_their_days(db, now), 120,
                 "the hole's days back, and its edge weeks equal to the days under them")
    finally:
        fake.close()
    days, weeks = stored(db, "1d"), stored(db, "1w")
    assert all(days[t].open >= 0.5 for t in hole) and all(d.open < 0.5 for t, d in days.items() if t not in hole)
    assert {t for t in weeks if weeks[t] != before[t]} == {monday - WEEK_MS, monday}  # only the edge weeks changed
