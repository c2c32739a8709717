"""`control backfill`: fill the gaps of the last hours or days in MongoDB from a source's history API, at any
interval of INTERVALS (1m by default; docs/control.md).

History goes through the same path as live data: Avro on Kafka, persisted by the sink connectors (one write
path). What MongoDB already holds decides what is fetched (control/history_window.py): at 1m, gaps in the stored
ticks where ticks are kept and in the stored 1m candles before that; at a coarser interval, the buckets its
collection holds no candle of that (symbol, source) for; one pass over each collection read. So a second run adds
nothing and a crashed run resumes where the store stops; ids derive from (symbol, source, time), so anything
published twice replaces itself. The window ends at the last whole bucket of the interval, never the open one, and
is bounded, before anything is fetched, by the interval's retention and the source's reach (a plan's limit).

Per symbol, in this order:
1. the history's candles of the interval, origin header BACKFILL, each page delivered before the ticks it is
   made of (1m only, where ticks are kept: the 1 h chart's raw ticks), so the stream processor finds those
   minutes decided: OHLC history (Binance klines, Coinbase candles, the simulated market's) as it is, a point
   history (CoinGecko) rolled up here (for 1m only in minutes MongoDB holds nothing for; streams/history.py);
2. then every bucket of every coarser interval that overlaps a filled gap, rolled up here from the new candles
   and the stored ones around them (streams/history_rollup.py), origin header BACKFILL_ROLLUP: the cascade takes
   a back-filled candle only into a bucket it still has open, and these are the ones it has closed.

A source that does not answer is waited for (each wait shown on its symbol's line, with why) for at most
`give_up_after` seconds without a page; then the back-fill stops with the last cause (a SourceError).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from pymongo.database import Database

from control.history_window import Window, history_window, span_text, window_gaps
from cryptopulse import kafka, store, topics
from cryptopulse.candle import INTERVALS, Candle, candle_id, parent_of
from cryptopulse.errors import DeliveryError, SourceError
from cryptopulse.settings import Settings, sink_group
from cryptopulse.times import HOUR_MS, MINUTE_MS, epoch_ms, now_ms
from producer.publisher import TickPublisher
from producer.sources.history import history_source
from streams.history import CandlePublisher, PointRollup
from streams.history_rollup import HistoryRollup, Lookup

if TYPE_CHECKING:
    from cryptopulse.tick import Tick

# Spacing of each source's points where 1m gaps are found in ticks: a gap is more than twice that.
RESOLUTION_MS = {"simulated": MINUTE_MS, "coingecko": 5 * MINUTE_MS, "binance": MINUTE_MS, "coinbase": MINUTE_MS}
# How long a back-fill waits for a source without getting a page before it gives up (`--give-up-after`).
GIVE_UP_AFTER = 300.0


@dataclass
class Filled:
    """What a back-fill published for one symbol."""

    candles: int = 0  # of the interval asked
    points: int = 0  # ticks (1m only)
    rolled_up: dict[str, int] = field(default_factory=dict)  # candles of each coarser interval
    kept: int = 0  # stored coarser buckets kept as they are (the store knew more than their children)


@dataclass
class Stored:
    """What MongoDB holds in a back-fill's window for one source, per symbol, from one pass over each collection
    read: tick times (1m, where ticks are kept) and the starts of the interval's candles."""

    ticks: dict[str, list[int]]
    candles: dict[str, list[int]]

    @classmethod
    def read(cls, settings: Settings, source: str, symbols: list[str], window: Window) -> Stored:
        with store.database(settings) as db:
            ticks = _times(db, store.PRICES, "ts", source, symbols, window.ticks_from, window.end)
            candles = _times(db, store.candle_collection(window.interval), "start", source, symbols, window.start,
                             window.end)
        return cls(ticks, candles)


def _times(db: Database, collection: str, field_name: str, source: str, symbols: list[str], start: int,
           end: int) -> dict[str, list[int]]:
    """Times (epoch ms) `collection` holds per symbol for `source` in [start, end), sorted: one pass."""
    times: dict[str, list[int]] = {s: [] for s in symbols}
    if start >= end:
        return times
    window = {"$gte": datetime.fromtimestamp(start / 1000, UTC), "$lt": datetime.fromtimestamp(end / 1000, UTC)}
    query = {"source": source, "symbol": {"$in": symbols}, field_name: window}
    for doc in db[collection].find(query, {"_id": 0, "symbol": 1, field_name: 1}):
        times[doc["symbol"]].append(epoch_ms(doc[field_name]))
    return {s: sorted(t) for s, t in times.items()}


def stored_candle(db: Database, symbol: str, source: str) -> Lookup:
    """A `Lookup` for streams/history_rollup.py: one stored candle of (symbol, source) by its `_id`."""

    def lookup(interval: str, start: int) -> Candle | None:
        doc = db[store.candle_collection(interval)].find_one({"_id": candle_id(symbol, source, start, interval)})
        return None if doc is None else Candle.from_record(doc)

    return lookup


@dataclass
class Progress:
    """One line per symbol: a bar over the time to fill, redrawn in place on a terminal."""

    symbol: str
    total_ms: int
    out: TextIO = field(default_factory=lambda: sys.stderr)
    done_ms: int = 0
    filled: Filled = field(default_factory=Filled)
    _last_percent: int = -1

    def update(self, done_ms: int) -> None:
        self.done_ms = done_ms
        percent = 100 if not self.total_ms else int(100 * done_ms / self.total_ms)
        counts = f"{self.filled.candles:,} candles" + (f", {self.filled.points:,} points" if self.filled.points else "")
        if self.out.isatty():
            bar = "#" * (percent // 4) + "." * (25 - percent // 4)
            self.out.write(f"\r  {self.symbol:6} [{bar}] {percent:3d}%  {counts}")
        elif percent // 25 != self._last_percent // 25:  # a log gets a line per quarter
            self.out.write(f"  {self.symbol:6} {percent:3d}%  {counts}\n")
        self._last_percent = percent
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(("\n" if self.out.isatty() else "") + f"  {self.symbol:6} {text}\n")
        self.out.flush()

    def finish(self) -> None:
        self.update(self.total_ms)
        if self.out.isatty():
            self.out.write("\n")


def wait_for_sink(settings: Settings, connector: str, names: list[str], timeout: float = 300) -> bool:
    """Wait until the sink `connector` has committed past everything on the topics `names`."""
    deadline = time.monotonic() + timeout
    ends = {name: topics.end_offsets_by_partition(settings, name) for name in names}
    while time.monotonic() < deadline:
        if all(all(topics.committed_offsets(settings, sink_group(connector), name, list(partitions)).get(p, -1) >= end
                   for p, end in partitions.items()) for name, partitions in ends.items()):
            return True
        time.sleep(1)
    return False


async def backfill(settings: Settings, source_name: str, symbols: list[str], hours: float,
                   out: TextIO = sys.stderr, give_up_after: float = GIVE_UP_AFTER,
                   interval: str = INTERVALS[0]) -> dict[str, Filled]:
    """Fill the gaps of the last `hours` at `interval`; returns what was published per symbol.

    Raises ConfigError when the span is longer than the interval's retention or the source's reach (before
    anything is fetched), SourceError when the source has given no page for `give_up_after` seconds (or its next
    wait would end past that), with the last reason it gave."""
    progress: dict[str, Progress] = {}
    current: list[str] = [""]
    last_page = [time.monotonic()]  # when the source last gave a page (or a symbol started)

    def show_wait(seconds: float, why: str) -> None:
        waited = time.monotonic() - last_page[0]
        if waited + seconds > give_up_after:
            raise SourceError(f"{source_name}: no history for {waited:.0f} s and the next try is {seconds:.0f} s "
                              f"away, past the bound of {give_up_after:g} s (--give-up-after); last: {why}")
        bar = progress.get(current[0])
        if bar:
            bar.note(f"waiting {seconds:.0f} s ({why[:240]})")

    source = history_source(source_name, symbols, on_wait=show_wait)
    now = now_ms()
    retention = store.Retention()
    window = history_window(interval, int(hours * HOUR_MS), now, retention, source.name,
                            source.history_reach(interval))
    out.write(f"back-filling {span_text(int(hours * HOUR_MS))} of {interval} candles of {', '.join(source.symbols)} "
              f"from {source.name}\n")
    for note in window.notes:
        out.write(f"  {note}\n")
    stored = Stored.read(settings, source.name, source.symbols, window)
    ticks = TickPublisher(settings, origin=kafka.BACKFILL) if window.ticks_from < window.end else None
    candle_publisher = CandlePublisher(settings)
    filled: dict[str, Filled] = {}

    async def publish(candles: list[Candle], points: list[Tick], bar: Progress) -> None:
        if candles:  # delivered before the ticks they are made of
            await asyncio.to_thread(candle_publisher.publish, candles)
        if ticks is not None:
            for tick in points:
                await ticks.publish(tick)
        bar.filled.candles += len(candles)
        bar.filled.points += len(points)

    max_gap = 2 * RESOLUTION_MS.get(source.name, MINUTE_MS)
    with store.database(settings) as db:
        for symbol in source.symbols:
            todo = window_gaps(window, stored.ticks[symbol], stored.candles[symbol], max_gap)
            current[0], last_page[0] = symbol, time.monotonic()
            bar = progress[symbol] = Progress(symbol, sum(g.high - g.low for g in todo), out)
            filled[symbol] = bar.filled
            if not todo:
                bar.note(f"nothing to fill: {_stored(stored, symbol, window)} already stored")
                continue
            done, made = 0, []
            occupied = {t - t % MINUTE_MS for t in stored.ticks[symbol]} | set(stored.candles[symbol])
            for gap in todo:
                covered = gap.low
                rollup = PointRollup(interval, skip=occupied if interval == INTERVALS[0] else ())
                async for page in source.history(symbol, gap.low, gap.high, interval):
                    last_page[0] = time.monotonic()
                    candles, points = (page.candles, page.points) if page.candles is not None else rollup.add(
                        page.points)
                    await publish(candles, points if gap.with_ticks else [], bar)
                    made += candles
                    done += page.covered_until_ms - covered
                    covered = page.covered_until_ms
                    bar.update(done)
                candles, points = rollup.finish()
                await publish(candles, points if gap.with_ticks else [], bar)
                made += candles
            bar.finish()
            await _roll_up(HistoryRollup(symbol, source.name, interval, [(g.low, g.high) for g in todo],
                                         (window.start, window.end), set(stored.candles[symbol]),
                                         stored_candle(db, symbol, source.name), now, _keep_ms(retention)),
                           made, candle_publisher, bar)
    if ticks is not None:
        left = await ticks.drain(60)
        if left or ticks.stats.failed:
            raise DeliveryError(f"{left + ticks.stats.failed} points were not delivered to Kafka; run again to "
                                f"retry")
    if not await asyncio.to_thread(_wait_for_sinks, settings, window.interval, filled):
        out.write("  the sinks have not caught up yet; what was published will land shortly (control status shows "
                  "the lag)\n")
    return filled


async def _roll_up(job: HistoryRollup, made: list[Candle], publisher: CandlePublisher, bar: Progress) -> None:
    """The coarser buckets overlapping what was filled, published after the symbol's own candles."""
    candles = await asyncio.to_thread(job.candles, made)
    if candles:
        await asyncio.to_thread(publisher.publish, candles, origin=kafka.BACKFILL_ROLLUP)
    bar.filled.rolled_up = dict(job.stats.published)
    bar.filled.kept = sum(job.stats.kept.values())
    if candles or bar.filled.kept:
        counts = ", ".join(f"{n:,} {interval}" for interval, n in job.stats.published.items())
        kept = f"; kept {bar.filled.kept:,} stored as they are (they know more than their children)" \
            if bar.filled.kept else ""
        bar.note(f"rolled up {counts or 'nothing'}{kept}")


def summary(filled: dict[str, Filled], interval: str) -> str:
    """The command's last line: what was published, per symbol, and the roll-ups.

    `published 720 points (BTC 360, ETH 360), 720 1m candles and 186 rolled up (5m to 1w)` at 1m;
    `published 730 1d candles (BTC 365, ETH 365) and 106 rolled up (1w)` at a coarser interval."""
    candles = sum(f.candles for f in filled.values())
    rolled = {i: sum(f.rolled_up.get(i, 0) for f in filled.values()) for i in INTERVALS}
    levels = [i for i, n in rolled.items() if n]
    rolled_up = f" and {sum(rolled.values()):,} rolled up ({levels[0]}" + (
        f" to {levels[-1]})" if len(levels) > 1 else ")") if levels else ""
    if interval == INTERVALS[0]:
        each = ", ".join(f"{s} {f.points:,}" for s, f in filled.items())
        return (f"published {sum(f.points for f in filled.values()):,} points ({each}), {candles:,} {interval} candles"
                + (rolled_up or " and nothing rolled up"))
    each = ", ".join(f"{s} {f.candles:,}" for s, f in filled.items())
    return f"published {candles:,} {interval} candles ({each})" + rolled_up


def _keep_ms(retention: store.Retention) -> Callable[[str], int | None]:
    """How long each interval's collection keeps its candles (ms, None: for ever)."""
    return lambda interval: retention.keep_ms(store.candle_collection(interval))


def _stored(stored: Stored, symbol: str, window: Window) -> str:
    candles = f"{len(stored.candles[symbol]):,} {window.interval} candles"
    return f"{len(stored.ticks[symbol]):,} points and {candles}" if window.ticks_from < window.end else candles


def _wait_for_sinks(settings: Settings, interval: str, filled: dict[str, Filled]) -> bool:
    """Wait for the sinks of what was published: the prices sink for ticks, the candles sink for candles."""
    waited = True
    if any(f.points for f in filled.values()):
        waited = wait_for_sink(settings, settings.prices_sink, [settings.prices_topic])
    if any(f.candles or f.rolled_up for f in filled.values()):
        names, level = [], interval
        while level is not None:
            names.append(settings.candle_topic(level))
            level = parent_of(level)
        waited = wait_for_sink(settings, settings.candles_sink, names) and waited
    return waited
