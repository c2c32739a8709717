"""The live path: a Kafka consumer thread hands decoded ticks to the event loop, which fans them out.

The consumer never waits for a client: each subscriber has a bounded queue and a
slow one loses its oldest ticks (counted) instead of slowing everyone down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import END, Follower, KafkaWatch, Reader
from cryptopulse.outage import Backoff, RateLimitFilter
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.health import Dependencies, plain
from webui.metrics import Metrics

log = logging.getLogger(__name__)
undecodable_log = logging.getLogger(f"{__name__}.undecodable")  # a bad producer can send thousands a second
undecodable_log.addFilter(RateLimitFilter(period=60, burst=5))
WHO = "live consumer"  # as a reporter of outages (webui.health.Dependency)
ALL = "*"  # a subscriber of every symbol's ticks (the markets overview)


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's live feed: the symbol it watches and the ticks waiting to be sent to it, at most
    `limit` of them (a slow client loses its oldest ones, counted, and never holds up anyone)."""

    limit: int = 1000
    symbol: str | None = None
    dropped: int = 0
    pending: deque[dict[str, Any]] = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.pending = deque(maxlen=max(1, self.limit))

    def push(self, ticks: list[dict[str, Any]]) -> int:
        """Queue a batch of ticks at once (one wake-up for all of them); how many old ones made room for them."""
        before = len(self.pending)
        self.pending.extend(ticks)
        self.wake.set()
        lost = before + len(ticks) - len(self.pending)
        self.dropped += lost
        return lost

    async def take(self, most: int) -> list[dict[str, Any]]:
        """What waits, oldest first (at most `most`), as soon as there is anything."""
        while not self.pending:
            self.wake.clear()
            await self.wake.wait()
        if len(self.pending) <= most:
            batch = list(self.pending)
            self.pending.clear()
            return batch
        return [self.pending.popleft() for _ in range(most)]


@dataclass
class Hub:
    """Routes ticks to the subscribers of their symbol and remembers the last few ticks of each symbol served: at
    most `recent_size` ticks for each of `symbols`.

    Ticks are handed to subscribers in batches, one wake-up per subscriber per batch, at most once every
    `push_interval` seconds: a lone tick goes out at once, ticks that follow within the interval wait for its end
    together. At 1,000 ticks/s to 200 clients that is a few thousand hand-overs a second instead of 67,000 queue
    puts and the wake-ups they caused (docs/webui.md, "Benchmark")."""

    metrics: Metrics
    recent_size: int = 600
    push_interval: float = 0.0
    # The symbols the dashboard serves (SYMBOLS): a tick of any other is neither remembered nor pushed, so the
    # memory is bounded by the configuration, whatever a producer publishes (None: every symbol, for tests).
    symbols: frozenset[str] | None = None
    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    recent: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    # the live feed's state, pushed to every open socket when it changes (docs/webui.md, `status`)
    status: dict[str, Any] = field(default_factory=lambda: {"type": "status", "live": True, "down": [],
                                                            "message": "live feed flowing"})
    status_changed: asyncio.Event = field(default_factory=asyncio.Event)  # replaced by a fresh one at each change
    _outbox: list[dict[str, Any]] = field(default_factory=list)
    _flushing: asyncio.TimerHandle | None = None
    _flushed: float = float("-inf")  # loop time of the last hand-over to the subscribers

    def set_status(self, message: dict[str, Any]) -> None:
        """On the loop: a new live-feed state; wakes every connection's status writer."""
        self.status = message
        self.metrics.live_stale = 0 if message.get("live") else 1
        changed, self.status_changed = self.status_changed, asyncio.Event()
        changed.set()

    def subscribe(self, sub: Subscriber, symbol: str) -> None:
        self.unsubscribe(sub)
        sub.symbol = symbol
        sub.pending.clear()
        self.subscribers.setdefault(symbol, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.symbol is not None:
            self.subscribers.get(sub.symbol, set()).discard(sub)
        sub.symbol = None

    def publish(self, ticks: list[dict[str, Any]]) -> None:
        """On the loop: a batch of ticks from the consumer, remembered, and handed to the subscribers now or at the
        end of the current `push_interval`."""
        self.metrics.consumed += len(ticks)
        if self.symbols is not None:
            kept = [tick for tick in ticks if tick["symbol"] in self.symbols]
            self.metrics.unserved += len(ticks) - len(kept)
            ticks = kept
        recent = self.recent
        for tick in ticks:
            symbol = tick["symbol"]
            if symbol not in recent:
                recent[symbol] = deque(maxlen=self.recent_size)
            recent[symbol].append(tick)
        self._outbox += ticks
        if self._flushing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called off the loop (a test): no timer
            loop = None
        wait = 0.0 if loop is None else self._flushed + self.push_interval - loop.time()
        if wait <= 0 or loop is None:
            self.flush()
        else:
            self._flushing = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Hand what the consumer delivered since the last time to the subscribers, one batch per symbol."""
        self._flushing = None
        with contextlib.suppress(RuntimeError):
            self._flushed = asyncio.get_running_loop().time()
        ticks, self._outbox = self._outbox, []
        if not ticks:
            return
        by_symbol: dict[str, list[dict[str, Any]]] = {}
        for tick in ticks:
            symbol = tick["symbol"]
            if symbol in by_symbol:
                by_symbol[symbol].append(tick)
            else:
                by_symbol[symbol] = [tick]
        dropped = 0
        for symbol, batch in by_symbol.items():
            for sub in self.subscribers.get(symbol, ()):
                dropped += sub.push(batch)
        for sub in self.subscribers.get(ALL, ()):
            dropped += sub.push(ticks)
        self.metrics.dropped += dropped

    def recent_ticks(self, symbol: str) -> list[dict[str, Any]]:
        return list(self.recent.get(symbol, ()))


def group_id(prefix: str) -> str:
    """A group of its own per process: every dashboard process must see every tick (no sharing of partitions)."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def encode(message: dict[str, Any]) -> str:
    """Compact JSON, strictly: a NaN or an infinity raises ValueError rather than reach a browser's JSON.parse."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TickMessage(dict):
    """A tick's wire message and its JSON `text`, encoded once: every subscriber of the symbol sends that text."""

    __slots__ = ("text",)


def tick_message(record: dict[str, Any]) -> TickMessage:
    """The wire form of a decoded Avro tick: times as epoch ms (the deserializer gives datetimes).

    ValueError for a price that is not a finite number (a foreign producer's NaN): such a record is skipped
    as undecodable; a volume or change that is not finite is sent as null."""
    if not _finite(record.get("price")):
        raise ValueError(f"price {record.get('price')!r} is not a finite number")
    message = TickMessage(
        type="tick",
        symbol=record["symbol"],
        source=record["source"],
        ts=epoch_ms(record["ts"]),
        price=record["price"],
        volume_24h=record.get("volume_24h") if _finite(record.get("volume_24h")) else None,
        change_24h_pct=record.get("change_24h_pct") if _finite(record.get("change_24h_pct")) else None,
        published_at=None if record.get("published_at") is None else epoch_ms(record["published_at"]),
    )
    message.text = encode(message)
    return message


class LiveConsumer(Follower[TickMessage]):
    """The live feed: a `Follower` thread (cryptopulse/kafka.py) running a `Reader` of the prices topic; batches of
    decoded ticks go to `deliver` on the loop.

    It outlives any outage: Kafka away (librdkafka reconnects; the watch tells when it is back), the registry
    away (the record that needs it is decoded again after a backoff, never skipped; what was decoded before it
    goes out first), or a consumer that cannot be used any more (a fresh one, assigned where the last one
    stopped). The reader keeps every delivered record's offset, so after a rebalance or a new consumer it
    carries on from the next record: no tick twice, none lost. `on_status` (on the loop) hears when the live
    feed becomes stale and when it flows again.
    """

    def __init__(self, settings: Settings, group_prefix: str, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[dict[str, Any]]], None], metrics: Metrics,
                 deps: Dependencies | None = None, on_status: Callable[[dict[str, Any]], None] | None = None,
                 *, make_consumer: Callable[[dict[str, Any]], Any] | None = None,
                 make_codec: Callable[[], Any] | None = None, backoff_cap: float = 10.0) -> None:
        self.settings = settings
        self.group_id = group_id(group_prefix)
        self._loop = loop
        self._deliver = deliver
        self._metrics = metrics
        self.deps = deps or Dependencies()
        self._on_status = on_status
        self._make_codec = make_codec or (lambda: AvroCodec(settings, settings.prices_topic, "tick"))
        self._codec: Any = None
        self._bad = 0  # undecodable records not told to the loop yet
        self.stale: str | None = None  # why the live feed is interrupted, or None while it flows
        self.watch = KafkaWatch(self.deps.kafka.reporter(WHO), backoff=Backoff(min(0.5, backoff_cap), backoff_cap))
        reader = Reader(settings, "webui", [settings.prices_topic], self._decode, group=self.group_id, subscribe=True,
                        start=END, watch=self.watch, registry=self.deps.registry.reporter(WHO),
                        make_consumer=make_consumer, config={
                            "auto.offset.reset": "latest",
                            # committed now and then only so that `control status` can show this dashboard's lag
                            "enable.auto.commit": True, "auto.commit.interval.ms": 5000,
                            "fetch.wait.max.ms": 10})
        # poll 0.2 s for the first record, then whatever else is fetched: consume(500, timeout) would hold the first
        # record until 500 arrive or the timeout passes, adding up to that much latency
        super().__init__("webui-kafka", reader, self._send, turn=self._turn, backoff_cap=backoff_cap,
                         poll_timeout=0.2, most=500, logger=log)

    def status(self) -> dict[str, Any]:
        last_poll = self.last_poll
        age = time.monotonic() - last_poll if last_poll else None
        alive = self.alive
        ok = alive and age is not None and age < 5 and self.assigned and self.stale is None
        body = {"ok": ok, "group_id": self.group_id, "topic": self.settings.prices_topic, "assigned": self.assigned,
                "seconds_since_poll": None if age is None else round(age, 3), "last_error": self.last_error}
        if not ok:
            body["error"] = (self.stale or ("consumer thread ended" if not alive else None)
                             or (None if self.assigned else f"waiting for partitions of {self.settings.prices_topic}")
                             or "not polling")
        return body

    def _decode(self, message: Any) -> TickMessage | None:
        """The record as a tick message; None if it is bad (counted, skipped); RegistryUnavailable passes (the
        reader waits before it and reads it again)."""
        if self._codec is None:
            self._codec = self._make_codec()
        try:
            return tick_message(self._codec.decode(message.value()))
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any bad record is counted and skipped
            undecodable_log.warning("undecodable record at %s[%d]@%d skipped: %s", message.topic(),
                                    message.partition(), message.offset(), plain(exc))
            self._bad += 1
            return None

    def _turn(self) -> None:
        if self._bad:
            self._send([])
        self._update_stale()

    def _update_stale(self) -> None:
        """Tell the loop when the live feed stops (Kafka or the registry out of reach) and when it flows again."""
        if self.deps.kafka.failing(WHO):
            reason = "Kafka is unavailable"
        elif self.deps.registry.failing(WHO):
            reason = "the schema registry is unavailable"
        else:
            reason = None
        if reason == self.stale:
            return
        self.stale = reason
        down = [d.name for d in (self.deps.kafka, self.deps.registry) if d.failing(WHO)]
        message = {"type": "status", "live": reason is None, "down": down,
                   "message": "live feed flowing" if reason is None
                   else f"live feed interrupted: {reason}; ticks resume when it is back"}
        if self._on_status is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_status, message)
            except RuntimeError:  # the loop is closed: the app is shutting down
                pass

    def _send(self, ticks: list[dict[str, Any]]) -> None:
        bad, self._bad = self._bad, 0
        try:
            self._loop.call_soon_threadsafe(self._hand_over, ticks, bad)
        except RuntimeError:  # the loop is closed: the app is shutting down
            self.stopping.set()

    def _hand_over(self, ticks: list[dict[str, Any]], bad: int) -> None:
        self._metrics.undecodable += bad
        if ticks:
            self._deliver(ticks)
