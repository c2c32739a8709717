"""History from MongoDB (FerretDB) through pymongo's async client, turned into snapshot messages.

24 h and 7 d come from candles, 1 h (and any range without candles) from raw ticks: each from its
in-memory view (webui/views.py) when that is loaded and covers the window, else from MongoDB.
FerretDB scans the collection for range queries and its SQLite pool is small and shared, so: few
connections (a small pool), every cursor exhausted or closed, identical concurrent requests
coalesced, and answers reused for a couple of seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from webui.series import (
    RANGES_MS,
    CandleRow,
    TickRow,
    series_from_candles,
    series_from_ticks,
    stats_from_candles,
    stats_from_ticks,
)
from webui.views import WindowView, candle_row, tick_row

TICK_FIELDS = {"_id": 0, "ts": 1, "price": 1, "volume_24h": 1, "source": 1}
CANDLE_FIELDS = {"_id": 0, "start": 1, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1, "source": 1}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def pick_source(docs: list[dict[str, Any]]) -> str | None:
    """The source of the newest row: a chart never mixes two sources' prices."""
    return docs[-1].get("source") if docs else None


def rows_of(docs: list[dict[str, Any]], row: Callable[[dict[str, Any]], Any]) -> tuple[str | None, list[Any]]:
    """Stored rows sorted by time as (the newest one's source, that source's rows)."""
    source = pick_source(docs)
    return source, [row(d) for d in docs if d.get("source") == source]


def build_snapshot(symbol: str, range_: str, end: int, candles: tuple[str | None, list[CandleRow]],
                   ticks: tuple[str | None, list[TickRow]], recent: list[dict[str, Any]],
                   max_points: int) -> dict[str, Any]:
    """The snapshot message from rows sorted by time: candles (one source's) when there are any, else raw ticks.

    `recent` are ticks the live consumer saw but the rows may not hold yet (sink lag); those newer than
    the newest tick row and inside the window are appended.
    """
    range_ms = RANGES_MS[range_]
    start = end - range_ms
    source, rows = candles
    if rows:
        series = series_from_candles(rows, range_ms, max_points)
        stats = stats_from_candles(rows)
        basis = "candles_1m"
    else:
        source, rows = ticks
        source = source or (recent[-1]["source"] if recent else None)
        newest = rows[-1].ts if rows else start - 1
        unstored = [TickRow(t["ts"], t["price"], t.get("volume_24h")) for t in recent
                    if t["source"] == source and newest < t["ts"] <= end and t["ts"] >= start]
        rows = sorted(rows + unstored, key=lambda r: r.ts) if unstored else rows
        series = series_from_ticks(rows, range_ms, max_points)
        stats = stats_from_ticks(rows, series.bucket_ms)
        basis = "ticks"
    return {
        "type": "snapshot",
        "symbol": symbol,
        "range": range_,
        "start": start,
        "end": end,
        "basis": basis,
        "source": source,
        "simulated": source == "simulated",
        "bucket_ms": series.bucket_ms,
        "line": series.line,
        "candles": series.candles,
        "volume": series.volume,
        "stats": stats,
    }


class HistoryStore:
    """Reads ticks and candles for a window and builds snapshots, a few at a time."""

    def __init__(self, uri: str, database: str, pool: int, max_points: int, cache_seconds: float,
                 recent: Callable[[str], list[dict[str, Any]]], candle_view: WindowView | None = None,
                 tick_view: WindowView | None = None) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True, maxPoolSize=pool,
                                                         serverSelectionTimeoutMS=5000)
        self.db = self.client[database]
        self.max_points = max_points
        self.cache_seconds = cache_seconds
        self._recent = recent
        self.candle_view, self.tick_view = candle_view, tick_view
        self._gate = asyncio.Semaphore(pool)
        self._inflight: dict[tuple[str, str, int | None], asyncio.Future[dict[str, Any]]] = {}
        self._cache: dict[tuple[str, str, int | None], tuple[float, dict[str, Any]]] = {}

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await self.client.admin.command("ping")
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "ping_ms": round((time.perf_counter() - started) * 1000, 1)}

    async def snapshot(self, symbol: str, range_: str, end: int | None = None) -> dict[str, Any]:
        """A snapshot ending at `end` (epoch ms) or now; concurrent identical requests share one query."""
        key = (symbol, range_, end)
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._build(symbol, range_, end)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[key]
        future.set_result(result)
        now = time.monotonic()
        if len(self._cache) >= 64:  # each client may ask for any `end`: keep only answers still fresh
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.cache_seconds}
        self._cache[key] = (now, result)
        return result

    async def _build(self, symbol: str, range_: str, end: int | None) -> dict[str, Any]:
        started = time.perf_counter()
        stop = end if end is not None else int(time.time() * 1000)
        start = stop - RANGES_MS[range_]
        window = {"$gte": _dt(start), "$lte": _dt(stop)}
        candles: tuple[str | None, list[CandleRow]] = (None, [])
        ticks: tuple[str | None, list[TickRow]] = (None, [])
        if range_ != "1h":
            if self.candle_view is not None and self.candle_view.covers(start):
                candles = self.candle_view.window(symbol, start, stop)
            else:
                docs = await self._find("candles_1m", {"symbol": symbol, "start": window}, CANDLE_FIELDS, "start")
                candles = rows_of(docs, candle_row)
        if not candles[1]:
            if self.tick_view is not None and self.tick_view.covers(start):
                ticks = self.tick_view.window(symbol, start, stop)
            else:
                docs = await self._find("prices", {"symbol": symbol, "ts": window}, TICK_FIELDS, "ts")
                ticks = rows_of(docs, tick_row)
        snap = build_snapshot(symbol, range_, stop, candles, ticks, self._recent(symbol), self.max_points)
        snap["server_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return snap

    async def _find(self, collection: str, query: dict[str, Any], fields: dict[str, int],
                    order: str) -> list[dict[str, Any]]:
        """All matching rows sorted by `order`; the cursor is always exhausted or closed (FerretDB's pool)."""
        async with self._gate:
            cursor = self.db[collection].find(query, fields, batch_size=10_000)
            try:
                rows = await cursor.to_list()
            finally:
                await cursor.close()
        rows.sort(key=lambda d: d[order])  # sorted here: FerretDB would sort the scanned rows in memory anyway
        return rows
