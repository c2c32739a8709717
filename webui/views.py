"""Recent history held in memory: one table per timeframe, loaded from its topic and kept by it.

FerretDB answers a range query by scanning the whole collection (~30-100 us a document): a chart read from it takes
seconds on a full store, and a chart must answer in well under 150 ms. So the app keeps, for each interval, the
window its charts need, and the last 65 minutes of ticks, in memory: each a table kept by its topic, as a Kafka
Streams table is. A view reads its topic from the first record published within its window (`offsets_at(now -
keep - margin)`: every record of a bucket is published after the bucket began, and every topic keeps at least as
long as its view), to the topic's end as of then (the view is ready), and follows it, replacing by time as the sink
replaces by `_id`. Loading costs the window, never the store or the days run; a candle older than the window is
recognised by its key (symbol|source|interval|start) and skipped without being decoded, which is what a back-fill
published all at once costs. MongoDB is read only for what is older than a view (webui/history.py).

Loading is what a fresh dashboard waits for, so it costs as little as it can: a candle is filed under its key's
(symbol, source, start) with its value undecoded, and decoded the first time a window asks for it (a chart decodes its
own ~2,000 bars, not the view's 100,000); and the views load one at a time, the page's default chart first
(`LOAD_ORDER`): under the GIL, views loading side by side each take about as long as all of them together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

from cryptopulse import kafka
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import INTERVAL_MS, INTERVALS, bucket_of
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import BEGINNING, Follower, KafkaWatch, Reader, Unavailable
from cryptopulse.outage import Backoff
from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, HOUR_MS, MINUTE_MS, epoch_ms
from webui.health import Dependencies, plain
from webui.series import CandleRow, TickRow, sound_candle, sound_tick

log = logging.getLogger(__name__)

# How long each view holds its rows: the longest range its interval is drawn for (webui/timeframes.py), plus the
# indicators' warm-up of 50 bars, plus a margin; None: all the topic keeps (the intervals kept for ever).
KEEP_MS: dict[str, int | None] = {"1m": 26 * HOUR_MS, "5m": 8 * DAY_MS, "15m": 32 * DAY_MS, "1h": 93 * DAY_MS,
                                  "4h": 375 * DAY_MS, "1d": None, "1w": None}
TICKS_KEEP_MS = 65 * MINUTE_MS  # the 1 h chart and its 5 s bars
# Records published up to this long before the window are read too: a producer whose clock runs ahead of the
# broker's stamps its records early.
START_MARGIN_MS = 10 * MINUTE_MS
# The memory bound: a view sized for this many (symbol, source) pairs (100 coins of two sources), its window of
# rows each, "all" as 20 years; past it the view stops answering (the store does) rather than grow.
VIEW_KEYS = 200
ALL_SPAN_MS = 20 * 365 * DAY_MS
TICKS_MAX_ROWS = 2_000_000
CATCH_UP_SECONDS = 120.0  # reading to the end within this, or the load goes on after a backoff from where it was
# While loading, records are taken 10,000 at a time and fetched 8 MiB at a time per partition (librdkafka's defaults,
# 1 MiB, cost a round trip per ~7,000 candles): measured on 259,200 1m candles (60 days of 3 coins published at once),
# loading took 1.33 s with the defaults (and 1,000 a batch), 0.81-0.89 s with these (alone, this 2-core machine).
LOAD_BATCH = 10_000
VIEW_CONSUMER = {"fetch.wait.max.ms": 100, "max.partition.fetch.bytes": 8 * 2**20}
# Which view loads first: the daily and weekly ones (small: a row a day or a week per coin; every past window and page
# asks them where a coin's history begins), then the landing page's (the markets overview: every coin's last 24 h of
# 1m, as the 24 h chart), the 7 d chart's, the chart page's opening hour of ticks (which decodes every tick it reads:
# a tick's key holds no time), 30 d and 90 d, then the others. A view waits for those ahead of it to have tried once,
# at most TURN_WAIT_SECONDS (a view that cannot load holds nobody up for longer).
LOAD_ORDER = ("1d", "1w", "1m", "5m", "ticks", "1h", "15m", "4h")
TURN_WAIT_SECONDS = 30.0


def candle_row(doc: dict[str, Any]) -> CandleRow:
    """A stored or decoded candle as the chart needs it."""
    return CandleRow(epoch_ms(doc["start"]), doc["open"], doc["high"], doc["low"], doc["close"], doc.get("volume"))


def tick_row(doc: dict[str, Any]) -> TickRow:
    """A stored or decoded tick as the chart needs it."""
    return TickRow(epoch_ms(doc["ts"]), doc["price"], doc.get("volume_24h"))


@dataclass(frozen=True)
class ViewSpec:
    """What one view holds: which topic and schema, for how long, and at most how many rows."""

    name: str  # "ticks", or the candles' interval
    topic: str
    schema: str
    keep_ms: int | None  # None: everything its topic keeps
    row: Callable[[dict[str, Any]], CandleRow | TickRow]
    max_rows: int  # past this many rows the view stops answering (MongoDB does) rather than grow without bound
    interval: str | None = None  # candles: one row per bucket of this interval, so a window is read by probing


def candle_spec(settings: Settings, interval: str) -> ViewSpec:
    keep = KEEP_MS[interval]
    rows_per_key = -(-(keep or ALL_SPAN_MS) // INTERVAL_MS[interval])
    return ViewSpec(interval, settings.candle_topic(interval), "candle", keep, candle_row, rows_per_key * VIEW_KEYS,
                    interval)


def tick_spec(settings: Settings) -> ViewSpec:
    return ViewSpec("ticks", settings.prices_topic, "tick", TICKS_KEEP_MS, tick_row, TICKS_MAX_ROWS)


def all_specs(settings: Settings) -> list[ViewSpec]:
    """The ticks view and one view per interval."""
    return [tick_spec(settings), *(candle_spec(settings, interval) for interval in INTERVALS)]


def time_of(row: CandleRow | TickRow) -> int:
    return row.start if isinstance(row, CandleRow) else row.ts


def candle_key(key: bytes | None) -> tuple[str, str, str, int] | None:
    """(symbol, source, interval, start) as a candle's key names them (its `_id`), None for another key."""
    parts = key.split(b"|") if key else ()
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    try:
        return parts[0].decode(), parts[1].decode(), parts[2].decode(), int(parts[3])
    except UnicodeDecodeError:
        return None


class LoadTurns:
    """The views' turns to load (LOAD_ORDER): `wait` until each view ahead has had its first try, `done` after one's."""

    def __init__(self, names: list[str]) -> None:
        self._names = sorted(names, key=lambda n: LOAD_ORDER.index(n) if n in LOAD_ORDER else len(LOAD_ORDER))
        self._tried: set[str] = set()
        self._changed = threading.Condition()

    def wait(self, name: str, stopping: threading.Event, timeout: float = TURN_WAIT_SECONDS) -> None:
        ahead = set(self._names[:self._names.index(name)]) if name in self._names else set(self._names)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ahead <= self._tried and not stopping.is_set() and time.monotonic() < deadline:
                self._changed.wait(0.1)

    def done(self, name: str) -> None:
        with self._changed:
            self._tried.add(name)
            self._changed.notify_all()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class WindowView:
    """{(symbol, source): {time: row}} for the last `spec.keep_ms` (or all), loaded from its topic and kept by it."""

    settings: Settings
    spec: ViewSpec
    ready: threading.Event = field(default_factory=threading.Event)
    read: int = 0  # records applied (while loading, then following)
    skipped: int = 0  # candles older than the window, skipped by their key without being decoded
    load_seconds: float | None = None  # from the first try to ready
    full: bool = False  # more rows than spec.max_rows: no longer answering
    aligned: bool = True  # every row starts a bucket of spec.interval (a foreign candle may not)
    last_error: str | None = None
    deps: Dependencies = field(default_factory=Dependencies)  # the app's, to report outages to
    backoff_cap: float = 30.0
    make_consumer: Callable[[dict[str, Any]], Any] | None = None  # tests pass fakes
    make_codec: Callable[[], Any] | None = None
    turns: LoadTurns | None = None  # the app's views load one at a time
    # {(symbol, source): {time: row}}; in a candle view a row not yet asked for is its record's undecoded value
    _rows: dict[tuple[str, str], dict[int, Any]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _codec: Any = None
    _last_trim: float = field(default_factory=time.monotonic)
    _started: float | None = None
    # candles starting before this are skipped by their key: the floor, refreshed with each trim (a little behind
    # it at most: what it lets through, `put` drops)
    _cutoff: int | None = None
    # a key's "symbol|source|interval" -> (symbol, source), or () for another interval's
    _names: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    _sample: Any = None  # an undecoded value, to fetch its writer schema with before the view is ready

    def __post_init__(self) -> None:
        who = self._who
        cap = self.backoff_cap
        self.watch = KafkaWatch(self.deps.kafka.reporter(who), backoff=Backoff(min(0.5, cap), min(10.0, cap)))
        self.reader: Reader[tuple[str, str, Any]] = Reader(
            self.settings, "webui", [self.spec.topic], self._decode, group=f"cryptopulse-webui-view-{id(self)}",
            start={}, watch=self.watch, registry=self.deps.registry.reporter(who), make_consumer=self.make_consumer,
            config=VIEW_CONSUMER)
        self._follower = Follower(f"webui-view-{self.spec.name}", self.reader, self._apply_all, prepare=self._start,
                                  turn=self._turn, backoff_cap=cap, logger=log)

    def start(self) -> None:
        self._follower.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._follower.alive:  # a view filled by hand (a benchmark) was never started
            self._follower.stop(timeout)

    def status(self) -> dict[str, Any]:
        alive = self._follower.alive
        waiting = [d.name for d in self.deps.all() if d.failing(self._who)]
        return {"ok": self.ready.is_set() and alive and not self.full and not waiting, "ready": self.ready.is_set(),
                "keep_s": None if self.spec.keep_ms is None else self.spec.keep_ms // 1000,
                "load_s": None if self.load_seconds is None else round(self.load_seconds, 2),
                "read": self.read, "skipped": self.skipped, "rows": self._count, "max_rows": self.spec.max_rows,
                "full": self.full, "waiting_for": waiting, "last_error": self.last_error or self._follower.failure}

    @property
    def loading(self) -> bool:
        """Still reading its window, and nothing stands in its way: worth waiting for."""
        return self._follower.alive and not self.ready.is_set() and self._follower.failure is None

    def floor(self, now_ms: int | None = None) -> int | None:
        """The oldest time the view holds rows from (None: all its topic keeps)."""
        return None if self.spec.keep_ms is None else (now_ms or _now_ms()) - self.spec.keep_ms

    def covers(self, start: int) -> bool:
        """Whether a window starting at `start` (epoch ms) can be answered from memory."""
        floor = self.floor()
        return self.ready.is_set() and not self.full and (floor is None or start >= floor)

    def window(self, symbol: str, start: int, stop: int, source: str | None = None) -> tuple[str | None, list[Any]]:
        """The rows of `symbol` in [start, stop] sorted by time, from one source: `source`, or the newest row's."""
        interval = self.spec.interval
        with self._lock:
            keys = [k for k in self._rows if k[0] == symbol and (source is None or k[1] == source)]
            if interval and self.aligned:  # a day of a 26-hour view: its 1,440 times probed, not every row scanned
                first = bucket_of(start, interval)
                first += INTERVAL_MS[interval] if first < start else 0
                times = range(first, stop + 1, INTERVAL_MS[interval])
                found = {k: [(t, r) for t in times if (r := self._rows[k].get(t)) is not None] for k in keys}
            else:
                found = {k: [(t, r) for t, r in self._rows[k].items() if start <= t <= stop] for k in keys}
            per_source = {k[1]: [row for t, r in pairs if (row := self._row(k, t, r)) is not None]
                          for k, pairs in found.items()}
        per_source = {s: rows for s, rows in per_source.items() if rows}
        if not per_source:
            return None, []
        chosen = max(per_source, key=lambda s: max(time_of(r) for r in per_source[s]))
        return chosen, sorted(per_source[chosen], key=time_of)

    def newest_source(self, symbol: str) -> str | None:
        """The source of `symbol`'s newest row (the one a chart of it shows), None when it has none."""
        with self._lock:
            newest = {k[1]: max(rows) for k, rows in self._rows.items() if k[0] == symbol and rows}
        return max(newest, key=newest.__getitem__) if newest else None

    def first(self, symbol: str, source: str) -> int | None:
        """The time of the oldest row of (symbol, source), None when it has none."""
        with self._lock:
            rows = self._rows.get((symbol, source))
            return min(rows) if rows else None

    def earliest(self, symbol: str) -> int | None:
        """The time of the oldest row of `symbol`, any source; None when it has none."""
        with self._lock:
            return min((min(rows) for key, rows in self._rows.items() if key[0] == symbol and rows), default=None)

    def last_before(self, symbol: str, source: str, ts: int) -> int | None:
        """The time of the newest row of (symbol, source) before `ts`, None when there is none."""
        with self._lock:
            return max((t for t in self._rows.get((symbol, source), ()) if t < ts), default=None)

    def put(self, symbol: str, source: str, row: CandleRow | TickRow) -> None:
        sound = sound_candle(row) if isinstance(row, CandleRow) else sound_tick(row)
        if sound is None:
            return  # a NaN or an infinity (a foreign producer's record) is never charted
        self._file([((symbol, source), time_of(sound), sound)])

    def _file(self, rows: list[tuple[tuple[str, str], int, Any]]) -> None:
        """File each row (a sound row, or a candle's undecoded value) under its (symbol, source) at its time."""
        floor, interval = self.floor(), self.spec.interval
        with self._lock:
            filed_by = self._rows
            for names, at, row in rows:
                if floor is not None and at < floor:
                    continue
                if interval and bucket_of(at, interval) != at:
                    self.aligned = False  # windows are scanned from now on
                filed = filed_by.get(names)
                if filed is None:
                    filed = filed_by[names] = {}
                if at not in filed:
                    self._count += 1
                filed[at] = row
        if self._count > self.spec.max_rows and not self.full:
            self.full = True
            log.warning("%s view: more than %d rows; charts read MongoDB instead", self.spec.name, self.spec.max_rows)

    def _row(self, key: tuple[str, str], at: int, row: Any) -> CandleRow | TickRow | None:
        """The row filed at `at`, decoded now if it was filed undecoded (and kept decoded): None, and no longer filed,
        for one the sink would send to its DLQ, a NaN, or a value that is not the candle its key names; None, and
        kept for a later ask, while the registry cannot say what its schema is. Called with the lock held."""
        if isinstance(row, CandleRow | TickRow):
            return row
        try:
            record = self._codec.decode(row)
            decoded = sound_candle(candle_row(record))
            if decoded is not None and (record["symbol"], record["source"], decoded.start) != (*key, at):
                decoded = None
        except RegistryUnavailable:
            return None
        except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
            self.last_error = f"undecodable record skipped: {plain(exc)}"
            decoded = None
        if decoded is None:
            del self._rows[key][at]
            self._count -= 1
            return None
        self._rows[key][at] = decoded
        return decoded

    def forget_old(self, now_ms: int) -> None:
        floor = self.floor(now_ms)
        if floor is None:
            return
        with self._lock:
            for rows in self._rows.values():
                old = [t for t in rows if t < floor]
                for t in old:
                    del rows[t]
                self._count -= len(old)

    # --- the follower's thread: load, then follow; through any outage (cryptopulse.kafka.Follower) ---

    @property
    def _who(self) -> str:
        return f"{self.spec.name} view"

    def _start(self) -> None:
        """Read the window to the topic's end as of now, then the view is ready (the follower follows on). Kafka
        away: Unavailable (the follower says so once and tries again after a backoff, from where it was)."""
        self._started = self._started or time.monotonic()
        if self.turns is not None:
            self.turns.wait(self.spec.name, self._follower.stopping)
        try:
            self._codec = self._codec or self._make_codec()
            self.reader.start = self._start_offsets()
            self._cutoff = self.floor()
            self.reader.catch_up(self._apply_all, CATCH_UP_SECONDS, LOAD_BATCH)
        except KafkaException as exc:
            raise Unavailable(self.deps.kafka.reporter(self._who), plain(exc)) from exc
        finally:
            if self.turns is not None:
                self.turns.done(self.spec.name)
        self.deps.kafka.up(self._who)
        if self._follower.stopping.is_set():
            return
        self._learn_writer_schema()
        self.load_seconds = time.monotonic() - self._started
        self.ready.set()
        self.last_error = None
        log.info("%s view ready in %.1f s: %d records read, %d older ones skipped by their key, %d rows",
                 self.spec.name, self.load_seconds, self.read, self.skipped, self._count)

    def _learn_writer_schema(self) -> None:
        """Decode one of the values filed undecoded before the view says it is ready: its writer schema is fetched
        now, not by the first chart that asks. The registry away is Unavailable, as for a record loading must decode
        (the follower says so once and tries again, from where it was): a view that could not decode what it holds
        does not say it is ready. A bad record is left to the window that asks for it."""
        if self._sample is None:
            return
        try:
            self._codec.decode(self._sample)
        except RegistryUnavailable as exc:
            raise Unavailable(self.reader.registry, plain(exc)) from exc
        except Exception:  # noqa: BLE001 - dropped when a window asks for it (`_row`)
            return
        self.reader.registry.up()

    def _start_offsets(self) -> Any:
        """Where reading starts: the first record published within the window (every partition), or the beginning
        for a view of everything."""
        if self.spec.keep_ms is None:
            return BEGINNING
        client = kafka.consumer(self.settings, "webui", self.reader.group, watch=self.watch)
        try:
            offsets = kafka.offsets_at(client, self.spec.topic, _now_ms() - self.spec.keep_ms - START_MARGIN_MS)
            # "the end" resolved now, so that reading to the end as of now knows where that is
            return {tp: client.get_watermark_offsets(TopicPartition(*tp), timeout=10)[1] if offset == OFFSET_END
                    else offset for tp, offset in offsets.items()}
        finally:
            kafka.close_within([client], 5.0)

    def _make_codec(self) -> Any:
        return self.make_codec() if self.make_codec else AvroCodec(self.settings, self.spec.topic, self.spec.schema)

    def _turn(self) -> None:
        if time.monotonic() - self._last_trim > 60:
            self.forget_old(_now_ms())
            self._cutoff = self.floor()
            self._last_trim = time.monotonic()

    def _decode(self, message: Any) -> tuple[tuple[str, str], int, Any] | None:
        """((symbol, source), time, row) of a record: for a candle of the view's interval, its key's (symbol, source,
        start) and its value undecoded (decoded when a window first asks for it); None for a tombstone, a candle
        older than the window (by its key, not decoded) or a record the sink would send to its DLQ (skipped);
        RegistryUnavailable passes (the same record again, a little later)."""
        value = message.value()
        key = message.key() if self.spec.interval else None
        if not self.spec.interval and self._cutoff is not None and message.headers():
            ts = kafka.header(message, kafka.EVENT_TIME_HEADER)  # a back-fill's tick, published now
            if ts is not None and ts.isdigit() and int(ts) < self._cutoff:
                self.skipped += 1
                return None
        if key:
            prefix, _, start_text = key.rpartition(b"|")  # symbol|source|interval, start
            if start_text.isdigit():
                start = int(start_text)
                cutoff = self._cutoff
                if cutoff is not None and start < cutoff:
                    self.skipped += 1
                    return None
                names = self._names.get(prefix)
                if names is None:
                    if len(self._names) > 4 * VIEW_KEYS:  # a foreign producer's keys: bounded
                        self._names.clear()
                    named = candle_key(key)
                    names = self._names[prefix] = named[:2] if named and named[2] == self.spec.interval else ()
                if names and value is not None:
                    return names, start, value
        if value is None:
            return None
        try:
            record = self._codec.decode(value)
            row = self.spec.row(record)
            return (record["symbol"], record["source"]), time_of(row), row
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the sink sends such a record to its DLQ; the view skips it
            self.last_error = f"undecodable record skipped: {plain(exc)}"
            return None

    def _apply_all(self, rows: list[tuple[tuple[str, str], int, Any]]) -> None:
        undecoded = [r for r in rows if not isinstance(r[2], CandleRow | TickRow)]
        if undecoded:
            self._file(undecoded)
            self._sample = undecoded[-1][2]
        for names, _, row in rows:
            if isinstance(row, CandleRow | TickRow):
                self.put(*names, row)
        self.read += len(rows)
        if self.last_error and self.last_error.startswith("registry"):
            self.last_error = None
