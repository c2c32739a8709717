"""Chart windows and pages of bars, from the in-memory views or MongoDB (FerretDB), as snapshot messages.

A window is drawn in bars of one timeframe (webui/timeframes.py): the candles of its interval, or 5 s bars of raw
ticks; a window without candles (no `streams` running) falls back to raw ticks. Each comes from its view
(webui/views.py) where the view holds it; what is older than a view comes from MongoDB by `_id`: a candle's `_id` is
computable (symbol|source|interval|start), and FerretDB answers an `_id` equality in ~0.7 ms from an index while it
answers any range query by scanning the whole collection (~56 us a document: 7.3 s for a day of one coin among
129,600 minutes), so a window of n bars costs n lookups, 4 at a time, whatever the store holds (docs/webui.md).
Only where no view knows the coin's source (views off, a coin only in the distant past) is the range scanned.
FerretDB's SQLite pool is small and shared, so: few connections (a small pool), every cursor exhausted or closed,
identical concurrent requests coalesced, answers reused for a couple of seconds, and no client waits for a slow
read longer than the deadline (it is told to ask again, and the read goes on for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from cryptopulse.candle import INTERVAL_MS, INTERVALS, candle_id
from cryptopulse.store import PRICES, Retention, candle_collection
from cryptopulse.times import DAY_MS, epoch_ms
from webui.health import plain
from webui.indicators import message as indicator_message
from webui.protocol import TokenBucket
from webui.series import (
    CandleRow,
    TickRow,
    series_from_candles,
    series_from_ticks,
    sound_candle,
    sound_tick,
    stats_from_candles,
    stats_from_ticks,
)
from webui.timeframes import (
    DEFAULT_TIMEFRAME,
    RANGES_MS,
    TICKS,
    TIMEFRAME_MS,
    WARMUP_BARS,
    bucket_start,
    is_candles,
    older_page,
    page_bounds,
    span_ms,
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
            # the newest SPARK_POINTS: 24 h of half hours meets 49 of them, the oldest only partly
            "spark": [[c[0], c[4]] for c in snap["candles"][-SPARK_POINTS:]]}
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
    return encode({"type": "overview", "end": stop, "start": stop - DAY_MS, "coins": coins,
                   "server_ms": None})


def indicators_text(answer: Answer) -> str:
    """The encoded `indicators` message of an answer (its warm-up bars read first)."""
    return encode(indicator_message(json.loads(answer.text), answer.warmup))


class Busy(Exception):  # noqa: N818 - a state, not a failure: the client is told when to ask again
    """The answer is not given now: too many windows that need the store were asked for by all clients together, or
    this one takes longer to read than a client is kept waiting (it is read on, and kept for the client's next ask)."""

    def __init__(self, retry_ms: int, reason: str = "too many past windows asked for") -> None:
        super().__init__(f"{reason}; ask again in {retry_ms / 1000:g} s")
        self.retry_ms = retry_ms
        self.reason = reason

    @property
    def message(self) -> str:
        return f"history busy: {self}"


# What is asked for: (symbol, range, end, span_ms, interval, limit). A chart's window is (symbol, range, end or None,
# None, interval, None); the history API may also ask for any window (span_ms, range None) and for a page (limit: its
# bars, end: the `before` it ends at, None for now).
Key = tuple[str, str | None, int | None, int | None, str, int | None]

VIEW_WAIT_SECONDS = 30.0  # a view still loading is waited for this long (it loads in seconds) before MongoDB is read
SLOW_ANSWER_SECONDS = 60.0  # an answer that outlived a client's deadline is kept this long for its next ask
TICKS_FALLBACK_MS = 7 * DAY_MS  # windows without candles up to this long are drawn from ticks (kept 48 h anyway)


@dataclass(eq=False, slots=True)
class Answer:
    """A snapshot as the wire carries it, encoded once for every client that asks for the same window."""

    text: str
    start: int  # the window's start (epoch ms)
    newest: int | None  # the newest row's time, None when the window is empty
    warmup: list[Any] = field(default_factory=list)  # the candles before the window its indicators start from
    # its `indicators` message (webui/indicators.py), computed on the first request for it, then shared
    indicators: asyncio.Future[str] | None = None

    @classmethod
    def of(cls, snap: dict[str, Any]) -> Answer:
        warmup = snap.pop("_warmup", [])
        return cls(encode(snap), snap["start"], snap["stats"]["last_update"], warmup)


@dataclass(eq=False)
class _Build:
    """One query shared by every client that asked for the same window while it runs."""

    task: asyncio.Task[Answer] | None = None
    past: bool = False  # reads the store for a window other than the live ones: the past connections' share
    waiters: int = 0
    querying: bool = False  # holds a MongoDB connection: it runs to the end even if everyone left (cached)
    slow: bool = False  # outlived a client's deadline: it runs to the end and is kept for SLOW_ANSWER_SECONDS


_current_build: contextvars.ContextVar[_Build | None] = contextvars.ContextVar("current_build", default=None)


@dataclass
class AnswerCache:
    """Answers by what was asked, fresh for `seconds` (or as long as `put` says), least recently used dropped past
    `budget` bytes."""

    seconds: float
    budget: int
    entries: OrderedDict[Key, tuple[float, Answer]] = field(default_factory=OrderedDict)  # key: (expiry, answer)
    size: int = 0

    def get(self, key: Key) -> Answer | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if time.monotonic() >= hit[0]:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return hit[1]

    def put(self, key: Key, answer: Answer, seconds: float | None = None) -> None:
        fresh = self.seconds if seconds is None else seconds
        if fresh <= 0 or len(answer.text) > self.budget:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (time.monotonic() + fresh, answer)
        self.size += len(answer.text)
        while self.entries and self.size > self.budget:
            self._drop(next(iter(self.entries)))
        self.prune()

    def prune(self) -> None:
        """Drop every answer that is no longer fresh (between bursts nothing else would)."""
        now = time.monotonic()
        for key in [k for k, (expiry, _) in self.entries.items() if now >= expiry]:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        _, answer = self.entries.pop(key)
        self.size -= len(answer.text)

    def __len__(self) -> int:
        return len(self.entries)


def build_snapshot(symbol: str, range_: str | None, end: int, candles: tuple[str | None, list[CandleRow]],
                   ticks: tuple[str | None, list[TickRow]], recent: list[dict[str, Any]],
                   max_points: int, *, span_ms: int | None = None, interval: str | None = None,
                   warmup: list[CandleRow] | None = None) -> dict[str, Any]:
    """The snapshot message from rows sorted by time: candles (one source's) when there are any, else raw ticks.

    The window is `range_` (a chart's range) ending at `end`, or `span_ms` long for any other window (the history
    API's start/end and pages; `range` is then null). Its bars are those of `interval` (candles one bar each, ticks
    bucketed at its width); without one (the markets overview) the nice width that fits max_points, over 1-minute
    candles. `recent` are ticks the live consumer saw but the rows may not hold yet (sink lag); those newer than the
    newest tick row and inside the window are appended. `warmup` are the candles before the window its indicators
    start from (carried to the Answer, not sent).
    """
    range_ms = span_ms or span_ms_of(range_ or "", interval)
    start = end - range_ms
    bucket = TIMEFRAME_MS[interval] if interval else None
    source, rows = candles
    if rows:
        series = series_from_candles(rows, range_ms, max_points, bucket)
        stats = stats_from_candles(rows)
        basis = candle_collection(interval if interval and is_candles(interval) else "1m")
    else:
        source, rows = ticks
        source = source or (recent[-1]["source"] if recent else None)
        newest = rows[-1].ts if rows else start - 1
        unstored = [TickRow(t["ts"], t["price"], t.get("volume_24h")) for t in recent
                    if t["source"] == source and newest < t["ts"] <= end and t["ts"] >= start]
        rows = sorted(rows + unstored, key=lambda r: r.ts) if unstored else rows
        series = series_from_ticks(rows, range_ms, max_points, bucket)
        stats = stats_from_ticks(rows, series.bucket_ms)
        # an empty window is still its interval's (the ticks are only a fallback where they hold something)
        basis = candle_collection(interval) if not rows and interval and is_candles(interval) else PRICES
        warmup = None
    return {
        "type": "snapshot",
        "symbol": symbol,
        "range": None if span_ms else range_,
        "interval": interval,
        "start": start,
        "end": end,
        "basis": "ticks" if basis == PRICES else basis,
        "source": source,
        "simulated": source == "simulated",
        "bucket_ms": series.bucket_ms,
        "line": series.line,
        "candles": series.candles,
        "volume": series.volume,
        "stats": stats,
        "_warmup": [(c.start, c.open, c.high, c.low, c.close) for c in warmup or []],
    }


def span_ms_of(range_: str, interval: str | None) -> int:
    """A chart range's span; "all" needs its interval (the markets overview's 24 h does not)."""
    return span_ms(range_, interval) if interval else RANGES_MS[range_] or 0


def window_starts(start: int, stop: int, interval: str) -> range:
    """The bucket starts of `interval` in [start, stop]."""
    first = bucket_start(start, interval)
    width = INTERVAL_MS[interval]
    return range(first + (width if first < start else 0), stop + 1, width)


class HistoryStore:
    """Reads ticks and candles for a window and builds snapshots, a few at a time.

    Identical requests share one build, which outlives the departure of any of its waiters (one client's
    re-subscribe never cancels another's snapshot); a build still waiting for a connection is dropped once
    nobody waits for it, so a client that re-subscribes again and again holds at most one queued query.
    Answers are kept for `cache_seconds`, within `cache_bytes` (least recently used first out). No client
    waits longer than `deadline` seconds: it gets `Busy` and the build goes on, kept for its next ask.
    """

    def __init__(self, uri: str, database: str, pool: int, max_points: int, cache_seconds: float,
                 recent: Callable[[str], list[dict[str, Any]]], views: dict[str, WindowView] | None = None,
                 cache_bytes: int = 16 * 2**20, past_rate: float = 0, deadline: float = 5.0) -> None:
        # a store that is away is said to be away ("history unavailable") before a client's deadline says "busy"
        self.client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True, maxPoolSize=pool,
                                                         serverSelectionTimeoutMS=int(min(5.0, deadline * 0.6) * 1000))
        self.db = self.client[database]
        self.max_points = max_points
        self.cache_seconds = cache_seconds
        self.deadline = deadline
        self._recent = recent
        self.views = views if views is not None else {}  # "ticks", and one per interval (webui/views.py)
        self.retention = Retention()
        self._gate = asyncio.Semaphore(pool)
        self._past_gate = asyncio.Semaphore(max(1, pool - 1))
        self._inflight: dict[Key, _Build] = {}
        self._cache = AnswerCache(cache_seconds, cache_bytes)
        # Windows other than the live ones that must be read from the store, per second, all clients together (0: no
        # limit): a botnet has as many addresses as it likes.
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
        # the store's last word, from the health probe and from builds: a client whose deadline passes while the
        # store is away is told it is away ("unavailable"), not that its window is slow ("busy")
        self.store_error: PyMongoError | None = None

    @property
    def candle_view(self) -> WindowView | None:
        """The 1-minute candles' view (the markets overview's)."""
        return self.views.get("1m")

    @property
    def tick_view(self) -> WindowView | None:
        return self.views.get("ticks")

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
            if isinstance(exc, PyMongoError):
                self.store_error = exc
            return {"ok": False, "error": str(exc)}
        self.store_error = None
        return {"ok": True, "ping_ms": round((time.perf_counter() - started) * 1000, 1)}

    async def snapshot(self, symbol: str, range_: str, end: int | None = None,
                       interval: str | None = None) -> dict[str, Any]:
        """The snapshot message ending at `end` (epoch ms) or now, as a dict (see `answer`)."""
        return json.loads((await self.answer(symbol, range_, end, interval=interval)).text)

    async def answer(self, symbol: str, range_: str | None, end: int | None = None, *, span_ms: int | None = None,
                     interval: str | None = None) -> Answer:
        """The snapshot ending at `end` (epoch ms) or now, encoded; a time ahead of now is now, and a time before
        anything stored is an empty window without a query (with views: before the coin's first day in the daily
        view; without: before the oldest time stored, refreshed once a minute).

        The charts ask for a `range_` in bars of `interval` (default: the range's); the history API may also ask for
        a window `span_ms` long ending at `end` (always a past window: never clamped to now)."""
        if span_ms is not None and end is None:
            raise ValueError("a window of span_ms needs its end")
        interval = interval or DEFAULT_TIMEFRAME[range_ or ""]
        if span_ms is None and end is not None and end >= int(time.time() * 1000):
            end = None  # the future is now: the live window, shared with everyone who asks for it
        if end is not None and (self._before_data(end) or await self._before_symbol(symbol, end)):
            snap = build_snapshot(symbol, range_, end, (None, []), (None, []), [], self.max_points, span_ms=span_ms,
                                  interval=interval)
            return Answer.of({**snap, "server_ms": 0.0})
        span = span_ms or span_ms_of(range_ or "", interval)
        first = (end if end is not None else int(time.time() * 1000)) - span
        return await self._answer((symbol, range_, end, span_ms, interval, None), end is not None, interval, first)

    async def page(self, symbol: str, interval: str, before: int | None, limit: int) -> Answer:
        """The page of `limit` bars of `interval` that begin before `before` (now when None), encoded, with
        `next_before`: where the next (older) page ends, null when the history ends."""
        stop = before if before is not None else int(time.time() * 1000)
        first, _ = page_bounds(stop, interval, limit)
        return await self._answer((symbol, None, before, None, interval, limit), True, interval, first)

    async def _answer(self, key: Key, past: bool, interval: str, first: int) -> Answer:
        """The answer to `key`: cached, shared with a build under way, or built; the store's windows other than the
        live ones on the past budget; no longer than the deadline."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        build = self._inflight.get(key)
        if build is None:
            past = past and not self._in_memory(interval, first - WARMUP_BARS * TIMEFRAME_MS[interval])
            if past and self._past_budget is not None and not self._past_budget.allow():
                raise Busy(int(max(1.0, 1 / self._past_budget.rate) * 1000))
            build = self._inflight[key] = _Build(past=past)
            build.task = asyncio.create_task(self._shared_build(key, build))
        assert build.task is not None
        build.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(build.task), self.deadline)
        except TimeoutError:
            if self.store_error is not None:
                raise ServerSelectionTimeoutError(f"the database is away ({plain(self.store_error)})") from None
            build.slow = True
            retry = max(1, round(self.deadline))
            raise Busy(retry * 1000, "this window takes long to read (it goes on; the answer is kept for you)") \
                from None
        finally:
            build.waiters -= 1
            if build.waiters == 0 and not build.querying and not build.slow and not build.task.done():
                build.task.cancel()  # nobody wants it any more and it has not reached MongoDB yet

    def _in_memory(self, interval: str, start: int) -> bool:
        """Whether a window of `interval` from `start` is answered from a view (no store read to budget for)."""
        view = self.views.get("ticks" if interval == TICKS else interval)
        return view is not None and view.covers(start)

    async def indicators(self, answer: Answer) -> str:
        """The `indicators` message of `answer`'s window (webui/indicators.py), computed once per answer, off the
        event loop, and shared by every client that asks for it while the answer is fresh."""
        if answer.indicators is None:
            answer.indicators = asyncio.ensure_future(self._in(self._cpu_past, indicators_text, answer))
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
        start = stop - DAY_MS
        window = {"$gte": _dt(start), "$lte": _dt(stop)}
        cpu = self._cpu_live
        candles: dict[str, tuple[str | None, list[CandleRow]]] = {}
        view = self.candle_view
        if view is not None and view.covers(start):
            candles = await self._in(cpu, lambda: {s: view.window(s, start, stop) for s in symbols})
        else:  # one query for every coin: FerretDB scans the collection once, not once per coin
            docs = await self._find(candle_collection("1m"), {"symbol": {"$in": list(symbols)}, "start": window},
                                    CANDLE_FIELDS | {"symbol": 1}, "start")
            candles = await self._in(cpu, rows_by_symbol, docs, candle_row)
        bare = [s for s in symbols if not candles.get(s, (None, []))[1]]
        ticks: dict[str, tuple[str | None, list[TickRow]]] = {}
        if bare:  # coins without candles (no `streams` running): their ticks, as their 24 h chart reads them
            docs = await self._find(PRICES, {"symbol": {"$in": bare}, "ts": window}, TICK_FIELDS | {"symbol": 1},
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
        view = self.tick_view
        if view is not None and view.ready.is_set():
            now = int(time.time() * 1000)
            source, rows = view.window(symbol, now - (view.spec.keep_ms or 0), now)
            if rows:
                return {"symbol": symbol, "source": source, "ts": rows[-1].ts, "price": rows[-1].price,
                        "volume_24h": rows[-1].volume_24h, "change_24h_pct": None}
        return None

    async def _shared_build(self, key: Key, build: _Build) -> Answer:
        _current_build.set(build)
        try:
            # a chart's window in its range's own bars through the three-argument call (the tests' stubs replace
            # just that)
            symbol, range_, end, span, interval, limit = key
            chart = span is None and limit is None and range_ is not None and interval == DEFAULT_TIMEFRAME[range_]
            try:
                snap = await (self._build(symbol, range_, end) if chart else self._build(*key))
            except PyMongoError as exc:
                self.store_error = exc
                raise
            self.store_error = None
            answer = await self._in(self._cpu_live if not build.past else self._cpu_past, Answer.of, snap)
        finally:
            if self._inflight.get(key) is build:
                del self._inflight[key]
        self._cache.put(key, answer, SLOW_ANSWER_SECONDS if build.slow else None)
        return answer

    def _before_data(self, end: int) -> bool:
        """Whether `end` lies before everything stored; starts a refresh of that bound when it is a minute old.

        Only without views: with them, an old window costs its bars' lookups by `_id` (never older than the
        interval's retention), and learning the bound would cost scans of the ticks and the minutes (~30 s on a full
        FerretDB) every minute someone looks back."""
        if self.views:
            return False
        if time.monotonic() - self._since_checked > 60 and (self._since_task is None or self._since_task.done()):
            self._since_checked = time.monotonic()
            self._since_task = asyncio.create_task(self._refresh_since())
        return self.data_since is not None and end < self.data_since

    async def _before_symbol(self, symbol: str, end: int) -> bool:
        """Whether `end` lies before the first day and the first week of `symbol` that the daily and weekly views
        hold (they hold everything: each minute stored is rolled up into its day and week, kept for ever, and a
        back-fill of days or weeks is too): nothing of the coin is stored before that, so the window is empty
        without a read. False when a view is not there, not loaded or full, or neither knows the coin (the store
        is asked, as before)."""
        firsts = []
        for name in ("1d", "1w"):
            view = self.views.get(name)
            if view is None:
                return False
            await self._ready(view)
            if not view.ready.is_set() or view.full:
                return False
            firsts.append(view.earliest(symbol))
        known = [first for first in firsts if first is not None]
        return bool(known) and end < min(known)

    async def _refresh_since(self) -> None:
        try:
            firsts = [await self._oldest(collection, field_)
                      for collection, field_ in ((PRICES, "ts"), (candle_collection("1m"), "start"))]
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
                     interval: str | None = None, limit: int | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        interval = interval or DEFAULT_TIMEFRAME[range_ or ""]
        if limit is not None:
            snap = await self._build_page(symbol, interval, end, limit)
        else:
            snap = await self._build_window(symbol, range_, end, span_ms, interval)
        snap["server_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return snap

    def _cpu(self) -> ThreadPoolExecutor:
        build = _current_build.get()
        return self._cpu_past if build is not None and build.past else self._cpu_live

    async def _build_window(self, symbol: str, range_: str | None, end: int | None, span_ms: int | None,
                            interval: str) -> dict[str, Any]:
        stop = end if end is not None else int(time.time() * 1000)
        span = span_ms or span_ms_of(range_ or "", interval)
        start = stop - span
        candles: tuple[str | None, list[CandleRow]] = (None, [])
        warmup: list[CandleRow] = []
        ticks: tuple[str | None, list[TickRow]] = (None, [])
        # the arithmetic (reading a view, rows from documents, bucketing) runs in a worker thread of its own, so
        # the event loop keeps delivering ticks while a big window is computed
        cpu = self._cpu()
        if is_candles(interval):
            source, rows = await self.bars(symbol, interval, start - WARMUP_BARS * INTERVAL_MS[interval], stop)
            warmup = [r for r in rows if r.start < start]
            candles = (source, rows[len(warmup):])
        if not candles[1] and (interval == TICKS or span <= TICKS_FALLBACK_MS):
            ticks = await self._ticks(symbol, start, stop)
        recent = self._recent(symbol)  # copied here: the live consumer's buffer changes on the loop
        return await self._in(cpu, partial(build_snapshot, span_ms=span_ms, interval=interval, warmup=warmup),
                              symbol, range_, stop, candles, ticks, recent, self.max_points)

    async def _build_page(self, symbol: str, interval: str, before: int | None, limit: int) -> dict[str, Any]:
        stop = before if before is not None else int(time.time() * 1000)
        first, last = page_bounds(stop, interval, limit)
        width = TIMEFRAME_MS[interval]
        candles: tuple[str | None, list[CandleRow]] = (None, [])
        ticks: tuple[str | None, list[TickRow]] = (None, [])
        warmup: list[CandleRow] = []
        if is_candles(interval):
            source, rows = await self.bars(symbol, interval, first - WARMUP_BARS * width, last)
            warmup = [r for r in rows if r.start < first]
            candles = (source, rows[len(warmup):])
            keep = self.retention.keep_ms(candle_collection(interval))
            floor = None if keep is None else int(time.time() * 1000) - keep
            source = source or self._source_of(symbol, interval)  # an empty page: the coin's chart's
            found = bool(candles[1])
            older = older_page(first, found, floor, None if found or source is None else
                               self._data_until(symbol, source, interval, first))
        else:  # 5 s bars: the ticks the tick view holds (the last hour), never a scan of the stored ticks
            view = self.tick_view
            if view is not None and view.ready.is_set():
                ticks = await self._in(self._cpu(), view.window, symbol, first, last + width - 1)
            floor = view.floor() if view is not None else None
            older = older_page(first, True, floor if floor is not None else first, None)
        snap = await self._in(self._cpu(), partial(build_snapshot, span_ms=last + width - first, interval=interval,
                                                   warmup=warmup), symbol, None, last + width, candles, ticks, [],
                              limit)
        return {**snap, "type": "page", "before": before, "limit": limit, "next_before": older}

    async def bars(self, symbol: str, interval: str, start: int, stop: int) -> tuple[str | None, list[CandleRow]]:
        """The candles of `interval` in [start, stop], one source's: from its view where the view holds them (waited
        for while it loads), by `_id` from MongoDB before that; by a range scan only where no view knows the source."""
        view = self.views.get(interval)
        if view is not None:
            await self._ready(view)
        if view is not None and view.covers(start):
            return await self._in(self._cpu(), view.window, symbol, start, stop)
        source = self._source_of(symbol, interval)
        if source is None:
            docs = await self._find(candle_collection(interval), {"symbol": symbol,
                                                                  "start": {"$gte": _dt(start), "$lte": _dt(stop)}},
                                    CANDLE_FIELDS, "start")
            return await self._in(self._cpu(), rows_of, docs, candle_row)
        # the view's part from the view, the older part by `_id`, both of the source a chart of the coin shows
        floor = view.floor() if view is not None and view.ready.is_set() and not view.full else None
        split = stop + 1 if floor is None else window_starts(floor, stop + 1, interval).start
        newer: list[CandleRow] = []
        if view is not None and split <= stop:
            newer = (await self._in(self._cpu(), view.window, symbol, split, stop, source))[1]
        keep = self.retention.keep_ms(candle_collection(interval))  # nothing older is stored: not asked for
        low = start if keep is None else max(start, int(time.time() * 1000) - keep)
        older = await self._by_id(interval, symbol, source, window_starts(low, min(stop, split - 1), interval))
        return source, older + newer

    def _source_of(self, symbol: str, interval: str) -> str | None:
        """The source a chart of `symbol` shows, as the views know it (their newest row's), from the interval's own
        view, else the daily or the weekly one (they hold everything); None where no view is ready or knows it."""
        for name in (interval, "1d", "1w"):
            view = self.views.get(name)
            if view is not None and view.ready.is_set() and not view.full:
                source = view.newest_source(symbol)
                if source is not None:
                    return source
        return None

    def _data_until(self, symbol: str, source: str, interval: str, before: int) -> int | None:
        """The end of the newest bar of (symbol, source) before `before` that a view knows of, in `interval` or a
        coarser one (the finest view that holds that time first): where the next page may end, over a gap. None
        when the views know of nothing older (the view of everything included)."""
        for name in INTERVALS[INTERVALS.index(interval):]:
            view = self.views.get(name)
            if view is None or not view.ready.is_set() or view.full:
                continue
            start = view.last_before(symbol, source, before)
            if start is not None:
                return start + INTERVAL_MS[name]
            if view.floor() is None:
                return None  # it holds everything: there is nothing older
        return None

    async def _ready(self, view: WindowView) -> None:
        """Wait while `view` is loading (seconds, at start), at most VIEW_WAIT_SECONDS: faster than the store."""
        deadline = time.monotonic() + VIEW_WAIT_SECONDS
        while view.loading and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _ticks(self, symbol: str, start: int, stop: int) -> tuple[str | None, list[TickRow]]:
        view = self.tick_view
        if view is not None:
            await self._ready(view)
        if view is not None and view.covers(start):
            return await self._in(self._cpu(), view.window, symbol, start, stop)
        docs = await self._find(PRICES, {"symbol": symbol, "ts": {"$gte": _dt(start), "$lte": _dt(stop)}}, TICK_FIELDS,
                                "ts")
        return await self._in(self._cpu(), rows_of, docs, tick_row)

    async def _by_id(self, interval: str, symbol: str, source: str, starts: range) -> list[CandleRow]:
        """The stored candles of (symbol, source) at these bucket starts, each read by its `_id` (sorted by time)."""
        collection = self.db[candle_collection(interval)]

        async def one(start: int) -> dict[str, Any] | None:
            async with self._connection():
                return await collection.find_one({"_id": candle_id(symbol, source, start, interval)}, CANDLE_FIELDS)

        docs = await asyncio.gather(*(one(start) for start in starts))
        return (await self._in(self._cpu(), rows_of, [d for d in docs if d is not None], candle_row))[1]

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[None]:
        """One of the pool's connections; a window other than the live ones waits for one of pool - 1 first: however
        many are asked for, one connection is always left for the live windows the page shows."""
        build = _current_build.get()
        past = build is not None and build.past
        async with self._past_gate if past else contextlib.nullcontext(), self._gate:
            if build is not None:
                build.querying = True
            yield

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

    async def _find(self, collection: str, query: dict[str, Any], fields: dict[str, int],
                    order: str) -> list[dict[str, Any]]:
        """All matching rows sorted by `order`; the cursor is always exhausted or closed (FerretDB's pool)."""
        async with self._connection():
            cursor = self.db[collection].find(query, fields, batch_size=10_000)
            try:
                rows = await cursor.to_list()
            finally:
                await cursor.close()
        # sorted here (FerretDB would sort the scanned rows in memory anyway), off the event loop
        await self._in(self._cpu(), partial(rows.sort, key=lambda d: d[order]))
        return rows
