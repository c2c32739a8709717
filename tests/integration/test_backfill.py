"""`control backfill` against the real stack: idempotent, gap-filling, patient with rate limits."""

from __future__ import annotations

import os
import random
import time

from cryptopulse.times import MINUTE_MS
from tests import children
from tests.fakes import FakeHttp, Reply
from tests.integration.conftest import wait_for


def backfill(*args: str, env: dict | None = None) -> children.Finished:
    result = children.run(["control", "backfill", *args], timeout=600, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_second_backfill_adds_nothing(settings, mongo):
    symbols = [f"B{random.randrange(10**6):06d}{c}" for c in "XY"]  # simulated: any symbol, ours alone
    prices = mongo[settings.database]["prices"]
    first = backfill("--hours", "6", "--symbols", ",".join(symbols))
    assert "published 720 points" in first.stdout, first.stdout + first.stderr  # 6 h of 1-minute points, 2 symbols
    mine = {"symbol": {"$in": symbols}, "source": "simulated"}
    wait_for(lambda: prices.count_documents(mine) >= 720, 120, "the back-filled points in MongoDB")
    assert prices.count_documents(mine) == 720

    second = backfill("--hours", "6", "--symbols", ",".join(symbols))
    assert "published 0 points" in second.stdout
    assert "nothing to fill" in second.stderr
    assert prices.count_documents(mine) == 720

    # A hole in the store is found and filled, and only the hole.
    docs = sorted(prices.find(mine, {"_id": 1, "ts": 1}), key=lambda d: d["ts"])
    hole = [d["_id"] for d in docs if d["_id"].startswith(symbols[0])][100:130]
    prices.delete_many({"_id": {"$in": hole}})
    third = backfill("--hours", "6", "--symbols", ",".join(symbols))
    assert "published 30 points" in third.stdout, third.stdout + third.stderr
    wait_for(lambda: prices.count_documents(mine) >= 720, 120, "the hole to be filled")
    assert prices.count_documents(mine) == 720


def klines(start_ms: int, minutes: int) -> list[list]:
    """Binance 1-minute klines in the API's shape, prices as strings."""
    rows = []
    for i in range(minutes):
        t = start_ms + i * MINUTE_MS
        price = 150 + i / 100
        rows.append([t, f"{price:.2f}", f"{price + 0.5:.2f}", f"{price - 0.5:.2f}", f"{price + 0.1:.2f}", "10.0",
                     t + MINUTE_MS - 1, f"{1500 + i:.1f}", 42, "5.0", "750.0", "0"])
    return rows


def test_backfill_waits_out_a_429_and_then_succeeds(settings, mongo):
    end = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    start = end - 2 * 3_600_000
    fake = FakeHttp()
    fake.reply("/api/v3/klines",
               Reply(429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": "2"}),
               Reply(200, klines(start, 120)))
    prices = mongo[settings.database]["prices"]
    window = {"symbol": "SOL", "source": "binance"}
    before = prices.count_documents(window)
    try:
        result = backfill("--hours", "2", "--symbols", "SOL", "--source", "binance",
                          env={"BINANCE_REST_URL": fake.url})
    finally:
        fake.close()
    assert "waiting 2 s" in result.stderr and "429" in result.stderr
    assert len([r for r in fake.requests if r["path"] == "/api/v3/klines"]) >= 2
    published = int(result.stdout.split("published ")[1].split(" points")[0].replace(",", ""))
    assert published > 0
    wait_for(lambda: prices.count_documents(window) >= before + published, 120, "the klines in MongoDB")
    doc = prices.find_one({**window, "price": 150.1})
    assert doc is not None and doc["quote"] == "USDT"


UNREACHABLE_BINANCE = ["control", "backfill", "--hours", "1", "--symbols", "BTC", "--source", "binance"]


def test_an_unreachable_exchange_ends_the_backfill_within_the_bound_with_its_cause(settings):
    """It waited silently for minutes; now each wait is shown, and it gives up after --give-up-after."""
    started = time.monotonic()
    result = children.run([*UNREACHABLE_BINANCE, "--give-up-after", "5"], timeout=120,
                          env={**os.environ, "BINANCE_REST_URL": "http://127.0.0.1:9"})
    assert result.returncode == 1 and time.monotonic() - started < 60, result.stderr
    assert "Traceback" not in result.stderr and "BTC    waiting" in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("control: binance: no history for") and "--give-up-after" in last, last
    assert "Connection refused" in last, last  # the cause, not only that it failed


def test_ctrl_c_during_a_backfill_is_one_line(settings, tmp_path):
    """Ctrl-C while the back-fill waits for its source ends it: exit 130 and one line, no traceback."""
    ended = children.ctrl_c(UNREACHABLE_BINANCE, tmp_path / "backfill.stderr", once="waiting",
                            env={**os.environ, "BINANCE_REST_URL": "http://127.0.0.1:9"})
    assert ended.status == 130, f"exit {ended.status}, not 130 (interrupted); stderr:\n{ended.stderr}"
    assert "Traceback" not in ended.after and ended.last_line == "control: interrupted", ended.stderr
