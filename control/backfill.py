"""`control backfill`: fill the gaps of the last N hours in MongoDB from a source's history API.

History goes through the same path as live ticks: Avro on the prices topic, persisted by
the sink connector (one write path). What MongoDB already holds decides what is fetched:
only gaps longer than twice the source's history resolution are asked for, so a second
run adds nothing and a crashed run resumes where the store stops. Tick ids are derived
from (symbol, source, time), so anything published twice replaces itself.

The window ends at the last whole minute, so runs a few seconds apart see the same grid.

A source that does not answer is waited for (each wait shown on its symbol's line, with why) for at most
`give_up_after` seconds without a page; then the back-fill stops with the last cause (a SourceError).

The history's candles go to the candles topic too, delivered before the ticks they are made of, so the
stream processor finds those minutes decided: OHLC history (Binance klines, Coinbase candles, the
simulated market's) as origin "ohlc"; a point history (CoinGecko) rolled up here, for minutes MongoDB holds nothing for
(streams/history.py says why).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from cryptopulse import kafka, store, topics
from cryptopulse.errors import DeliveryError, SourceError
from cryptopulse.settings import Settings, sink_group
from cryptopulse.times import MINUTE_MS, epoch_ms
from producer.publisher import TickPublisher
from producer.sources.history import history_source
from streams.history import CandlePublisher, PointRollup

if TYPE_CHECKING:
    from cryptopulse.candle import Candle
    from cryptopulse.tick import Tick

# Spacing of each source's history points: a gap is more than twice that.
RESOLUTION_MS = {"simulated": MINUTE_MS, "coingecko": 5 * MINUTE_MS, "binance": MINUTE_MS, "coinbase": MINUTE_MS}
# How long a back-fill waits for a source without getting a page before it gives up (`--give-up-after`).
GIVE_UP_AFTER = 300.0


def gaps(times: list[int], start: int, end: int, max_gap: int) -> list[tuple[int, int]]:
    """The parts of [start, end) farther than `max_gap` from any of the sorted `times`, as [from, to) windows."""
    found, previous = [], start - 1
    for t in [*times, end]:
        if t - previous > max_gap:
            found.append((previous + 1, t))
        previous = t
    return found


def stored_times(settings: Settings, source: str, symbols: list[str], start: int, end: int,
                 collection: str = store.PRICES, field: str = "ts") -> dict[str, list[int]]:
    """Times (epoch ms) MongoDB holds per symbol for `source` in [start, end): one pass over the range.

    Tick times by default; `collection="candles_1m", field="start"` gives the minutes that have a candle.
    """
    times: dict[str, list[int]] = {s: [] for s in symbols}
    with store.database(settings) as db:
        window = {"$gte": datetime.fromtimestamp(start / 1000, UTC), "$lt": datetime.fromtimestamp(end / 1000, UTC)}
        query = {"source": source, "symbol": {"$in": symbols}, field: window}
        for doc in db[collection].find(query, {"_id": 0, "symbol": 1, field: 1}):
            times[doc["symbol"]].append(epoch_ms(doc[field]))
    return {s: sorted(t) for s, t in times.items()}


@dataclass
class Progress:
    """One line per symbol: a bar over the time to fill, redrawn in place on a terminal."""

    symbol: str
    total_ms: int
    out: TextIO = field(default_factory=lambda: sys.stderr)
    done_ms: int = 0
    points: int = 0
    _last_percent: int = -1

    def update(self, done_ms: int, points: int) -> None:
        self.done_ms, self.points = done_ms, points
        percent = 100 if not self.total_ms else int(100 * done_ms / self.total_ms)
        if self.out.isatty():
            bar = "#" * (percent // 4) + "." * (25 - percent // 4)
            self.out.write(f"\r  {self.symbol:6} [{bar}] {percent:3d}%  {points:,} points")
        elif percent // 25 != self._last_percent // 25:  # a log gets a line per quarter
            self.out.write(f"  {self.symbol:6} {percent:3d}%  {points:,} points\n")
        self._last_percent = percent
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(("\n" if self.out.isatty() else "") + f"  {self.symbol:6} {text}\n")
        self.out.flush()

    def finish(self) -> None:
        self.update(self.total_ms, self.points)
        if self.out.isatty():
            self.out.write("\n")


def wait_for_sink(settings: Settings, timeout: float = 300) -> bool:
    """Wait until the sink connector has committed past everything on the prices topic."""
    deadline = time.monotonic() + timeout
    ends = topics.end_offsets_by_partition(settings, settings.prices_topic)
    while time.monotonic() < deadline:
        committed = topics.committed_offsets(settings, sink_group(settings.prices_sink), settings.prices_topic,
                                             list(ends))
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return True
        time.sleep(1)
    return False


async def backfill(settings: Settings, source_name: str, symbols: list[str], hours: float,
                   out: TextIO = sys.stderr, give_up_after: float = GIVE_UP_AFTER) -> dict[str, int]:
    """Fill the gaps of the last `hours`; returns the points published per symbol.

    Raises SourceError when the source has given no page for `give_up_after` seconds (or its next wait would
    end past that), with the last reason it gave."""
    end = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    start = end - int(hours * 3_600_000)
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
    existing = stored_times(settings, source.name, source.symbols, start, end)
    with_candles = stored_times(settings, source.name, source.symbols, start, end, store.CANDLES, "start")
    publisher, candle_publisher = TickPublisher(settings, origin=kafka.BACKFILL), CandlePublisher(settings)
    published: dict[str, int] = {}

    async def publish(candles: list[Candle], points: list[Tick], bar: Progress) -> None:
        if candles:  # delivered before the ticks they are made of
            await asyncio.to_thread(candle_publisher.publish, candles)
        for tick in points:
            await publisher.publish(tick)
        bar.points += len(points)
    max_gap = 2 * RESOLUTION_MS.get(source.name, MINUTE_MS)
    for symbol in source.symbols:
        todo = gaps(existing[symbol], start, end, max_gap)
        current[0], last_page[0] = symbol, time.monotonic()
        bar = progress[symbol] = Progress(symbol, sum(b - a for a, b in todo), out)
        if not todo:
            bar.note(f"nothing to fill: {len(existing[symbol]):,} points already stored")
            published[symbol] = 0
            continue
        done = 0
        occupied = {t - t % MINUTE_MS for t in existing[symbol]} | set(with_candles[symbol])
        for low, high in todo:
            covered = low
            rollup = PointRollup(skip=occupied)
            async for page in source.history(symbol, low, high):
                last_page[0] = time.monotonic()
                if page.candles is not None:
                    await publish(page.candles, page.points, bar)
                else:
                    await publish(*rollup.add(page.points), bar)
                done += page.covered_until_ms - covered
                covered = page.covered_until_ms
                bar.update(done, bar.points)
            await publish(*rollup.finish(), bar)
        bar.finish()
        published[symbol] = bar.points
    left = await publisher.drain(60)
    if left or publisher.stats.failed:
        raise DeliveryError(f"{left + publisher.stats.failed} points were not delivered to Kafka; run again to retry")
    if sum(published.values()) and not await asyncio.to_thread(wait_for_sink, settings):
        out.write("  the sink has not caught up yet; the points will land shortly (control status shows the lag)\n")
    return published
