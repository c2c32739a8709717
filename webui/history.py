"""History from MongoDB (FerretDB) through pymongo's async client, turned into snapshot messages.

24 h and 7 d come from candles, 1 h (and any range without candles) from raw ticks: each from its
in-memory view (webui/views.py) when that is loaded and covers the window, else from MongoDB.
FerretDB scans the collection for range queries and its SQLite pool is small and shared, so: few
connections (a small pool), every cursor exhausted or closed, identical concurrent requests
coalesced, and answers reused for a couple of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo import AsyncMongoClient

from cryptopulse.times import epoch_ms
from webui.health import plain
from webui.indicators import message as indicator_message
from webui.protocol import TokenBucket
from webui.series import (
    RANGES_MS,
    CandleRow,
    TickRow,
    series_from_candles,
    series_from_ticks,
    sound_candle,
    sound_tick,
    stats_from_candles,
    stats_from_ticks,
)
from webui.views import WindowView, candle_row, tick_row

log = logging.getLogger(__name__)

TICK_FIELDS = {"_id": 0, "ts": 1, "price": 1, "volume_24h": 1, "source": 1}
CANDLE_FIELDS = {"_id": 0, "start": 1, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1, "source": 1}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def pick_source(docs: list[dict[str, Any]]) -> str | None:
    """The source of the newest row: a chart never mixes two sources' prices."""
    return docs[-1].get("source") if docs else None


def rows_of(docs: list[dict[str, Any]], row: Callable[[dict[str, Any]], Any]) -> tuple[str | None, list[Any]]:
    """Stored rows sorted by time as (the newest one's source, that source's rows); a row a chart cannot show
    (a NaN or an infinity a foreign producer wrote) is left out, never sent."""
    source = pick_source(docs)
    sound = sound_candle if row is candle_row else sound_tick
    rows = []
    for doc in docs:
        if doc.get("source") != source:
            continue
        try:
            kept = sound(row(doc))
        except (KeyError, TypeError, ValueError):  # a document without its fields: skipped like a NaN
            kept = None
        if kept is not None:
            rows.append(kept)
    return source, rows


def encode(message: dict[str, Any]) -> str:
    """JSON as browsers read it: NaN and infinities raise ValueError instead of writing what JSON.parse refuses."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


OVERVIEW_SECONDS = 10.0  # an overview is reused this long (the page refreshes it every minute; ticks move it)
SPARK_POINTS = 48  # a 24 h sparkline: one close per 30 minutes


def rows_by_symbol(docs: list[dict[str, Any]], row: Callable[[dict[str, Any]], Any]) -> dict[str, tuple[str | None,
                                                                                                       list[Any]]]:
    """`rows_of` per symbol, from documents of several symbols sorted by time."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        grouped.setdefault(doc.get("symbol"), []).append(doc)
    return {symbol: rows_of(group, row) for symbol, group in grouped.items()}


def overview_coin(symbol: str, stop: int, candles: tuple[str | None, list[CandleRow]],
                  ticks: tuple[str | None, list[TickRow]], recent: list[dict[str, Any]]) -> dict[str, Any]:
    """One coin's row of the overview: its 24 h chart's numbers (the same snapshot code, SPARK_POINTS buckets), the
    price of the newest live tick of the chart's source, and the closes of the buckets as a sparkline."""
    snap = build_snapshot(symbol, "24h", stop, candles, ticks, recent, SPARK_POINTS)
    stats = snap["stats"]
    coin = {"symbol": symbol, "source": snap["source"], "simulated": snap["simulated"], "basis": snap["basis"],
            "price": stats["price"], "first": stats["first"], "change": stats["change"],
            "change_pct": stats["change_pct"], "high": stats["max"], "low": stats["min"], "volume": stats["volume"],
            "last_update": stats["last_update"], "spark_ms": snap["bucket_ms"],
            "spark": [[c[0], c[4]] for c in snap["candles"]]}
    live = [t for t in recent if t["source"] == snap["source"] or snap["source"] is None]
    if live and (coin["last_update"] is None or live[-1]["ts"] > coin["last_update"]):
        tick = live[-1]
        coin |= {"price": tick["price"], "last_update": tick["ts"], "source": tick["source"],
                 "simulated": tick["source"] == "simulated"}
        if coin["first"] is None:
            coin["first"] = tick["price"]
        coin["high"] = max(tick["price"], coin["high"] if coin["high"] is not None else tick["price"])
        coin["low"] = min(tick["price"], coin["low"] if coin["low"] is not None else tick["price"])
        coin["change"] = tick["price"] - coin["first"]
        coin["change_pct"] = coin["change"] / coin["first"] * 100 if coin["first"] else None
    return coin


def overview_text(symbols: tuple[str, ...], stop: int, candles: dict[str, tuple[str | None, list[CandleRow]]],
                  ticks: dict[str, tuple[str | None, list[TickRow]]], recent: dict[str, list[dict[str, Any]]]) -> str:
    """The encoded `overview` message (server_ms left null for the caller to fill in)."""
    coins = [overview_coin(s, stop, candles.get(s, (None, [])), ticks.get(s, (None, [])), recent.get(s, []))
             for s in symbols]
    return encode({"type": "overview", "end": stop, "start": stop - RANGES_MS["24h"], "coins": coins,
                   "server_ms": None})


def indicators_text(snapshot_text: str) -> str:
    """The encoded `indicators` message of an encoded snapshot."""
    return encode(indicator_message(json.loads(snapshot_text)))


class Busy(Exception):  # noqa: N818 - a state, not a failure: the client is told when to ask again
    """Too many windows other than the live ones were asked for, by all clients together: ask again later."""

    def __init__(self, retry_ms: int) -> None:
        super().__init__(f"ask again in {retry_ms / 1000:g} s")
        self.retry_ms = retry_ms


# A window: (symbol, range, end, span_ms, bucket_ms). A chart's is (symbol, range, end or None, None, None); the
# history API may ask for any window (span_ms, range None) and any bucket width (its interval).
Key = tuple[str, str | None, int | None, int | None, int | None]


@dataclass(eq=False, slots=True)
class Answer:
    """A snapshot as the wire carries it, encoded once for every client that asks for the same window."""

    text: str
    start: int  # the window's start (epoch ms)
    newest: int | None  # the newest row's time, None when the window is empty
    # its `indicators` message (webui/indicators.py), computed on the first request for it, then shared
    indicators: asyncio.Future[str] | None = None

    @classmethod
    def of(cls, snap: dict[str, Any]) -> Answer:
        return cls(encode(snap), snap["start"], snap["stats"]["last_update"])


@dataclass(eq=False)
class _Build:
    """One query shared by every client that asked for the same window while it runs."""

    task: asyncio.Task[Answer] | None = None
    past: bool = False  # a window with an explicit `end`, not the live one
    waiters: int = 0
    querying: bool = False  # holds a MongoDB connection: it runs to the end even if everyone left (cached)


_current_build: contextvars.ContextVar[_Build | None] = contextvars.ContextVar("current_build", default=None)


@dataclass
class AnswerCache:
    """Answers by (symbol, range, end), fresh for `seconds`, least recently used dropped past `budget` bytes."""

    seconds: float
    budget: int
    entries: OrderedDict[Key, tuple[float, Answer]] = field(default_factory=OrderedDict)
    size: int = 0

    def get(self, key: Key) -> Answer | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.seconds:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return hit[1]

    def put(self, key: Key, answer: Answer) -> None:
        if self.seconds <= 0 or len(answer.text) > self.budget:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (time.monotonic(), answer)
        self.size += len(answer.text)
        now = time.monotonic()
        while self.entries and (self.size > self.budget or now - next(iter(self.entries.values()))[0] >= self.seconds):
            self._drop(next(iter(self.entries)))

    def prune(self) -> None:
        """Drop every answer that is no longer fresh (between bursts nothing else would)."""
        now = time.monotonic()
        for key in [k for k, (at, _) in self.entries.items() if now - at >= self.seconds]:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        _, answer = self.entries.pop(key)
        self.size -= len(answer.text)

    def __len__(self) -> int:
        return len(self.entries)


def build_snapshot(symbol: str, range_: str | None, end: int, candles: tuple[str | None, list[CandleRow]],
                   ticks: tuple[str | None, list[TickRow]], recent: list[dict[str, Any]],
                   max_points: int, *, span_ms: int | None = None, bucket_ms: int | None = None) -> dict[str, Any]:
    """The snapshot message from rows sorted by time: candles (one source's) when there are any, else raw ticks.

    The window is `range_` (a chart's range) ending at `end`, or `span_ms` long for any other window (the history
    API's start/end; `range` is then null); buckets are the chart's for max_points, or `bucket_ms` (the API's
    interval). `recent` are ticks the live consumer saw but the rows may not hold yet (sink lag); those newer
    than the newest tick row and inside the window are appended.
    """
    range_ms = span_ms or RANGES_MS[range_ or ""]
    start = end - range_ms
    source, rows = candles
    if rows:
        series = series_from_candles(rows, range_ms, max_points, bucket_ms)
        stats = stats_from_candles(rows)
        basis = "candles_1m"
    else:
        source, rows = ticks
        source = source or (recent[-1]["source"] if recent else None)
        newest = rows[-1].ts if rows else start - 1
        unstored = [TickRow(t["ts"], t["price"], t.get("volume_24h")) for t in recent
                    if t["source"] == source and newest < t["ts"] <= end and t["ts"] >= start]
        rows = sorted(rows + unstored, key=lambda r: r.ts) if unstored else rows
        series = series_from_ticks(rows, range_ms, max_points, bucket_ms)
        stats = stats_from_ticks(rows, series.bucket_ms)
        basis = "ticks"
    return {
        "type": "snapshot",
        "symbol": symbol,
        "range": None if span_ms else range_,
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
    """Reads ticks and candles for a window and builds snapshots, a few at a time.

    Identical requests share one build, which outlives the departure of any of its waiters (one client's
    re-subscribe never cancels another's snapshot); a build still waiting for a connection is dropped once
    nobody waits for it, so a client that re-subscribes again and again holds at most one queued query.
    Answers are kept for `cache_seconds`, within `cache_bytes` (least recently used first out).
    """

    def __init__(self, uri: str, database: str, pool: int, max_points: int, cache_seconds: float,
                 recent: Callable[[str], list[dict[str, Any]]], candle_view: WindowView | None = None,
                 tick_view: WindowView | None = None, cache_bytes: int = 16 * 2**20, past_rate: float = 0) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True, maxPoolSize=pool,
                                                         serverSelectionTimeoutMS=5000)
        self.db = self.client[database]
        self.max_points = max_points
        self.cache_seconds = cache_seconds
        self._recent = recent
        self.candle_view, self.tick_view = candle_view, tick_view
        self._gate = asyncio.Semaphore(pool)
        self._past_gate = asyncio.Semaphore(max(1, pool - 1))
        self._inflight: dict[Key, _Build] = {}
        self._cache = AnswerCache(cache_seconds, cache_bytes)
        # Windows with an explicit `end` that are neither cached nor being built, per second, all clients together
        # (0: no limit): each may be a collection scan, and a botnet has as many addresses as it likes.
        self._past_budget = TokenBucket(past_rate, 2 * past_rate) if past_rate > 0 else None
        # one thread for the live windows (cheap, from the views, what the page asks for) and one for any other
        # `end`: a client asking for old windows again and again queues behind itself, not before the page
        self._cpu_live = ThreadPoolExecutor(1, thread_name_prefix="snapshot-live")
        self._cpu_past = ThreadPoolExecutor(1, thread_name_prefix="snapshot-past")
        # The oldest time anything is stored at (epoch ms), refreshed at most once a minute: an `end` before it
        # is answered with an empty window without a query.
        self.data_since: int | None = None
        self._since_checked = float("-inf")
        self._since_task: asyncio.Task[None] | None = None
        # the markets overview: one answer for every client, built by one task at a time, fresh OVERVIEW_SECONDS
        self._overview: tuple[float, Answer] | None = None
        self._overview_task: asyncio.Task[Answer] | None = None

    async def close(self) -> None:
        if self._since_task is not None:
            self._since_task.cancel()
        await self.client.close()
        for pool in (self._cpu_live, self._cpu_past):
            pool.shutdown(wait=False, cancel_futures=True)

    def prune(self) -> None:
        """Forget answers that are no longer fresh."""
        self._cache.prune()

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await self.client.admin.command("ping")
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "ping_ms": round((time.perf_counter() - started) * 1000, 1)}

    async def snapshot(self, symbol: str, range_: str, end: int | None = None) -> dict[str, Any]:
        """The snapshot message ending at `end` (epoch ms) or now, as a dict (see `answer`)."""
        return json.loads((await self.answer(symbol, range_, end)).text)

    async def answer(self, symbol: str, range_: str | None, end: int | None = None, *, span_ms: int | None = None,
                     bucket_ms: int | None = None) -> Answer:
        """The snapshot ending at `end` (epoch ms) or now, encoded; `end` is clamped to the data's span: a
        time ahead of now is now, a time before anything stored is an empty window (no query).

        The charts ask for a `range_`; the history API may also ask for a window `span_ms` long ending at `end`
        (always a past window: never clamped to now) and for buckets of `bucket_ms`."""
        if span_ms is not None and end is None:
            raise ValueError("a window of span_ms needs its end")
        if span_ms is None and end is not None and end >= int(time.time() * 1000):
            end = None  # the future is now: the live window, shared with everyone who asks for it
        if end is not None and self._before_data(end):
            snap = build_snapshot(symbol, range_, end, (None, []), (None, []), [], self.max_points, span_ms=span_ms,
                                  bucket_ms=bucket_ms)
            return Answer.of({**snap, "server_ms": 0.0})
        key: Key = (symbol, range_, end, span_ms, bucket_ms)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        build = self._inflight.get(key)
        if build is None:
            if end is not None and self._past_budget is not None and not self._past_budget.allow():
                raise Busy(int(max(1.0, 1 / self._past_budget.rate) * 1000))
            build = self._inflight[key] = _Build(past=end is not None)
            build.task = asyncio.create_task(self._shared_build(key, build))
        assert build.task is not None
        build.waiters += 1
        try:
            return await asyncio.shield(build.task)
        finally:
            build.waiters -= 1
            if build.waiters == 0 and not build.querying and not build.task.done():
                build.task.cancel()  # nobody wants it any more and it has not reached MongoDB yet

    async def indicators(self, answer: Answer) -> str:
        """The `indicators` message of `answer`'s window (webui/indicators.py), computed once per answer, off the
        event loop, and shared by every client that asks for it while the answer is fresh."""
        if answer.indicators is None:
            answer.indicators = asyncio.ensure_future(self._in(self._cpu_past, indicators_text, answer.text))
        return await asyncio.shield(answer.indicators)

    async def overview(self, symbols: tuple[str, ...]) -> Answer:
        """The markets overview (every coin's last 24 h: price, change, volume, high, low, a sparkline), encoded:
        one build shared by every client that asks while it runs, reused for OVERVIEW_SECONDS."""
        fresh = max(self.cache_seconds, OVERVIEW_SECONDS)
        if self._overview is not None and time.monotonic() - self._overview[0] < fresh:
            return self._overview[1]
        if self._overview_task is None or self._overview_task.done():
            self._overview_task = asyncio.create_task(self._build_overview(symbols))
        return await asyncio.shield(self._overview_task)

    async def _build_overview(self, symbols: tuple[str, ...]) -> Answer:
        started = time.perf_counter()
        stop = int(time.time() * 1000)
        start = stop - RANGES_MS["24h"]
        window = {"$gte": _dt(start), "$lte": _dt(stop)}
        cpu = self._cpu_live
        candles: dict[str, tuple[str | None, list[CandleRow]]] = {}
        if self.candle_view is not None and self.candle_view.covers(start):
            view = self.candle_view
            candles = await self._in(cpu, lambda: {s: view.window(s, start, stop) for s in symbols})
        else:  # one query for every coin: FerretDB scans the collection once, not once per coin
            docs = await self._find("candles_1m", {"symbol": {"$in": list(symbols)}, "start": window}, CANDLE_FIELDS
                                    | {"symbol": 1}, "start")
            candles = await self._in(cpu, rows_by_symbol, docs, candle_row)
        bare = [s for s in symbols if not candles.get(s, (None, []))[1]]
        ticks: dict[str, tuple[str | None, list[TickRow]]] = {}
        if bare:  # coins without candles (no `streams` running): their ticks, as their 24 h chart reads them
            docs = await self._find("prices", {"symbol": {"$in": bare}, "ts": window}, TICK_FIELDS | {"symbol": 1},
                                    "ts")
            ticks = await self._in(cpu, rows_by_symbol, docs, tick_row)
        recent = {s: self._recent(s) for s in symbols}
        text = await self._in(cpu, overview_text, symbols, stop, candles, ticks, recent)
        answer = Answer(text.replace('"server_ms":null', f'"server_ms":{(time.perf_counter() - started) * 1000:.1f}'),
                        1, None)
        self._overview = (time.monotonic(), answer)
        return answer

    async def in_worker(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work` in the thread of the windows other than the live ones (the history API's formatting)."""
        return await self._in(self._cpu_past, work, *args)

    def last_tick(self, symbol: str) -> dict[str, Any] | None:
        """The newest tick of `symbol` the dashboard knows: the live feed's, else the tick view's (the last hour)."""
        recent = self._recent(symbol)
        if recent:
            return recent[-1]
        if self.tick_view is not None and self.tick_view.ready.is_set():
            now = int(time.time() * 1000)
            source, rows = self.tick_view.window(symbol, now - self.tick_view.spec.keep_ms, now)
            if rows:
                return {"symbol": symbol, "source": source, "ts": rows[-1].ts, "price": rows[-1].price,
                        "volume_24h": rows[-1].volume_24h, "change_24h_pct": None}
        return None

    async def _shared_build(self, key: Key, build: _Build) -> Answer:
        _current_build.set(build)
        try:
            # a chart's window through the three-argument call (the tests' stubs replace just that)
            snap = await (self._build(*key[:3]) if key[3:] == (None, None) else self._build(*key))
            answer = await self._in(self._cpu_live if key[2] is None else self._cpu_past, Answer.of, snap)
        finally:
            if self._inflight.get(key) is build:
                del self._inflight[key]
        self._cache.put(key, answer)
        return answer

    def _before_data(self, end: int) -> bool:
        """Whether `end` lies before everything stored; starts a refresh of that bound when it is a minute old."""
        if time.monotonic() - self._since_checked > 60 and (self._since_task is None or self._since_task.done()):
            self._since_checked = time.monotonic()
            self._since_task = asyncio.create_task(self._refresh_since())
        return self.data_since is not None and end < self.data_since

    async def _refresh_since(self) -> None:
        try:
            firsts = [await self._oldest(collection, field_)
                      for collection, field_ in (("prices", "ts"), ("candles_1m", "start"))]
        except Exception as exc:  # noqa: BLE001 - no bound known: every `end` is queried, as before
            log.info("the oldest stored time could not be read (%s); `end` is not clamped from below", plain(exc))
            self.data_since = None
            return
        known = [first for first in firsts if first is not None]
        self.data_since = epoch_ms(min(known)) if known else None

    async def _oldest(self, collection: str, field_: str) -> datetime | None:
        """The earliest `field_` stored in `collection` (one scan on FerretDB: done at most once a minute)."""
        async with self._gate:
            cursor = self.db[collection].find({}, {"_id": 0, field_: 1}).sort(field_, 1).limit(1)
            try:
                docs = await cursor.to_list()
            finally:
                await cursor.close()
        return next((d[field_] for d in docs if isinstance(d.get(field_), datetime)), None)

    async def _build(self, symbol: str, range_: str | None, end: int | None, span_ms: int | None = None,
                     bucket_ms: int | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        stop = end if end is not None else int(time.time() * 1000)
        span = span_ms or RANGES_MS[range_ or ""]
        start = stop - span
        window = {"$gte": _dt(start), "$lte": _dt(stop)}
        candles: tuple[str | None, list[CandleRow]] = (None, [])
        ticks: tuple[str | None, list[TickRow]] = (None, [])
        # the arithmetic (reading a view, rows from documents, bucketing) runs in a worker thread of its own, so
        # the event loop keeps delivering ticks while a big window is computed
        cpu = self._cpu_live if end is None else self._cpu_past
        if span > RANGES_MS["1h"]:  # 24 h, 7 d (and any longer window) from candles; 1 h from ticks
            if self.candle_view is not None and self.candle_view.covers(start):
                candles = await self._in(cpu, self.candle_view.window, symbol, start, stop)
            else:
                docs = await self._find("candles_1m", {"symbol": symbol, "start": window}, CANDLE_FIELDS, "start")
                candles = await self._in(cpu, rows_of, docs, candle_row)
        if not candles[1]:
            if self.tick_view is not None and self.tick_view.covers(start):
                ticks = await self._in(cpu, self.tick_view.window, symbol, start, stop)
            else:
                docs = await self._find("prices", {"symbol": symbol, "ts": window}, TICK_FIELDS, "ts")
                ticks = await self._in(cpu, rows_of, docs, tick_row)
        recent = self._recent(symbol)  # copied here: the live consumer's buffer changes on the loop
        snap = await self._in(cpu, partial(build_snapshot, span_ms=span_ms, bucket_ms=bucket_ms), symbol, range_, stop,
                              candles, ticks, recent, self.max_points)
        snap["server_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return snap

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

    async def _find(self, collection: str, query: dict[str, Any], fields: dict[str, int],
                    order: str) -> list[dict[str, Any]]:
        """All matching rows sorted by `order`; the cursor is always exhausted or closed (FerretDB's pool).

        A window with an explicit `end` waits for one of pool - 1 connections first: however many are asked
        for, one connection is always left for the live windows the page shows."""
        build = _current_build.get()
        past = build is not None and build.past
        async with self._past_gate if past else contextlib.nullcontext(), self._gate:
            if build is not None:
                build.querying = True
            cursor = self.db[collection].find(query, fields, batch_size=10_000)
            try:
                rows = await cursor.to_list()
            finally:
                await cursor.close()
        # sorted here (FerretDB would sort the scanned rows in memory anyway), off the event loop
        await self._in(self._cpu_live if not past else self._cpu_past, partial(rows.sort, key=lambda d: d[order]))
        return rows
