"""Pure cascade arithmetic: candles of one interval in, candles of every coarser interval out. No I/O.

Each interval is rolled up from the one below it (5m from 1m, 15m from 5m, 1h from 15m, 4h from 1h, 1d from 4h,
1w from 1d): a bucket holds at most 7 children, and a child is keyed by its start, so a child that comes again
(an update of an open minute, a replay after a restart) replaces itself. What a bucket says is `aggregate` of its
children: open of the first, close of the last, the highest high, the lowest low, the sum of the ticks, the sum of
the volumes when every child has one (a partial sum would read as a quiet bucket), origin "ohlc" when every child
is an exchange's own candle. That is associative, so every interval equals the same aggregation of the 1-minute
candles it covers, whatever path they took (tested against `aggregate` over the minutes directly).

Closing is driven by event time, per (symbol, source) and interval, as for minutes: a bucket closes when its last
child is final, or when a child of a later bucket has arrived and all of its own are final; then its final candle
goes out at once and feeds the next interval as a final child, and the bucket's end becomes the level's
`closed_until`: a child of a bucket at or before it is late (counted, dropped, as late ticks are). A key that goes
quiet closes a bucket whose children are all final after `idle_close` of the interval's wall clock. Updates of an
open bucket go out at most once per `update_every` of its interval, and feed the next interval as a child that is
not final yet.

State per key is bounded by the intervals (at most a couple of open buckets of at most 7 children each), never by
the days it has run: `state`/`restore` is what the processor checkpoints (docs/rollups.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptopulse.candle import INTERVAL_MS, INTERVALS, Candle, aggregate, bucket_of, parent_of

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (symbol, source)


@dataclass(slots=True)
class Child:
    """What a bucket keeps of one child candle."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    ticks: int
    origin: str
    final: bool

    @classmethod
    def of(cls, candle: Candle) -> Child:
        return cls(candle.start, candle.open, candle.high, candle.low, candle.close, candle.volume, candle.ticks,
                   candle.origin, candle.final)

    def record(self) -> dict[str, Any]:
        return {"start": self.start, "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "volume": self.volume, "ticks": self.ticks, "origin": self.origin, "final": self.final}


@dataclass(slots=True)
class _Bucket:
    start: int
    children: dict[int, Child] = field(default_factory=dict)
    dirty: bool = True
    last_emit: float = float("-inf")

    def all_final(self) -> bool:
        return all(c.final for c in self.children.values())


@dataclass(slots=True)
class _Level:
    """One (key, interval): its open buckets, and the end of the last bucket it closed."""

    open: dict[int, _Bucket] = field(default_factory=dict)
    closed_until: int = -(2**62)


@dataclass(slots=True)
class _Key:
    levels: dict[str, _Level] = field(default_factory=dict)
    last_seen: float = 0.0  # wall clock (monotonic seconds) of its last child


@dataclass
class CascadeStats:
    children: int = 0
    late: int = 0  # children of a bucket closed already (counted, dropped)
    closed: int = 0
    idle_closed: int = 0


def default_update_every(interval: str) -> float:
    """Seconds between two updates of an open bucket: a second for 5 minutes, a minute for an hour and above."""
    return min(60.0, INTERVAL_MS[interval] / 300_000)


class CascadeBook:
    """The open buckets of every coarser interval, per (symbol, source); says which candles to publish.

    `add(candle, now)` a child (a candle of any interval but the coarsest), then `poll(now)` for what to publish:
    finals at once, updates of open buckets at most once per `update_every(interval)` seconds. `now` is a monotonic
    wall clock in seconds, passed in so that tests control it.
    """

    def __init__(self, update_every: Any = default_update_every, idle_close: Any = None) -> None:
        self.update_every = update_every
        # a quiet key's bucket (all its children final) closes after its interval's width of wall clock, + 30 s
        self.idle_close = idle_close or (lambda interval: INTERVAL_MS[interval] / 1000 + 30)
        self.stats = CascadeStats()
        self.changed: set[Key] = set()  # keys whose state changed since `take_changed`
        self._keys: dict[Key, _Key] = {}
        self._out: list[Candle] = []

    # --- input ---

    def add(self, candle: Candle, now: float = 0.0) -> bool:
        """Apply one child; False when it is late (its bucket closed already) or has no coarser interval."""
        parent = parent_of(candle.interval)
        if parent is None:
            return False
        key = (candle.symbol, candle.source)
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        state.last_seen = now
        return self._add(key, state, parent, Child.of(candle), now)

    def is_late(self, candle: Candle) -> bool:
        """Whether `add` would drop this child: the bucket it belongs to closed already."""
        parent = parent_of(candle.interval)
        state = self._keys.get((candle.symbol, candle.source))
        if parent is None or state is None or parent not in state.levels:
            return False
        return bucket_of(candle.start, parent) + INTERVAL_MS[parent] <= state.levels[parent].closed_until

    def _add(self, key: Key, state: _Key, interval: str, child: Child, now: float) -> bool:
        level = state.levels.get(interval)
        if level is None:
            level = state.levels[interval] = _Level()
        start = bucket_of(child.start, interval)
        end = start + INTERVAL_MS[interval]
        if end <= level.closed_until:
            self.stats.late += 1
            return False
        self.stats.children += 1
        self.changed.add(key)
        bucket = level.open.get(start)
        if bucket is None:
            bucket = level.open[start] = _Bucket(start)
        known = bucket.children.get(child.start)
        if known != child:
            bucket.children[child.start] = child
            bucket.dirty = True
        child_end = child.start + (end - start) // _ratio(interval)
        last_final = child.final and child_end >= end
        for other in sorted(level.open):  # oldest first: a bucket closes only after the ones before it
            due = level.open[other]
            if (other == start and last_final and due.all_final()) or (other < start and due.all_final()):
                self._close(key, state, interval, level, due, now)
        return True

    # --- output ---

    def poll(self, now: float) -> list[Candle]:
        """What to publish now: finals (quiet keys' buckets closed first), then due updates of open buckets."""
        for key, state in list(self._keys.items()):
            for interval in INTERVALS:
                level = state.levels.get(interval)
                if level is None or not level.open:
                    continue
                if now - state.last_seen >= self.idle_close(interval):
                    for start in sorted(level.open):
                        bucket = level.open.get(start)
                        if bucket is not None and bucket.all_final():
                            self.stats.idle_closed += 1
                            self._close(key, state, interval, level, bucket, now)
                every = self.update_every(interval)
                for bucket in list(level.open.values()):
                    if bucket.dirty and now - bucket.last_emit >= every:
                        bucket.dirty, bucket.last_emit = False, now
                        update = aggregate(*key, interval, bucket.start, bucket.children.values(), final=False)
                        self._out.append(update)
                        self._feed(key, state, interval, update, now)
        out, self._out = self._out, []
        return out

    def close_all(self, now: float = 0.0) -> list[Candle]:
        """Close every open bucket whose children are all final, finest first (the end of a bounded run)."""
        for key, state in list(self._keys.items()):
            for interval in INTERVALS:
                level = state.levels.get(interval)
                while level is not None and level.open:
                    bucket = level.open[min(level.open)]
                    if not bucket.all_final():
                        break
                    self._close(key, state, interval, level, bucket, now)
        out, self._out = self._out, []
        return out

    def _close(self, key: Key, state: _Key, interval: str, level: _Level, bucket: _Bucket, now: float) -> None:
        del level.open[bucket.start]
        level.closed_until = max(level.closed_until, bucket.start + INTERVAL_MS[interval])
        final = aggregate(*key, interval, bucket.start, bucket.children.values(), final=True)
        self.stats.closed += 1
        self.changed.add(key)
        self._out.append(final)
        self._feed(key, state, interval, final, now)

    def _feed(self, key: Key, state: _Key, interval: str, candle: Candle, now: float) -> None:
        parent = parent_of(interval)
        if parent is not None:
            self._add(key, state, parent, Child.of(candle), now)

    # --- state, for checkpoints ---

    def keys(self) -> list[Key]:
        return list(self._keys)

    def take_changed(self) -> set[Key]:
        changed, self.changed = self.changed, set()
        return changed

    def state(self, key: Key) -> dict[str, Any]:
        """One key's state as a record (schemas/candle_state.avsc's `levels`)."""
        state = self._keys.get(key) or _Key()
        return {"levels": [{"interval": interval, "closed_until": level.closed_until,
                            "buckets": [{"start": b.start, "children": [c.record() for c in b.children.values()]}
                                        for b in level.open.values()]}
                           for interval, level in state.levels.items()]}

    def restore(self, key: Key, record: dict[str, Any], now: float = 0.0) -> None:
        """Start a key from a checkpoint (`state`); its buckets are published again at the next poll."""
        state = self._keys[key] = _Key(last_seen=now)
        for entry in record["levels"]:
            level = state.levels[entry["interval"]] = _Level(closed_until=entry["closed_until"])
            for b in entry["buckets"]:
                level.open[b["start"]] = _Bucket(b["start"], {c["start"]: Child(**c) for c in b["children"]})

    def forget(self, keys: Iterable[Key]) -> None:
        """Drop keys (their partition went to another process, which restores them from the checkpoint)."""
        for key in keys:
            self._keys.pop(key, None)
            self.changed.discard(key)


def _ratio(interval: str) -> int:
    """How many children a bucket of `interval` has at most."""
    child = INTERVALS[INTERVALS.index(interval) - 1]
    return INTERVAL_MS[interval] // INTERVAL_MS[child]
