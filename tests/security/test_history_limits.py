"""Issue 12: the snapshot cache and the sharing of queries, under a client that asks for anything.

Before: an entry per distinct `end` (each a full snapshot as Python objects) for as long as answers were fresh, so
a burst of distinct `end`s grew memory without bound; any `end` up to a day ahead, or decades before the data,
was a query of its own; and identical requests shared one query that the first client's departure cancelled
for everyone.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import UTC, datetime
from typing import Any

from webui.history import HistoryStore, build_snapshot
from webui.series import TickRow

HOUR_MS = 3_600_000


def store(**kwargs: Any) -> HistoryStore:
    return HistoryStore("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", "x", pool=2, max_points=1500,
                        cache_seconds=kwargs.pop("cache_seconds", 2.0), recent=lambda _symbol: [], **kwargs)


def synthetic(builds: list[tuple[str, str, int | None]], delay: float = 0.0) -> Any:
    async def build(symbol: str, range_: str, end: int | None) -> dict[str, Any]:
        builds.append((symbol, range_, end))
        await asyncio.sleep(delay)
        stop = end if end is not None else int(time.time() * 1000)
        ticks = [TickRow(stop - (1500 - i) * 2000, 100.0 + i / 7, 1e6 + i) for i in range(1500)]
        snap = build_snapshot(symbol, range_, stop, (None, []), ("simulated", ticks), [], 1500)
        return {**snap, "server_ms": 0.0}

    return build


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_burst_of_distinct_ends_does_not_grow_the_cache_past_its_budget():
    """300 distinct `end`s, every answer still fresh (here for an hour): the cache keeps its byte budget (16 MiB)
    of encoded answers, least recently used out first."""

    async def scenario() -> float:
        history = store(cache_seconds=3600)
        history._build = synthetic([])
        now = int(time.time() * 1000)
        await history.snapshot("BTC", "1h", now - HOUR_MS)
        gc.collect()
        before = rss_mib()
        try:
            for i in range(1, 300):
                await history.snapshot("BTC", "1h", now - HOUR_MS - i)
            gc.collect()
            return rss_mib() - before
        finally:
            await history.close()

    grown = asyncio.run(scenario())
    assert grown < 40, f"{grown:.0f} MiB held after 300 distinct ends"


def test_an_end_ahead_of_now_is_now_and_shares_the_live_answer():
    builds: list = []

    async def scenario() -> None:
        history = store()
        history._build = synthetic(builds)
        try:
            now = int(time.time() * 1000)
            await history.snapshot("BTC", "1h")
            for ahead in (5_000, 60_000, 3_600_000, 86_000_000):  # any time up to a day ahead is accepted
                snap = await history.snapshot("BTC", "1h", now + ahead)
                assert snap["end"] <= int(time.time() * 1000)
        finally:
            await history.close()

    asyncio.run(scenario())
    assert builds == [("BTC", "1h", None)]


def test_an_end_before_anything_stored_is_answered_without_a_query():
    builds: list = []
    since = datetime(2020, 1, 1, tzinfo=UTC)

    async def scenario() -> list[dict[str, Any]]:
        history = store()
        history._build = synthetic(builds)

        async def oldest(collection: str, field: str) -> datetime | None:
            return since

        history._oldest = oldest  # MongoDB's first stored time, per collection
        try:
            await history.snapshot("BTC", "1h", 1_000)  # learns the span (this one may still be queried)
            await asyncio.sleep(0.1)
            builds.clear()
            return [await history.snapshot("BTC", range_, end) for end in (1, 5_000_000, 1_500_000_000_000)
                    for range_ in ("1h", "24h", "7d")]
        finally:
            await history.close()

    snaps = asyncio.run(scenario())
    assert builds == []
    assert all(s["stats"]["count"] == 0 and s["line"] == [] for s in snaps)


def test_with_views_an_end_before_the_coins_first_day_is_answered_without_a_read():
    """Issue 22, item 1: docs/webui.md's past window (a day a year before anything stored) took 12-20 s on a fresh
    dashboard over 60 days: with views the oldest-time bound was never used, and the window's tick fallback scanned
    the stored ticks. The daily and weekly views hold every day and week of every coin: before the first, nothing."""
    from cryptopulse.settings import Settings
    from webui.series import CandleRow
    from webui.views import WindowView, candle_spec

    day = 86_400_000
    first_day = (int(time.time() * 1000) // day - 60) * day  # 60 days stored
    settings = Settings()
    views = {name: WindowView(settings, candle_spec(settings, name)) for name in ("1d", "1w")}
    for n in range(61):
        views["1d"].put("BTC", "simulated", CandleRow(first_day + n * day, 1.0, 1.0, 1.0, 1.0))
    views["1w"].put("BTC", "simulated", CandleRow(first_day - 3 * day, 1.0, 1.0, 1.0, 1.0))  # its week began earlier
    for view in views.values():
        view.ready.set()
    builds: list = []

    async def scenario() -> list[dict[str, Any]]:
        history = store(views=views)
        history._build = synthetic(builds)
        try:
            before = [await history.snapshot("BTC", range_, end) for end in (1_764_547_200_000, first_day - 3 * day - 1)
                      for range_ in ("24h", "7d")]
            await history.snapshot("BTC", "24h", first_day - 3 * day)  # within the first week: read
            await history.snapshot("ETH", "24h", 1_764_547_200_000)  # a coin the views do not know: read
            return before
        finally:
            await history.close()

    snaps = asyncio.run(scenario())
    assert all(s["stats"]["count"] == 0 and s["line"] == [] for s in snaps)
    assert builds == [("BTC", "24h", first_day - 3 * day), ("ETH", "24h", 1_764_547_200_000)]


def test_a_shared_query_survives_the_departure_of_the_client_that_started_it():
    builds: list = []

    async def scenario() -> dict[str, Any]:
        history = store()
        history._build = synthetic(builds, delay=0.3)
        end = int(time.time() * 1000) - HOUR_MS
        try:
            first = asyncio.create_task(history.snapshot("BTC", "24h", end))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(history.snapshot("BTC", "24h", end))
            await asyncio.sleep(0.05)
            first.cancel()  # the first client re-subscribed (or left)
            return await asyncio.wait_for(second, 5)
        finally:
            await history.close()

    snap = asyncio.run(scenario())
    assert snap["type"] == "snapshot" and snap["stats"]["count"] == 1500
    assert len(builds) == 1


def test_a_client_that_resubscribes_again_and_again_queues_at_most_one_query():
    """A query still waiting for a MongoDB connection is dropped when nobody waits for it any more."""
    finds: list[int] = []

    async def scenario() -> None:
        history = store()
        release = asyncio.Event()

        async def find(collection: str, query: dict[str, Any], *args: Any) -> list[dict[str, Any]]:
            async with history._gate:
                finds.append(int(query["ts"]["$lte"].timestamp() * 1000))
                await release.wait()
            return []

        history._find = find
        now = int(time.time() * 1000)
        try:
            holders = [asyncio.create_task(history.snapshot("ETH", "1h", now - HOUR_MS - i)) for i in range(2)]
            await asyncio.sleep(0.05)  # the pool (2) is busy
            waiting = None
            for i in range(50):  # one client re-subscribing: each new request replaces its previous one
                if waiting is not None:
                    waiting.cancel()
                waiting = asyncio.create_task(history.snapshot("BTC", "1h", now - 2 * HOUR_MS - i))
                await asyncio.sleep(0.001)
            release.set()
            await asyncio.gather(*holders, waiting)
        finally:
            await history.close()

    asyncio.run(scenario())
    assert len(finds) == 3  # the two that held the pool, and the client's last request only


def test_old_windows_asked_for_by_everyone_together_are_rate_limited():
    """Distinct `end`s from as many addresses as a botnet has: each a collection scan. Beyond the budget the
    answer is `Busy` (the client is told when to ask again); the live windows are never limited."""
    from webui.history import Busy

    builds: list = []

    async def scenario() -> tuple[int, list[int]]:
        history = store(past_rate=2)
        history._build = synthetic(builds)
        now = int(time.time() * 1000)
        busy: list[int] = []
        try:
            for i in range(10):
                try:
                    await history.snapshot("BTC", "1h", now - HOUR_MS - i)
                except Busy as refused:
                    busy.append(refused.retry_ms)
            for range_ in ("1h", "24h", "7d"):  # the page's live windows: never refused
                await history.snapshot("BTC", range_)
            return len(builds), busy
        finally:
            await history.close()

    built, busy = asyncio.run(scenario())
    assert built == 4 + 3 and len(busy) == 6 and all(ms >= 500 for ms in busy)
