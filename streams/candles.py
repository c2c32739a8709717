"""Pure candle arithmetic: ticks in, 1-minute candles out. No I/O, so it is unit tested alone.

Closing is driven by event time, per (symbol, source): each key's watermark is the newest tick time
it has seen minus the grace period, and a minute closes once the watermark passes its end. Watermarks
are per key because the prices topic mixes live ticks with back-fills and test data of other epochs:
one global clock would make every past-window tick late. A key that goes quiet is closed by a
wall-clock idle timeout instead, so its last minute does not stay open for ever.

The book is deterministic in the ticks it is fed (the wall clock only decides *when* updates are
emitted, never their content), so a processor restarted mid-minute that replays the same ticks from
the first tick of its oldest open candle produces the same candles again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from cryptopulse.candle import Candle
from cryptopulse.times import MINUTE_MS, bucket_start

log = logging.getLogger(__name__)



@dataclass(slots=True)
class _Open:
    """An open candle: every tick time's price (a repeated time replaces its price, as the sink does for
    the tick's `_id`), the running aggregates, and the first Kafka position it depends on."""

    symbol: str
    source: str
    start: int
    prices: dict[int, float]
    first_ts: int
    last_ts: int
    high: float
    low: float
    first_offset: tuple[int, int] | None  # (partition, offset) of its first tick, for replay after a restart
    dirty: bool = True
    last_emit: float = float("-inf")

    def add(self, ts: int, price: float) -> None:
        replaced = ts in self.prices
        self.prices[ts] = price
        if replaced:  # rare: recompute, since the replaced price may have been the high or the low
            self.high, self.low = max(self.prices.values()), min(self.prices.values())
        else:
            self.high, self.low = max(self.high, price), min(self.low, price)
        self.first_ts, self.last_ts = min(self.first_ts, ts), max(self.last_ts, ts)
        self.dirty = True

    def candle(self, final: bool) -> Candle:
        return Candle(self.symbol, self.source, self.start, self.prices[self.first_ts], self.high, self.low,
                      self.prices[self.last_ts], len(self.prices), final=final)


@dataclass(slots=True)
class _Key:
    """Per (symbol, source): its open minutes (usually one, two while the previous is in its grace period)."""

    max_ts: int
    open: dict[int, _Open] = field(default_factory=dict)
    closed_until: int = -(2**62)  # every minute ending at or before this is closed: ticks in it are late
    last_seen: float = 0.0  # wall clock (monotonic seconds) of its last tick
    partition: int | None = None  # the Kafka partition of its latest tick (key = symbol: normally always the same)


@dataclass
class BookStats:
    ticks: int = 0
    late: int = 0
    closed: int = 0
    idle_closed: int = 0
    rejected: int = 0  # prices that are not finite numbers (a foreign producer's NaN): never rolled up


class CandleBook:
    """Keeps the open candles per (symbol, source) and says which updates and final candles to publish.

    `add` a tick, then `poll(now)` for what to publish: final candles of closed minutes (always, at once)
    and updates of open ones (at most one per `update_every` seconds each). `now` is a monotonic wall
    clock in seconds, passed in so that tests control it.
    """

    def __init__(self, grace_ms: int = 10_000, update_every: float = 1.0, idle_close: float = 30.0,
                 interval_ms: int = MINUTE_MS) -> None:
        self.grace_ms = grace_ms
        self.update_every = update_every
        self.idle_close = idle_close
        self.interval_ms = interval_ms
        self.stats = BookStats()
        self._keys: dict[tuple[str, str], _Key] = {}
        self._finals: list[Candle] = []

    def watermark(self, symbol: str, source: str) -> int | None:
        key = self._keys.get((symbol, source))
        return None if key is None else max(key.max_ts - self.grace_ms, key.closed_until)

    def is_late(self, symbol: str, source: str, ts: int) -> bool:
        """Whether `add` would drop this tick: its minute closed already."""
        watermark = self.watermark(symbol, source)
        return watermark is not None and bucket_start(ts, self.interval_ms) + self.interval_ms <= watermark

    def observe(self, symbol: str, source: str, ts: int, now: float = 0.0,
                position: tuple[int, int] | None = None) -> None:
        """Advance the key's event time without touching any candle (a tick for a candle decided elsewhere)."""
        key = self._key(symbol, source, ts, now, position)
        if ts > key.max_ts:
            key.max_ts = ts
            self._close_due(key)

    def add(self, symbol: str, source: str, ts: int, price: float, now: float = 0.0,
            position: tuple[int, int] | None = None) -> bool:
        """Apply one tick; False (counted, logged) when it is late: its minute closed already, or when its price
        is NaN or infinite (a record no producer of ours publishes: a candle made of it would be unreadable)."""
        if not math.isfinite(price):
            self.stats.rejected += 1
            if self.stats.rejected == 1 or self.stats.rejected % 1000 == 0:
                log.warning("tick with price %r dropped (%d so far): %s %s ts=%d", price, self.stats.rejected,
                            symbol, source, ts)
            return False
        key = self._key(symbol, source, ts, now, position)
        self.stats.ticks += 1
        start = bucket_start(ts, self.interval_ms)
        if self.is_late(symbol, source, ts):
            self.stats.late += 1
            if self.stats.late == 1 or self.stats.late % 1000 == 0:
                log.warning("late tick dropped (%d so far): %s %s ts=%d, its minute closed (watermark %d)",
                            self.stats.late, symbol, source, ts, max(key.max_ts - self.grace_ms, key.closed_until))
            return False
        candle = key.open.get(start)
        if candle is None:
            key.open[start] = _Open(symbol, source, start, {ts: price}, ts, ts, price, price, position)
        else:
            candle.add(ts, price)
        if ts > key.max_ts:
            key.max_ts = ts
            self._close_due(key)
        return True

    def poll(self, now: float) -> list[Candle]:
        """What to publish now: finals of closed minutes (idle keys closed first), then due updates."""
        out, self._finals = self._finals, []
        for key in self._keys.values():
            if key.open and now - key.last_seen >= self.idle_close:
                self.stats.idle_closed += len(key.open)
                self._close(key, max(key.open) + self.interval_ms, out)
            for candle in key.open.values():
                if candle.dirty and now - candle.last_emit >= self.update_every:
                    candle.dirty, candle.last_emit = False, now
                    out.append(candle.candle(final=False))
        return out

    def close_all(self) -> list[Candle]:
        """Close every open minute now (an explicit flush, e.g. at the end of a bounded run)."""
        out, self._finals = self._finals, []
        for key in self._keys.values():
            if key.open:
                self._close(key, max(key.open) + self.interval_ms, out)
        return out

    def open_candles(self) -> list[Candle]:
        return [c.candle(final=False) for key in self._keys.values() for c in key.open.values()]

    def replay_from(self) -> dict[int, int]:
        """{partition: offset of the first tick of its oldest open candle}: where a restart must read from."""
        first: dict[int, int] = {}
        for key in self._keys.values():
            for candle in key.open.values():
                if candle.first_offset is not None:
                    partition, offset = candle.first_offset
                    first[partition] = min(offset, first.get(partition, offset))
        return first

    def event_times(self, partition: int) -> dict[tuple[str, str], tuple[int, int]]:
        """{(symbol, source): (newest tick time, end of its last closed minute)} of the keys whose latest tick came
        from `partition`: committed with the partition's replay point, so that a replay starts from them (`restore`)."""
        return {k: (key.max_ts, key.closed_until) for k, key in self._keys.items() if key.partition == partition}

    def restore(self, times: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Start keys at the event time a commit recorded (`event_times`), with no candle open.

        A replay from the commit re-reads ticks that were read before the commit was made. With the key's event
        time as it was then, each is on time or late exactly as it was the first time: the candles open then are
        rebuilt from the same ticks, and a tick that was late is late again (a fresh key would take it). Later
        ticks then continue from the same state as before."""
        for (symbol, source), (max_ts, closed_until) in times.items():
            key = self._keys.setdefault((symbol, source), _Key(max_ts=max_ts))
            key.max_ts, key.closed_until = max(key.max_ts, max_ts), max(key.closed_until, closed_until)

    def _key(self, symbol: str, source: str, ts: int, now: float, position: tuple[int, int] | None = None) -> _Key:
        key = self._keys.get((symbol, source))
        if key is None:
            key = self._keys[(symbol, source)] = _Key(max_ts=ts)
        key.last_seen = now
        if position is not None:
            key.partition = position[0]
        return key

    def _close_due(self, key: _Key) -> None:
        watermark = key.max_ts - self.grace_ms
        if any(start + self.interval_ms <= watermark for start in key.open):
            self._close(key, watermark, self._finals)

    def _close(self, key: _Key, until: int, out: list[Candle]) -> None:
        """Close the key's minutes that end at or before `until`, oldest first; remember that they are closed."""
        for start in sorted(s for s in key.open if s + self.interval_ms <= until):
            out.append(key.open.pop(start).candle(final=True))
            self.stats.closed += 1
            key.closed_until = max(key.closed_until, start + self.interval_ms)
