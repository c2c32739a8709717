"""A back-fill's coarser candles: every bucket of every interval above the back-fill's own that overlaps a gap it
filled, rolled up from its children. Pure: what is stored comes through a `Lookup`.

The cascade (streams/cascade.py) rolls a back-fill's candles up only into buckets it still has open; a bucket it
closed already would keep saying what it said before the gap was filled. So the back-fill rolls those up itself
(published with the header BACKFILL_ROLLUP, which the cascade leaves alone), level by level, finest first:

- a child inside a filled gap is what the back-fill just made at the level below (its base candles, or its own
  roll-ups); a base bucket of the gap that the history had nothing for has no child;
- a child outside the gaps is read from the store by its `_id` (one `Lookup`), so a bucket straddling the edge of
  a gap is the aggregate of the stored children and the new ones: each interval stays equal to the aggregation of
  what is stored below it.

Where the store knows more than the children say, a stored edge bucket is kept as it is (and is the child the next
interval up uses): when its children may have been deleted by their collection's retention (the bucket starts
before the children's retention horizon), and when nothing under it outside the gaps is stored, at any level below
(it came from a back-fill at a coarser interval, say a year of exchange days before a month of hours that starts
mid-day). A bucket entirely inside the gaps is always rolled up from the new children.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptopulse.candle import INTERVAL_MS, Candle, aggregate, bucket_at_or_after, buckets_over, child_of, parent_of

Lookup = Callable[[str, int], Candle | None]  # (interval, bucket start) -> the stored candle of the symbol, or None


class Spans:
    """The filled gaps as whole buckets of the base interval: [from, to) spans, merged and sorted. A bucket is
    filled when its start is in a gap, as the history's pages keep a candle whose start is in the window asked."""

    def __init__(self, gaps: Iterable[tuple[int, int]], base: str) -> None:
        merged: list[tuple[int, int]] = []
        for low, high in sorted((bucket_at_or_after(a, base), bucket_at_or_after(b, base)) for a, b in gaps):
            if low >= high:
                continue
            if merged and low <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        self.spans = merged
        self._lows = [low for low, _ in merged]
        self._highs = [high for _, high in merged]

    def __bool__(self) -> bool:
        return bool(self.spans)

    def buckets(self, interval: str) -> list[int]:
        """The starts of the `interval` buckets overlapping a span, oldest first."""
        return sorted({b for low, high in self.spans for b in buckets_over(low, high, interval)})

    def cover(self, start: int, end: int) -> bool:
        """Whether [start, end) lies inside one span."""
        i = bisect_right(self._lows, start) - 1
        return i >= 0 and end <= self._highs[i]

    def overlap(self, start: int, end: int) -> bool:
        """Whether [start, end) overlaps a span."""
        i = bisect_right(self._highs, start)
        return i < len(self.spans) and self._lows[i] < end


@dataclass(frozen=True, slots=True)
class _Made:
    """A bucket's candle as the level above sees it: whether stored data is under it, whether it is the stored one
    kept as it is."""

    candle: Candle
    stored: bool
    kept: bool


@dataclass
class RollupStats:
    published: dict[str, int] = field(default_factory=dict)  # candles rolled up, per interval
    kept: dict[str, int] = field(default_factory=dict)  # stored edge buckets kept as they are, per interval
    lookups: int = 0  # stored candles read by `_id`


@dataclass
class HistoryRollup:
    """The coarser candles of one (symbol, source) after a back-fill at `base` filled `gaps` within `window`.

    `stored_base` holds the base bucket starts the store had in the window before the back-fill (its one pass over
    the base collection); `lookup` reads one stored candle; `keep_ms(interval)` is how long that interval's
    collection keeps its candles (None: for ever); `now_ms` decides which buckets are final (ended already).
    """

    symbol: str
    source: str
    base: str
    gaps: list[tuple[int, int]]
    window: tuple[int, int]
    stored_base: set[int]
    lookup: Lookup
    now_ms: int
    keep_ms: Callable[[str], int | None] = lambda interval: None
    stats: RollupStats = field(default_factory=RollupStats)

    def candles(self, base_candles: Iterable[Candle]) -> list[Candle]:
        """Every coarser bucket overlapping the gaps, rolled up, finest interval first; kept buckets are not in it."""
        spans = Spans(self.gaps, self.base)
        # a new base candle stands for stored data where it replaces a stored one (at 1m, a minute of a tick gap
        # may have kept its candle)
        below = {c.start: _Made(c, stored=c.start in self.stored_base, kept=False) for c in base_candles}
        level, out = parent_of(self.base), []
        while level is not None and spans:
            made: dict[int, _Made] = {}
            for start in spans.buckets(level):
                bucket = self._bucket(level, start, below, spans)
                if bucket is not None:
                    made[start] = bucket
                    if not bucket.kept:
                        out.append(bucket.candle)
            below, level = made, parent_of(level)
        return out

    def _bucket(self, level: str, start: int, below: dict[int, _Made], spans: Spans) -> _Made | None:
        """The bucket's candle: rolled up, or the stored one kept as it is; None when nothing is in it."""
        child, end = child_of(level), start + INTERVAL_MS[level]
        assert child is not None
        children, stored = [], False  # stored: whether anything under it outside the gaps is in the store
        for c in buckets_over(start, end, child):
            if c in below:
                children.append(below[c].candle)
                stored = stored or below[c].stored
            elif not self._known_empty(child, c, spans):
                found = self._read(child, c)
                if found is not None:
                    children.append(found)
                    stored = True
        if not spans.cover(start, end):
            kept = self._read(level, start)
            if kept is not None and (not stored or self._children_may_have_expired(child, start)):
                self.stats.kept[level] = self.stats.kept.get(level, 0) + 1
                return _Made(kept, stored=True, kept=True)
        if not children:
            return None
        self.stats.published[level] = self.stats.published.get(level, 0) + 1
        candle = aggregate(self.symbol, self.source, level, start, children, final=end <= self.now_ms)
        return _Made(candle, stored, kept=False)

    def _known_empty(self, interval: str, start: int, spans: Spans) -> bool:
        """Whether a child bucket holds nothing, known without reading the store: a base bucket of the window that
        the store did not hold (nor the history give), or a coarser one overlapping the gaps that came out of the
        level below with nothing in it."""
        if interval == self.base:
            return self.window[0] <= start < self.window[1] and start not in self.stored_base
        return spans.overlap(start, start + INTERVAL_MS[interval])

    def _children_may_have_expired(self, child: str, start: int) -> bool:
        keep = self.keep_ms(child)
        return keep is not None and start < self.now_ms - keep

    def _read(self, interval: str, start: int) -> Candle | None:
        self.stats.lookups += 1
        return self.lookup(interval, start)
