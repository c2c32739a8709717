"""Where a chart's bars and a page of older bars are read from (webui/history.py): its view while the view holds
them, MongoDB by `_id` before that, a range scan only where no view knows the coin's source; where the pages end;
which reads count against the past windows' budget. MongoDB is a fake that records what it is asked (no service)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from cryptopulse.candle import candle_id
from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS
from webui.history import Busy, HistoryStore
from webui.series import CandleRow
from webui.views import WindowView, candle_spec

M = MINUTE_MS


class FakeCursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    async def to_list(self) -> list[dict[str, Any]]:
        return self.docs

    async def close(self) -> None:
        pass


class FakeCollection:
    def __init__(self, store: FakeStore, name: str) -> None:
        self.store, self.name = store, name

    async def find_one(self, query: dict[str, Any], fields: dict[str, int]) -> dict[str, Any] | None:
        self.store.by_id.append((self.name, query["_id"]))
        return self.store.docs.get(self.name, {}).get(query["_id"])

    def find(self, query: dict[str, Any], fields: dict[str, int], batch_size: int = 0) -> FakeCursor:
        self.store.scans.append((self.name, query))
        low, high = query["start"]["$gte"], query["start"]["$lte"]
        return FakeCursor([d for d in self.store.docs.get(self.name, {}).values()
                           if d["symbol"] == query["symbol"] and low <= d["start"] <= high])


class FakeStore:
    """MongoDB's candle collections: `_id` -> document, and every lookup and scan asked of them."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.by_id: list[tuple[str, str]] = []
        self.scans: list[tuple[str, dict[str, Any]]] = []

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self, name)

    def put(self, symbol: str, interval: str, start: int, price: float, source: str = "simulated") -> None:
        self.docs.setdefault(f"candles_{interval}", {})[candle_id(symbol, source, start, interval)] = {
            "symbol": symbol, "source": source, "start": datetime.fromtimestamp(start / 1000, UTC), "open": price,
            "high": price, "low": price, "close": price, "volume": 1.0}


def view_of(interval: str, rows: dict[str, list[int]], source: str = "simulated") -> WindowView:
    view = WindowView(Settings(), candle_spec(Settings(), interval))
    for symbol, starts in rows.items():
        for start in starts:
            view.put(symbol, source, CandleRow(start, 1.0, 1.0, 1.0, 1.0, 1.0))
    view.ready.set()
    return view


def store_with(views: dict[str, WindowView], past_rate: float = 0) -> tuple[HistoryStore, FakeStore]:
    history = HistoryStore("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", "x", pool=4, max_points=1500,
                           cache_seconds=0, recent=lambda _symbol: [], views=views, past_rate=past_rate)
    fake = FakeStore()
    history.db = fake  # type: ignore[assignment]
    return history, fake


def run(history: HistoryStore, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work()
        finally:
            await history.close()

    return asyncio.run(go())


def current_minute() -> int:
    """Now, to the minute: taken by each test as it starts (the views' windows end at the wall clock's now)."""
    return int(time.time() * 1000) // M * M


def test_a_live_window_comes_from_its_view_alone():
    now = current_minute()
    minutes = view_of("1m", {"BTC": list(range(now - 25 * HOUR_MS, now + M, M))})
    history, fake = store_with({"1m": minutes})
    snap = run(history, lambda: history.snapshot("BTC", "24h"))
    assert snap["interval"] == "1m" and snap["basis"] == "candles_1m" and len(snap["candles"]) == 1440
    assert fake.by_id == [] and fake.scans == []


def test_a_window_older_than_the_view_is_read_by_id_and_joined_to_the_views_part():
    """A 24 h window ending 20 h ago: its last 6 hours (and more) are in the 26-hour view, the rest, with the
    indicators' warm-up of 50 minutes, is read by `_id` from candles_1m: one lookup per minute, no scan."""
    now = current_minute()
    end = now - 20 * HOUR_MS
    minutes = view_of("1m", {"BTC": list(range(now - 26 * HOUR_MS + M, now + M, M))})
    history, fake = store_with({"1m": minutes})
    for start in range(end - DAY_MS - 60 * M, now - 26 * HOUR_MS + M, M):
        fake.put("BTC", "1m", start, 2.0)
    answer = run(history, lambda: history.answer("BTC", "24h", end))
    snap = json.loads(answer.text)
    starts = [c[0] for c in snap["candles"]]
    assert starts == list(range(end - DAY_MS, end + 1, M))  # every minute once, in order (both ends: aligned)
    assert fake.scans == []
    asked = [int(i.rsplit("|", 1)[1]) for _, i in fake.by_id]
    floor = minutes.floor() or 0
    assert asked == list(range(end - DAY_MS - 50 * M, floor + (-floor % M), M))  # the store's part, warm-up too
    assert [w[0] for w in answer.warmup] == list(range(end - DAY_MS - 50 * M, end - DAY_MS, M))
    assert {c[4] for c in snap["candles"] if c[0] < floor} == {2.0} and snap["candles"][-1][4] == 1.0


def test_a_coin_no_view_knows_is_read_by_a_range_scan():
    history, fake = store_with({"1m": view_of("1m", {}), "1d": view_of("1d", {}), "1w": view_of("1w", {})})
    old = int(datetime(2003, 5, 1, tzinfo=UTC).timestamp() * 1000)
    for start in range(old - DAY_MS, old, M):
        fake.put("ZZ", "1m", start, 3.0)
    snap = run(history, lambda: history.snapshot("ZZ", "24h", old))
    assert len(snap["candles"]) == 1440 and snap["source"] == "simulated"
    assert [name for name, _ in fake.scans] == ["candles_1m"] and fake.by_id == []


def test_weekly_bars_are_read_by_their_monday_ids():
    monday = int(datetime(2026, 3, 9, tzinfo=UTC).timestamp() * 1000)
    weeks = view_of("1w", {"BTC": [monday]})
    weeks.spec = weeks.spec.__class__(**{**weeks.spec.__dict__, "keep_ms": 7 * DAY_MS})  # pretend it holds one week
    history, fake = store_with({"1w": weeks})
    run(history, lambda: history.page("BTC", "1w", monday, 3))
    assert [i for _, i in fake.by_id][-3:] == [candle_id("BTC", "simulated", monday - k * 7 * DAY_MS, "1w")
                                              for k in (3, 2, 1)]


def test_pages_go_back_until_the_history_ends_and_jump_over_a_gap_the_coarser_views_know():
    """1m bars of two stretches, two days apart: pages of 100 go back through the recent one (in the 1m view), jump
    the gap to the older one's last hour (the 1h view knows it), read it by `_id`, and end with the first page that
    finds nothing and before which no view knows of anything (the daily view holds everything)."""
    now = current_minute()
    recent = list(range(now - 3 * HOUR_MS, now + M, M))
    first_day = now - now % DAY_MS - 2 * DAY_MS
    older = list(range(first_day + 6 * HOUR_MS, first_day + 8 * HOUR_MS, M))
    minutes = view_of("1m", {"BTC": recent})
    hours = view_of("1h", {"BTC": sorted({t - t % HOUR_MS for t in older + recent})})
    days = view_of("1d", {"BTC": [first_day, now - now % DAY_MS]})
    history, fake = store_with({"1m": minutes, "1h": hours, "1d": days})
    for start in older:
        fake.put("BTC", "1m", start, 5.0)

    async def pages() -> list[dict[str, Any]]:
        got, before = [], now + M
        for _ in range(50):
            page = json.loads((await history.page("BTC", "1m", before, 100)).text)
            got.append(page)
            if page["next_before"] is None:
                return got
            before = page["next_before"]
        raise AssertionError("the pages never ended")

    got = run(history, pages)
    seen = sorted(c[0] for page in got for c in page["candles"])
    assert seen == older + recent  # every bar once, the gap skipped
    assert all(page["type"] == "page" and page["interval"] == "1m" for page in got)
    jumps = [page["next_before"] for page in got if not page["candles"] and page["next_before"] is not None]
    assert jumps[0] == first_day + 8 * HOUR_MS  # the empty page after the recent stretch: on to the older hours
    assert len(got) <= 8, [(p["start"], len(p["candles"]), p["next_before"]) for p in got]
    assert {i.rsplit("|", 1)[1] for _, i in fake.by_id} >= {str(t) for t in older}  # read from the store by id


def test_only_reads_of_the_store_spend_the_past_budget():
    now = current_minute()
    minutes = view_of("1m", {"BTC": list(range(now - 25 * HOUR_MS, now + M, M))})
    history, _ = store_with({"1m": minutes}, past_rate=1)

    async def scenario() -> tuple[int, int]:
        in_view = 0
        for k in range(6):  # pages the view holds: never refused, however many
            await history.page("BTC", "1m", now - k * 100 * M, 100)
            in_view += 1
        refused = 0
        for k in range(4):  # pages older than the view: a burst of 2, then busy
            try:
                await history.page("BTC", "1m", now - 2 * DAY_MS - k * 100 * M, 100)
            except Busy:
                refused += 1
        return in_view, refused

    assert run(history, scenario) == (6, 2)
