"""`streams notify`: every alert delivered to each channel its rule names, as a stream (docs/alerts.md, "Delivery").

    crypto-alert-channels ──► NotifyProcessor ── one ChannelWorker (a thread, a processor of its own) per channel
    crypto-alerts (read committed) ──► each worker: its alerts, in topic order ──► sender ──► the receiver
                                                   │
                each outcome, and how far the channel is, in one transaction ──► crypto-alert-deliveries (sink →
                crypto_db.alert_deliveries); given-up alerts ──► crypto-alerts-undelivered (reason in headers)

Delivery guarantees, and why they hold:
- Each channel has its own progress: its worker reads the alerts topic with a consumer group of its own
  (`<group>.<channel>.<created>`), delivers its alerts one after the other (the next only once the previous one is
  delivered or given up: in order per channel), and records each outcome together with its group's offset past
  that alert in one Kafka transaction (its own transactional id, the same string). One slow or dead channel holds
  up only its own worker; the others read on.
- At least once, always with the same key: an alert is only ever past the committed offset once its outcome is
  committed. A worker killed (-9) between the receiver's acknowledgement and that commit sends the alert again
  after its restart, with the same idempotency key (the alert's id); one killed at any other moment resends
  nothing that was acknowledged. The restart's `init_transactions` aborts what the dead process left open.
- Kafka away: an acknowledged outcome waits in memory and its transaction is tried again until Kafka is back,
  before anything else is sent on that channel; nothing is sent twice for it.
- Receivers failing: timeouts, refused connections, 408/425/429/5xx (and SMTP 4xx) are retried with a growing
  delay or the receiver's Retry-After; a refusal (another 4xx, SMTP 5xx) or an alert still failing past the bound
  (24 h after it fired) goes to crypto-alerts-undelivered with the reason (streams/delivery.py).
- The per-channel cap: beyond it, one summary message for the alerts held (streams/delivery.py).
- An alert naming a channel that does not exist (removed, or never added) is given up for that channel by the
  router (this processor's own reader of the alerts topic, group `<group>`), after reading the channels topic
  to its end once more.
One process per group: two would each deliver every alert (the later one fences the earlier one's transactions
when they share a channel, and it exits).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from cryptopulse import kafka, topics
from cryptopulse.alert_channels import make_channel
from cryptopulse.avro import AvroCodec
from cryptopulse.channel import Channel
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import Reader, Record, Unavailable
from cryptopulse.settings import Settings
from cryptopulse.text import terminal_safe
from cryptopulse.times import epoch_ms, iso_utc, now_ms
from streams.delivery import WINDOW, Policy, RateCap
from streams.senders import TELEGRAM_API, Answer, Sender, alert_notice, sender_for, summary_notice

log = logging.getLogger("streams.notify")

READ_AHEAD = 100  # alerts a channel reads ahead of what it has delivered (the summary's material, and no more)
HEADER = "cryptopulse.notify."  # the dead-letter topic's headers: channel, kind, reason, status, attempts, at
WARM_UP_DELIVERY = {"_id": "-", "alert_id": "-", "rule_id": "-", "symbol": "-", "channel": "-",
                    "channel_kind": "webhook", "outcome": "delivered", "attempt": 1, "at": 0, "status": None,
                    "answer": None, "reason": None, "next_attempt_at": None, "fired_at": 0, "latency_ms": None,
                    "summary": None}


@dataclass
class NotifyOptions:
    group: str = ""  # "": the settings' notify group
    policy: Policy = field(default_factory=Policy)
    timeout: float = 10.0  # seconds a receiver has to answer (to connect, and for each read)
    telegram_api: str = TELEGRAM_API
    from_end: bool = True  # the router's group without a commit starts at the end (a channel: at its creation)
    commit_every: float = 5.0  # seconds between commits of a channel's offsets past alerts that were not its own


@dataclass
class Pending:
    """An alert a channel has to deliver: the record, its bytes (for the dead-letter topic), where it was read."""

    alert: dict[str, Any]
    raw: bytes
    partition: int
    offset: int
    attempts: int = 0  # by this process
    next_at: float = 0.0  # monotonic: not before

    @property
    def id(self) -> str:
        return self.alert["_id"]


@dataclass
class Recording:
    """Outcomes to make durable, with the offsets past the alerts they finish (`done`), before anything else."""

    records: list[Record]
    done: list[Pending]


@dataclass
class WorkerStats:
    read: int = 0  # alerts for this channel
    undecodable: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    summaries: int = 0


def dead_letter_headers(channel: str, kind: str, reason: str, answer: Answer | None, attempts: int,
                        at_ms: int) -> list[tuple[str, bytes]]:
    """What a given-up alert carries on the dead-letter topic besides itself."""
    values = {"channel": channel, "kind": kind, "reason": reason,
              "status": "" if answer is None or answer.status is None else str(answer.status),
              "attempts": str(attempts),
              "at": iso_utc(at_ms, "milliseconds")}
    return [(HEADER + name, value.encode()) for name, value in values.items()]


class ChannelWorker(kafka.Processor):
    """One channel: its own reader of the alerts topic (group and transactional id `<group>.<channel>.<created>`),
    its sender, its rules (streams/delivery.py), one transaction per outcome."""

    summary_every = 300.0

    def __init__(self, settings: Settings, channel: Channel, options: NotifyOptions, sender: Sender | None = None,
                 clock: Any = time.monotonic) -> None:
        super().__init__(settings, log.getChild(channel.name), options.commit_every)
        self.name = f"notify-{channel.name}"
        self.channel = channel
        self.options = options
        self.policy = options.policy
        self.group = channel.progress_group(options.group)
        self.sender = sender or sender_for(channel, options.timeout, options.telegram_api)
        self.clock = clock
        self.stats = WorkerStats()
        self._alerts = AvroCodec(settings, settings.alerts_topic, "alert")
        self._deliveries = AvroCodec(settings, settings.alert_deliveries_topic, "alert_delivery")
        self.output = kafka.TransactionalWriter(settings, self.name, self.group, self.watch, self.kafka)
        decode = kafka.decoder(lambda message: self._alerts.decode(message.value()), self.stats,
                               "undecodable alert", self.log, self._mine)
        self.reader: Reader[Pending] = Reader(settings, self.name, [settings.alerts_topic], decode, group=self.group,
                                              watch=self.watch, registry=self.registry, start={},
                                              config={"isolation.level": "read_committed", "fetch.wait.max.ms": 100})
        self.pending: deque[Pending] = deque()
        self.held: list[Pending] = []  # beyond the cap: one summary for all of them
        self.held_since: float | None = None
        self.summary_tried = False  # the held alerts' summary was attempted: no more join it (its key is theirs)
        self.cap = RateCap(self.policy.cap_per_minute)
        self.unrecorded: Recording | None = None
        self.failing_since: int | None = None  # wall ms of the first of the failures in a row, None when it works
        self.last_failure = ""
        self._start: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._initialized = False

    def summary(self) -> str:
        return f"{self.channel.name}: {self.stats}"

    # --- start: the transactional id, where the channel is ---

    def start(self) -> None:
        if not self._initialized:
            self.output.init()  # aborts what a killed predecessor left open
            self._encode(WARM_UP_DELIVERY)  # the schema registered now: an outcome never waits for the registry
            self._initialized = True
        if not self._start:
            with self.talking_to_kafka():
                self._start = self._start_offsets()
            self.reader.start = {(self.settings.alerts_topic, p): o for p, o in self._start.items()}
            self._committed = dict(self._start)
            self.log.info("channel %s (%s): from %s", self.channel.name, self.channel.describe(),
                          ", ".join(f"{self.settings.alerts_topic}[{p}]@{o}" for p, o in sorted(self._start.items())))
        with self.talking_to_kafka():
            self.reader.open()
        self.ready.set()

    def _start_offsets(self) -> dict[int, int]:
        """Per partition, the channel's committed offset, else the first alert published at or after the channel
        was made: a new channel is sent the alerts fired from then on."""
        consumer = kafka.consumer(self.settings, self.name, self.group, {"log_level": 0}, self.watch)
        try:
            topic = self.settings.alerts_topic
            partitions = kafka.partitions_of(consumer, topic)
            committed = {tp.partition: tp.offset for tp in consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=30)}
            since = kafka.offsets_at(consumer, topic, self.channel.created)
            offsets = {}
            for p in partitions:
                offset = committed.get(p, -1)
                if offset < 0:
                    offset = since[(topic, p)]
                    if offset < 0:  # OFFSET_END: nothing published since; resolved now
                        offset = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                offsets[p] = offset
            return offsets
        finally:
            consumer.close()

    def _mine(self, record: dict[str, Any], message: Message) -> Pending | None:
        if self.channel.name not in (record.get("channels") or ()):
            return None
        self.stats.read += 1
        return Pending(record, message.value(), message.partition(), message.offset())

    # --- the loop ---

    def step(self) -> None:
        if self.unrecorded is not None:  # acknowledged (or given up), not recorded yet: before anything else
            self._record()
        now = self.clock()
        due = self._due_in(now)
        if len(self.pending) + len(self.held) < READ_AHEAD:
            with self.talking_to_kafka():
                self.reader.pump(self.pending.extend, timeout=min(0.2, due),
                                 most=READ_AHEAD - len(self.pending) - len(self.held))
            self.watch.check(self.reader.client)
        elif due > 0:
            time.sleep(min(0.2, due))
        self._deliver(self.clock())

    def _due_in(self, now: float) -> float:
        """Seconds until something may be sent (0: now)."""
        if self.held:
            if not self.summary_tried:
                return max(0.0, (self.held_since or now) + WINDOW - now)
            return max(0.0, self.held[0].next_at - now)
        return max(0.0, self.pending[0].next_at - now) if self.pending else 0.2

    def _deliver(self, now: float) -> None:
        wall = now_ms()
        if self.held:
            if not self.summary_tried:
                self.held.extend(self.pending)  # they come after the held ones: into the summary, in order
                self.pending.clear()
                if now < (self.held_since or now) + WINDOW:
                    return
            if now >= self.held[0].next_at:
                self._attempt(self.held, summary=True)
            return
        if not self.pending or now < self.pending[0].next_at:
            return
        head = self.pending[0]
        if (self.failing_since is not None and head.attempts == 0
                and wall >= self.policy.deadline_ms(epoch_ms(head.alert["fired_at"]))):
            self._give_up([head], None, f"past the bound of {self.policy.give_up_after / 3600:g} h while the channel "
                                        f"has been failing since {iso_utc(self.failing_since)} (last: "
                                        f"{self.last_failure})")
            return
        if not self.cap.room(now):
            self.held, self.held_since, self.summary_tried = list(self.pending), now, False
            self.pending.clear()
            self.log.warning("%s: %d messages within a minute, its cap: what comes next goes in one summary a minute "
                             "from now", self.channel.name, self.cap.cap)
            return
        self._attempt([head], summary=False)

    def _attempt(self, items: list[Pending], summary: bool) -> None:
        notice = (summary_notice([i.alert for i in items], self.cap.cap) if summary else alert_notice(items[0].alert))
        self.summary_tried = self.summary_tried or summary
        answer = self.sender.send(notice)
        now, wall = self.clock(), now_ms()
        for item in items:
            item.attempts += 1
        if answer.ok:
            self.cap.record(now)
            if self.failing_since is not None:
                self.log.warning("%s is taking alerts again after %.0f s of failures", self.channel.name,
                                 (wall - self.failing_since) / 1000)
                self.failing_since = None
            self.stats.delivered += len(items)
            self.stats.summaries += summary
            self.log.info("delivered %s to %s: %s", terminal_safe(notice.key if summary else items[0].id),
                          self.channel.name, terminal_safe(answer.describe()) or "ok")
            self._finish(items, [self._outcome(i, "delivered", answer, wall, summary=notice.key if summary else None)
                                 for i in items])
            return
        deadline = min(self.policy.deadline_ms(epoch_ms(i.alert["fired_at"])) for i in items)
        if answer.permanent:
            self._give_up(items, answer, f"refused: {answer.describe()}")
            return
        self.last_failure = answer.describe()
        if self.failing_since is None:
            self.failing_since = wall
            self.log.warning("%s failing: %s; retrying (alerts wait in order)", self.channel.name,
                             terminal_safe(self.last_failure))
        if wall >= deadline:
            self._give_up(items, answer, f"still failing {self.policy.give_up_after / 3600:g} h after it was fired "
                                         f"(last: {answer.describe()})")
            return
        delay = min(self.policy.retry_delay(items[0].attempts, answer.retry_after), (deadline - wall) / 1000)
        for item in items:
            item.next_at = now + delay
        self.stats.retried += 1
        next_ms = wall + int(delay * 1000)
        self.unrecorded = Recording([self._outcome(i, "retrying", answer, wall, next_ms=next_ms,
                                                   reason=answer.describe(), summary=notice.key if summary else None)
                                     for i in items], [])
        self._record()

    def _give_up(self, items: list[Pending], answer: Answer | None, reason: str) -> None:
        wall = now_ms()
        records: list[Record] = []
        for item in items:
            records.append(self._outcome(item, "dead-lettered", answer, wall, reason=reason))
            records.append((self.settings.alerts_undelivered_topic, f"{self.channel.name}|{item.id}", item.raw,
                            dead_letter_headers(self.channel.name, self.channel.kind, reason, answer, item.attempts,
                                                wall)))
        self.stats.dead_lettered += len(items)
        self.log.warning("gave up on %s for %s: %s", terminal_safe(", ".join(i.id for i in items)), self.channel.name,
                         terminal_safe(reason))
        self._finish(items, records)

    def _finish(self, items: list[Pending], records: list[Record]) -> None:
        """Take these alerts out of the queue and record their outcomes with the offsets past them."""
        if items and self.held and items[0] is self.held[0]:
            self.held, self.held_since, self.summary_tried = [], None, False
        else:
            for item in items:
                self.pending.remove(item)
        self.unrecorded = Recording(records, items)
        self._record()

    # --- durability ---

    def _offsets(self) -> dict[int, int]:
        """Per partition, the offset the channel has finished everything before: its first alert still waiting,
        else how far it has read."""
        topic = self.settings.alerts_topic
        offsets = {p: self.reader.positions.get((topic, p), start) for p, start in self._start.items()}
        for item in [*self.held, *self.pending]:
            offsets[item.partition] = min(offsets.get(item.partition, item.offset), item.offset)
        return offsets

    def _record(self) -> None:
        recording = self.unrecorded
        if recording is None:
            return
        offsets = self._offsets()
        changed = [TopicPartition(self.settings.alerts_topic, p, o) for p, o in sorted(offsets.items())
                   if o != self._committed.get(p)]
        self.output.write(recording.records, changed, self.reader.client)  # Unavailable: again at the next step
        self._committed = offsets
        self.unrecorded = None

    def commit(self) -> None:
        """The offsets past alerts that were not this channel's (no outcome to record), now and then."""
        if self.unrecorded is None and self._started_reading() and self._offsets() != self._committed:
            self.unrecorded = Recording([], [])
            self._record()

    def _started_reading(self) -> bool:
        return bool(self._start) and self.reader.client is not None

    def _outcome(self, item: Pending, outcome: str, answer: Answer | None, at_ms: int, *, next_ms: int | None = None,
                 reason: str | None = None, summary: str | None = None) -> Record:
        alert = item.alert
        fired = epoch_ms(alert["fired_at"])
        published = alert.get("tick_published_at")
        since = epoch_ms(published) if published is not None else fired
        record = {"_id": f"{item.id}|{self.channel.name}|{at_ms}", "alert_id": item.id, "rule_id": alert["rule_id"],
                  "symbol": alert["symbol"], "channel": self.channel.name, "channel_kind": self.channel.kind,
                  "outcome": outcome, "attempt": item.attempts, "at": at_ms,
                  "status": answer.status if answer is not None else None,
                  "answer": answer.text if answer is not None and answer.text else None, "reason": reason,
                  "next_attempt_at": next_ms, "fired_at": fired,
                  "latency_ms": at_ms - since if outcome == "delivered" else None, "summary": summary}
        return (self.settings.alert_deliveries_topic, f"{self.channel.name}|{item.id}", self._encode(record), [])

    def _encode(self, record: dict[str, Any]) -> bytes:
        try:
            return self._deliveries.encode(record)
        except RegistryUnavailable as error:  # only before the schema is known (the warm-up at start)
            raise Unavailable(self.registry, error) from error

    def final_commit(self) -> None:
        if self.unrecorded is not None:
            self._record()
        self.commit()

    def finish(self) -> None:
        self.sender.close()

    def idle(self, seconds: float) -> None:
        self.output.poll(seconds)

    def clients(self) -> list[Any]:
        return [self.reader.client]


@dataclass
class Worker:
    """A channel's worker and the thread that runs it."""

    processor: ChannelWorker
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None


@dataclass
class RouterStats:
    undecodable: int = 0
    unknown: int = 0  # (alert, channel) given up on: no such channel


class NotifyProcessor(kafka.Processor):
    """The channels topic followed, one ChannelWorker started per channel (stopped when it is removed, started
    afresh when it changes), and the router: alerts naming a channel that does not exist are given up for it."""

    name = "notify"
    summary_every = 300.0

    def __init__(self, settings: Settings, options: NotifyOptions | None = None,
                 make_sender: Any = None) -> None:
        self.options = options or NotifyOptions()
        super().__init__(settings, log, 1.0)
        self.options.group = self.options.group or settings.notify_group
        self.make_sender = make_sender  # Channel -> Sender (a test's); None: the channel's own
        self.stats = RouterStats()
        self._alerts = AvroCodec(settings, settings.alerts_topic, "alert")
        self._deliveries = AvroCodec(settings, settings.alert_deliveries_topic, "alert_delivery")
        self._channels = AvroCodec(settings, settings.alert_channels_topic, "alert_channel")
        group = self.options.group
        self.channels_reader: Reader[tuple[str, Channel | None]] = Reader(
            settings, "notify-channels", [settings.alert_channels_topic],
            kafka.keyed_decoder(lambda value: self._channels.decode(value), make_channel, "channel", log),
            group=f"{group}-channels", watch=self.watch, registry=self.registry, config={"fetch.wait.max.ms": 100})
        self.router = self.member("notify", [settings.alerts_topic], group, self._unknown_channels,
                                  decode_value=lambda message: self._alerts.decode(message.value()),
                                  from_end=self.options.from_end,
                                  config={"isolation.level": "read_committed", "fetch.wait.max.ms": 100})
        self.output = kafka.TransactionalWriter(settings, "notify", group, self.watch, self.kafka)
        self.channels: dict[str, Channel] = {}
        self.workers: dict[str, Worker] = {}
        self.unrecorded: list[Record] = []  # dead letters for unknown channels, committed with the router's offsets
        self._batch: tuple[list[Record], list[TopicPartition], dict[int, int]] | None = None
        self._committed: dict[int, int] = {}
        self._initialized = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed and all(w.processor.closed for w in self.workers.values())

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value

    def summary(self) -> str:
        return "; ".join([f"router: {self.stats}", *(w.processor.summary() for w in self.workers.values())])

    # --- start ---

    def start(self) -> None:
        settings = self.settings
        if not self._initialized:
            wanted = {settings.alert_channels_topic, settings.alert_deliveries_topic,
                      settings.alerts_undelivered_topic, settings.alerts_topic}
            with self.talking_to_kafka("creating the notifier's topics: "):
                topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name in wanted])
            self.output.init()
            try:
                self._deliveries.encode(WARM_UP_DELIVERY)
            except RegistryUnavailable as error:
                raise Unavailable(self.registry, error) from error
            self._initialized = True
        with self.talking_to_kafka():
            self.channels_reader.catch_up(self._learn_channels)
        log.info("%d channel(s): %s", len(self.channels),
                 "; ".join(f"{c.name}: {c.describe()}" for c in self.channels.values()) or "none yet "
                 "(control channels add)")
        with self.talking_to_kafka():
            self.router.open()

    # --- channels ---

    def _learn_channels(self, changes: list[tuple[str, Channel | None]]) -> None:
        for name, channel in changes:
            old = self.channels.get(name)
            if channel is None:
                if old is not None:
                    log.info("channel %s removed: what it had not delivered yet is dropped", name)
                    self._stop_worker(name)
                    del self.channels[name]
                continue
            if old == channel:
                continue
            if old is not None:
                log.info("channel %s changed: it starts afresh", name)
                self._stop_worker(name)
            self.channels[name] = channel
            if old is None:
                log.info("channel %s: %s", name, channel.describe())
            self._start_worker(channel)

    def _start_worker(self, channel: Channel) -> None:
        sender = self.make_sender(channel) if self.make_sender is not None else None
        worker = Worker(ChannelWorker(self.settings, channel, self.options, sender))

        def run() -> None:
            try:
                worker.processor.run(stop=worker.stop.is_set)
            except Exception as error:  # noqa: BLE001 - said here, and the notifier stops on it (its next step)
                worker.error = error
                worker.processor.log.error("the worker of channel %s stopped: %s", channel.name, error)

        worker.thread = threading.Thread(target=run, name=worker.processor.name, daemon=True)
        self.workers[channel.name] = worker
        worker.thread.start()

    def _stop_worker(self, name: str, wait: float = 60.0) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None and worker.thread is not None:
            worker.stop.set()
            worker.thread.join(wait)

    # --- the router: alerts naming no known channel ---

    def _unknown_channels(self, record: dict[str, Any], message: Message) -> tuple[dict[str, Any], bytes] | None:
        names = record.get("channels") or ()
        return (record, message.value()) if any(name not in self.channels for name in names) else None

    def _route(self, alerts: list[tuple[dict[str, Any], bytes]]) -> None:
        # a channel added just before its rule fired may not have been read yet: read the topic to its end first
        self.channels_reader.catch_up(self._learn_channels, 10)
        for alert, raw in alerts:
            for name in alert.get("channels") or ():
                if name not in self.channels:
                    self._give_up(alert, raw, name)

    def _give_up(self, alert: dict[str, Any], raw: bytes, name: str) -> None:
        at = now_ms()
        reason = f"no channel {name!r} (removed, or never added: control channels list)"
        fired = epoch_ms(alert["fired_at"])
        outcome = {**WARM_UP_DELIVERY, "_id": f"{alert['_id']}|{name}|{at}", "alert_id": alert["_id"],
                   "rule_id": alert["rule_id"], "symbol": alert["symbol"], "channel": name, "channel_kind": "unknown",
                   "outcome": "dead-lettered", "attempt": 0, "at": at, "reason": reason, "fired_at": fired}
        self.unrecorded.append((self.settings.alert_deliveries_topic, f"{name}|{alert['_id']}",
                                self._deliveries.encode(outcome), []))
        self.unrecorded.append((self.settings.alerts_undelivered_topic, f"{name}|{alert['_id']}", raw,
                                dead_letter_headers(name, "unknown", reason, None, 0, at)))
        self.stats.unknown += 1
        log.warning("alert %s names no channel %r: given up for it (on %s)", terminal_safe(alert["_id"]), name,
                    self.settings.alerts_undelivered_topic)

    # --- the loop ---

    def step(self) -> None:
        for name, worker in list(self.workers.items()):
            if worker.error is not None:
                raise RuntimeError(f"the worker of channel {name} stopped: {worker.error}") from worker.error
        with self.talking_to_kafka():
            self.channels_reader.pump(self._learn_channels, timeout=0)
            try:
                self.router.pump(self._route, timeout=0.2)
            except (Unavailable, KafkaException, TimeoutError):
                self._back_to_commit()  # what was read since is read again
                raise
        self.watch.check(self.router.client)

    def _back_to_commit(self) -> None:
        """After a failed read: forget the dead letters not yet in a transaction and read again from where the last
        one (committed, or being committed) ends."""
        self.unrecorded.clear()
        until = self._batch[2] if self._batch is not None else self._committed
        self.router.seek({(self.settings.alerts_topic, p): o for p, o in until.items()})

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed[tp.partition] = tp.offset

    def revoked(self) -> None:
        try:
            self.commit()
        except (Unavailable, KafkaException) as error:
            log.info("no commit on revocation (%s); the next owner routes those alerts again", error)
            self.unrecorded.clear()
            self._batch = None
        self._committed.clear()

    def commit(self) -> None:
        """The router's dead letters and offsets, in one transaction."""
        if self._batch is None:
            topic = self.settings.alerts_topic
            offsets = {p: o for (t, p), o in self.router.positions.items() if t == topic}
            if not self.unrecorded and offsets == {p: o for p, o in self._committed.items() if p in offsets}:
                return
            self._batch = (self.unrecorded, [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
                           offsets)
            self.unrecorded = []
        records, offsets, positions = self._batch
        self.output.write(records, offsets, self.router.client)
        self._committed.update(positions)
        self._batch = None

    def finish(self) -> None:
        """Stop every channel's worker: each delivers nothing more, records what it has and closes."""
        for worker in self.workers.values():
            worker.stop.set()
        for worker in self.workers.values():
            if worker.thread is not None:
                worker.thread.join(60)

    def idle(self, seconds: float) -> None:
        self.output.poll(seconds)

    def clients(self) -> list[Any]:
        return [self.router.client, self.channels_reader.client]
