"""History from MongoDB (FerretDB) through pymongo's async client, turned into snapshot messages.

24 h and 7 d come from the in-memory candle view (webui/candles.py) once it is loaded, else from
`candles_1m`; 1 h, and any range without candles, from raw ticks. FerretDB scans the collection for
range queries and its SQLite pool is small and shared, so: few connections (a small pool), every cursor
exhausted or closed, identical concurrent requests coalesced, and answers reused for a couple of seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from webui.candles import CandleView, candle_row, epoch_ms
from webui.series import (
    RANGES_MS,
    CandleRow,
    TickRow,
    series_from_candles,
    series_from_ticks,
    stats_from_candles,
    stats_from_ticks,
)

TICK_FIELDS = {"_id": 0, "ts": 1, "price": 1, "volume_24h": 1, "source": 1}
CANDLE_FIELDS = {"_id": 0, "start": 1, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1, "source": 1}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def pick_source(docs: list[dict[str, Any]]) -> str | None:
    """The source of the newest row: a chart never mixes two sources' prices."""
    return docs[-1].get("source") if docs else None


def candle_rows(docs: list[dict[str, Any]]) -> tuple[str | None, list[CandleRow]]:
    """Stored candles sorted by time as (the newest one's source, that source's rows)."""
    source = pick_source(docs)
    return source, [candle_row(d) for d in docs if d.get("source") == source]


def build_snapshot(symbol: str, range_: str, end: int, tick_docs: list[dict[str, Any]],
                   candles: tuple[str | None, list[CandleRow]], recent: list[dict[str, Any]],
                   max_points: int) -> dict[str, Any]:
    """The snapshot message from rows sorted by time: candles (one source's) when there are any, else raw ticks.

    `recent` are ticks the live consumer saw but MongoDB may not hold yet (sink lag); those newer than
    the newest stored tick and inside the window are appended.
    """
    range_ms = RANGES_MS[range_]
    start = end - range_ms
    source, rows = candles
    if rows:
        series = series_from_candles(rows, range_ms, max_points)
        stats = stats_from_candles(rows)
        basis = "candles_1m"
    else:
        source = pick_source(tick_docs) or (recent[-1]["source"] if recent else None)
        rows = [TickRow(epoch_ms(d["ts"]), d["price"], d.get("volume_24h"))
                for d in tick_docs if d.get("source") == source]
        newest = rows[-1].ts if rows else start - 1
        rows += [TickRow(t["ts"], t["price"], t.get("volume_24h")) for t in recent
                 if t["source"] == source and newest < t["ts"] <= end and t["ts"] >= start]
        rows.sort(key=lambda r: r.ts)
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
                 recent: Callable[[str], list[dict[str, Any]]], view: CandleView | None = None) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True, maxPoolSize=pool,
                                                         serverSelectionTimeoutMS=5000)
        self.db = self.client[database]
        self.max_points = max_points
        self.cache_seconds = cache_seconds
        self._recent = recent
        self.view = view
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
        self._cache[key] = (time.monotonic(), result)
        return result

    async def _build(self, symbol: str, range_: str, end: int | None) -> dict[str, Any]:
        started = time.perf_counter()
        stop = end if end is not None else int(time.time() * 1000)
        start = stop - RANGES_MS[range_]
        candles: tuple[str | None, list[CandleRow]] = (None, [])
        if range_ != "1h" and self.view is not None and self.view.covers(start):
            candles = self.view.window(symbol, start, stop)
        elif range_ != "1h":
            window = {"$gte": _dt(start), "$lte": _dt(stop)}
            candles = candle_rows(await self._find("candles_1m", {"symbol": symbol, "start": window}, CANDLE_FIELDS,
                                                   "start"))
        ticks = [] if candles[1] else await self._find(
            "prices", {"symbol": symbol, "ts": {"$gte": _dt(start), "$lte": _dt(stop)}}, TICK_FIELDS, "ts")
        snap = build_snapshot(symbol, range_, stop, ticks, candles, self._recent(symbol), self.max_points)
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
