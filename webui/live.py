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
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.outage import Backoff, RateLimitFilter, librdkafka_logger
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.health import Dependencies, KafkaWatch, plain
from webui.metrics import Metrics

log = logging.getLogger(__name__)
undecodable_log = logging.getLogger(f"{__name__}.undecodable")  # a bad producer can send thousands a second
undecodable_log.addFilter(RateLimitFilter(period=60, burst=5))
WHO = "live consumer"  # as a reporter of outages (webui.health.Dependency)
_STOPPED = object()
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
    """Routes ticks to the subscribers of their symbol and remembers the last few ticks of each symbol.

    Ticks are handed to subscribers in batches, one wake-up per subscriber per batch, at most once every
    `push_interval` seconds: a lone tick goes out at once, ticks that follow within the interval wait for its end
    together. At 1,000 ticks/s to 200 clients that is a few thousand hand-overs a second instead of 67,000 queue
    puts and the wake-ups they caused (docs/webui.md, "Benchmark")."""

    metrics: Metrics
    recent_size: int = 600
    push_interval: float = 0.0
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


class LiveConsumer:
    """confluent_kafka Consumer in a daemon thread; batches of decoded ticks go to `deliver` on the loop.

    It outlives any outage: Kafka away (librdkafka reconnects; a `KafkaWatch` tells when it is back), the
    registry away (the record that needs it is decoded again after a backoff, never skipped), or a
    consumer that cannot be used any more (a fresh one, assigned where the last one stopped). Every
    delivered record's offset is remembered, so after a rebalance or a new consumer it carries on from
    the next record: no tick twice, none lost. `on_status` (on the loop) hears when the live feed
    becomes stale and when it flows again.
    """

    def __init__(self, settings: Settings, group_prefix: str, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[dict[str, Any]]], None], metrics: Metrics,
                 deps: Dependencies | None = None, on_status: Callable[[dict[str, Any]], None] | None = None,
                 *, make_consumer: Callable[[dict[str, Any]], Any] = Consumer,
                 make_codec: Callable[[], Any] | None = None, backoff_cap: float = 10.0) -> None:
        self.settings = settings
        self.group_id = group_id(group_prefix)
        self._loop = loop
        self._deliver = deliver
        self._metrics = metrics
        self.deps = deps or Dependencies()
        self._on_status = on_status
        self._make_consumer = make_consumer
        self._make_codec = make_codec or (lambda: AvroCodec(settings, settings.prices_topic, "tick"))
        self._backoff_cap = backoff_cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webui-kafka", daemon=True)
        self.watch = KafkaWatch(self.deps.kafka, WHO, backoff=self._backoff())
        self.next_offsets: dict[int, int] = {}  # partition -> offset of the next record to deliver
        self.last_poll = 0.0
        self.assigned = False
        self.last_error: str | None = None
        self.stale: str | None = None  # why the live feed is interrupted, or None while it flows
        self._bugs: set[str] = set()
        self._codec: Any = None

    def _backoff(self) -> Backoff:
        return Backoff(min(0.5, self._backoff_cap), self._backoff_cap)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        age = time.monotonic() - self.last_poll if self.last_poll else None
        alive = self._thread.is_alive()
        ok = alive and age is not None and age < 5 and self.assigned and self.stale is None
        body = {"ok": ok, "group_id": self.group_id, "topic": self.settings.prices_topic, "assigned": self.assigned,
                "seconds_since_poll": None if age is None else round(age, 3), "last_error": self.last_error}
        if not ok:
            body["error"] = (self.stale or ("consumer thread ended" if not alive else None)
                             or (None if self.assigned else f"waiting for partitions of {self.settings.prices_topic}")
                             or "not polling")
        return body

    def _on_error(self, error: KafkaError) -> None:
        """error_cb: librdkafka repeats itself many times a second while a broker is down; nothing is logged
        here (the watch's `Outage` says it once), the latest error is kept for /healthz."""
        self.watch.on_error(error)
        self.last_error = plain(error)

    def _config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": self.group_id,
            "auto.offset.reset": "latest",
            # committed now and then only so that `control status` can show this dashboard's lag
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 5000,
            "fetch.wait.max.ms": 10,
            "error_cb": self._on_error,
            "logger": librdkafka_logger("webui"),  # librdkafka's own lines, rate-limited
        }

    def _run(self) -> None:
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                self._consume()
                return  # stopped
            except Exception as exc:  # noqa: BLE001 - never fatal: a fresh consumer after a backoff
                self.last_error = plain(exc)
                key = f"{type(exc).__name__}: {self.last_error}"
                if key not in self._bugs:  # once per kind of failure, not once per retry; a traceback if a bug
                    self._bugs.add(key)
                    log.warning("kafka consumer failed (%s); a new one starts where it stopped", self.last_error,
                                exc_info=not isinstance(exc, KafkaException))
                self._stop.wait(backoff.next())

    def _consume(self) -> None:
        if self._codec is None:
            self._codec = self._make_codec()
        consumer = self._make_consumer(self._config())
        try:
            consumer.subscribe([self.settings.prices_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            backoff = self._backoff()
            while not self._stop.is_set():
                self.last_poll = time.monotonic()
                # Wait for one record, then take whatever else is already fetched: consume(500, timeout) would
                # hold the first record until 500 arrive or the timeout passes, adding up to that much latency.
                try:
                    first = consumer.poll(0.2)
                    messages = [] if first is None else [first, *consumer.consume(num_messages=499, timeout=0)]
                except KafkaException as exc:
                    if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                        raise  # this consumer cannot go on: a new one, from next_offsets
                    self.watch.failed(exc)
                    self._stop.wait(backoff.next())
                    messages = []
                else:
                    backoff.reset()
                if any(m.error() is None for m in messages):
                    self.watch.alive()
                self._handle(messages)
                self.watch.check(consumer)
                self._update_stale()
        finally:
            self.assigned = False
            consumer.close()

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Carry on after the last delivered record (not from the group's last commit, up to 5 s older)."""
        for tp in partitions:
            if tp.partition in self.next_offsets:
                tp.offset = self.next_offsets[tp.partition]
            else:  # the end, resolved now: once `assigned` (and /healthz ok), every tick published is delivered
                with contextlib.suppress(KafkaException):  # else librdkafka resolves "latest" at the first fetch
                    tp.offset = consumer.get_watermark_offsets(tp, timeout=5)[1]
        consumer.assign(partitions)
        self.assigned = bool(partitions)

    def _on_revoke(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        self.assigned = False  # the library unassigns

    def _handle(self, messages: list[Any]) -> None:
        ticks, bad = [], 0
        for message in messages:
            if self._stop.is_set():
                break
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    self.last_error = plain(message.error())
                continue
            partition, offset = message.partition(), message.offset()
            if offset < self.next_offsets.get(partition, -1):
                continue  # delivered already (read again after a rebalance)
            tick = self._decode(message, ticks)
            if tick is _STOPPED:
                break
            if tick is None:
                bad += 1
            else:
                ticks.append(tick)
            self.next_offsets[partition] = offset + 1
        if ticks or bad:
            self._send(ticks, bad)

    def _decode(self, message: Any, ready: list[dict[str, Any]]) -> Any:
        """The record as a tick message; None if it is bad (counted, skipped); while the registry cannot be
        reached, the same record again after a backoff (what is decoded already goes out first)."""
        backoff = self._backoff()
        while True:
            try:
                tick = tick_message(self._codec.decode(message.value()))
            except RegistryUnavailable as exc:
                self.deps.registry.down(WHO, exc)
                self.last_error = plain(exc)
                self._update_stale()
                if ready:
                    self._send(list(ready), 0)
                    ready.clear()
                if self._stop.wait(backoff.next()):
                    return _STOPPED
                continue
            except Exception as exc:  # noqa: BLE001 - any bad record is counted and skipped
                undecodable_log.warning("undecodable record at %s[%d]@%d skipped: %s", message.topic(),
                                        message.partition(), message.offset(), plain(exc))
                tick = None
            if self.deps.registry.failing(WHO):
                self.deps.registry.up(WHO)
                self._update_stale()
            return tick

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

    def _send(self, ticks: list[dict[str, Any]], bad: int) -> None:
        try:
            self._loop.call_soon_threadsafe(self._hand_over, ticks, bad)
        except RuntimeError:  # the loop is closed: the app is shutting down
            self._stop.set()

    def _hand_over(self, ticks: list[dict[str, Any]], bad: int) -> None:
        self._metrics.undecodable += bad
        if ticks:
            self._deliver(ticks)
