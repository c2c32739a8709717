"""The alert processor: ticks from the prices topic evaluated against the rules of the rules topic; what fires
goes to the alerts topic (docs/alerts.md).

Delivery guarantees, and why they hold:
- Exactly once, by Kafka transactions. The alerts a batch of ticks fires, the new state of every (rule, symbol,
  source) it touched (compacted state topic) and the consumed offsets of the prices topic are committed in one
  transaction (`send_offsets_to_transaction`). Readers of the alerts topic read committed records only (the
  dashboard: librdkafka's default; the sink connector: `consumer.override.isolation.level`).
- A processor killed mid-transaction leaves it open; its restart, with the same transactional id (the group
  name: one instance per group), aborts it in `init_transactions`, reads the state topic back to its end and
  goes on from the committed offsets. The ticks after them are evaluated again against the state as of that
  commit, which fires the same alerts again (same `_id`) into a new transaction, and nothing twice.
- An aborted transaction (Kafka away too long) puts the book back to the state of the last commit and seeks
  the consumer back to its offsets: the same thing as a restart, without one.
- Besides: an alert's `_id` derives from the rule and the firing tick, and the book never evaluates a tick
  older than the last one it evaluated for that rule, symbol and source, so even a reader of uncommitted
  records would store each alert once.

Rules are read from the compacted rules topic from its start (before the first tick) and followed; a rule
watches ticks from its creation (event time) on, so a back-fill of history fires nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cryptopulse import topics
from cryptopulse.alert import Rule
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError, RegistryUnavailable
from cryptopulse.outage import Backoff, Outage, librdkafka_logger
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms, now_ms
from streams.alertbook import AlertBook, RuleState
from streams.processor import Unavailable, close_within, read_tick, rewind

log = logging.getLogger("streams.alerts")


WARM_UP_ALERT = {"_id": "-", "rule_id": "-", "symbol": "-", "source": "-", "kind": "above", "direction": "up",
                 "threshold": 1.0, "minutes": None, "price": 1.0, "ts": 0, "reference_price": None,
                 "reference_ts": None, "change_pct": None, "message": "", "fired_at": 0, "tick_published_at": None}
WARM_UP_STATE = RuleState("-", "-", "-", 0, 1.0, True)


@dataclass
class AlertOptions:
    group: str = field(default_factory=lambda: Settings().alerts_group)
    from_end: bool = True  # a group without committed offsets starts at the end of the prices topic
    commit_every: float = 1.0  # seconds between transactions when nothing fires (an alert commits at once)
    batch: int = 1000


@dataclass
class AlertStats:
    consumed: int = 0
    undecodable: int = 0
    rules: int = 0
    fired: int = 0
    transactions: int = 0
    aborted: int = 0


class AlertProcessor:
    """One transactional producer, one consumer of the prices topic, one follower of the rules topic."""

    def __init__(self, settings: Settings, options: AlertOptions | None = None) -> None:
        self.settings = settings
        self.options = options or AlertOptions()
        self.stats = AlertStats()
        self.book = AlertBook()
        self.ready = threading.Event()
        self.closed = False
        self._ticks = AvroCodec(settings, settings.prices_topic, "tick")
        self._rules = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
        self._alerts = AvroCodec(settings, settings.alerts_topic, "alert")
        self._states = AvroCodec(settings, settings.alerts_state_topic, "alert_state")
        self.kafka = Outage("Kafka", log)
        self.registry = Outage("the schema registry", log)
        quiet = {"logger": librdkafka_logger("streams-alerts"), "error_cb": self._on_kafka_error}
        self._producer = Producer({
            **quiet, "bootstrap.servers": settings.kafka_bootstrap, "transactional.id": self.options.group,
            "acks": "all", "enable.idempotence": True, "linger.ms": 5, "client.id": "cryptopulse-alerts",
        })
        self._rules_reader = Consumer({
            **quiet, "bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{self.options.group}-rules",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
        })
        self._consumer = Consumer({
            **quiet, "bootstrap.servers": settings.kafka_bootstrap, "group.id": self.options.group,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "isolation.level": "read_committed",
            "auto.offset.reset": "latest" if self.options.from_end else "earliest", "client.id": "cryptopulse-alerts",
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 3_000,
        })
        self._next: dict[int, int] = {}  # prices partition -> next offset to read
        self._committed: dict[int, int] = {}  # ... as of the last committed transaction
        self._snapshot: dict[str, RuleState] = {}
        self._in_txn = False
        self._committing = False  # a commit_transaction failed retriably: retry it before anything else
        self._dirty = False  # consumed or produced since the last commit
        self._initialized = False
        self._abort_pending = False

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN and not error.str().startswith("0/"):
            self.kafka.down(error.str())

    # --- start: the transactional id, the rules, the state ---

    def _start(self) -> None:
        if not self._initialized:
            try:
                self._producer.init_transactions(30)  # aborts what a killed predecessor left open
            except KafkaException as error:
                if error.args[0].fatal():
                    raise
                raise Unavailable(self.kafka, f"init_transactions: {error.args[0].str()}") from error
            self._initialized = True
            # the schemas registered (or looked up) now, so that producing an alert never waits for the registry
            self._encode(self._alerts, WARM_UP_ALERT)
            self._encode(self._states, WARM_UP_STATE.to_record())
        self._rules_reader.assign([TopicPartition(self.settings.alert_rules_topic, p, 0)
                                   for p in self._partitions(self.settings.alert_rules_topic)])
        self._catch_up_rules()
        self._load_state()

    def _partitions(self, topic: str) -> list[int]:
        try:
            metadata = self._rules_reader.list_topics(topic, timeout=10).topics[topic]
        except KafkaException as error:
            raise Unavailable(self.kafka, error.args[0].str()) from error
        if metadata.error is not None and metadata.error.retriable():
            raise Unavailable(self.kafka, metadata.error.str())
        if metadata.error is not None:
            raise ConfigError(f"topic {topic}: {metadata.error}; create it with `control topics create`")
        return list(metadata.partitions)

    def _catch_up_rules(self, timeout: float = 30.0) -> None:
        try:
            topics.consume_to_end(self._rules_reader, self._learn_rules, timeout)
        except KafkaException as error:
            raise Unavailable(self.kafka, error.args[0].str()) from error
        except TimeoutError as error:
            raise Unavailable(self.kafka, str(error)) from error
        self.stats.rules = len(self.book.rules)
        log.info("%d rule(s): %s", len(self.book.rules),
                 "; ".join(f"{r.id} {r.describe()}" for r in self.book.rules.values()) or "none yet")

    def _learn_rules(self, messages: list[Message]) -> None:
        for i, message in enumerate(messages):
            if message.error() is not None or message.key() is None:
                continue
            rule_id = message.key().decode(errors="replace")
            if message.value() is None:
                if rule_id in self.book.rules:
                    log.info("rule %s removed", rule_id)
                self.book.remove_rule(rule_id)
                continue
            try:
                rule = Rule.from_record(self._rules.decode(message.value()))
            except RegistryUnavailable as error:
                rewind(self._rules_reader, messages[i:])
                raise Unavailable(self.registry, error) from error
            except Exception as error:  # noqa: BLE001 - a bad rule record is skipped, loudly
                log.warning("rule record at offset %d skipped: %s", message.offset(), error)
                continue
            if self.book.rules.get(rule.id) != rule:
                log.info("rule %s: %s", rule.id, rule.describe())
            self.book.set_rule(rule)
        self.stats.rules = len(self.book.rules)

    def _load_state(self, timeout: float = 60.0) -> None:
        """The state as of the last committed transaction (read committed: an aborted one is not seen).

        Every record of the state topic is transactional, so its last offset is a commit marker that is never
        delivered: the end is where the consumer's position reaches the end offset, not a record's offset."""
        topic = self.settings.alerts_state_topic
        reader = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap,
                           "group.id": f"{self.options.group}-state", "enable.auto.commit": False,
                           "isolation.level": "read_committed",
                           "logger": librdkafka_logger("streams-alerts")})
        states: dict[str, RuleState] = {}
        try:
            partitions = [TopicPartition(topic, p, 0) for p in self._partitions(topic)]
            reader.assign(partitions)
            ends = {tp.partition: reader.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
            deadline = time.monotonic() + timeout
            while True:
                positions = {tp.partition: tp.offset for tp in reader.position(partitions)}
                if all(positions.get(p, -1) >= end or end == 0 for p, end in ends.items()):
                    break
                if time.monotonic() > deadline:
                    raise Unavailable(self.kafka, f"could not read {topic} to its end in {timeout:.0f}s")
                for message in reader.consume(1000, timeout=0.5):
                    if message.error() is not None or message.key() is None:
                        continue
                    key = message.key().decode(errors="replace")
                    if message.value() is None:
                        states.pop(key, None)
                        continue
                    try:
                        states[key] = RuleState.from_record(self._states.decode(message.value()))
                    except RegistryUnavailable as error:
                        raise Unavailable(self.registry, error) from error
                    except Exception as error:  # noqa: BLE001 - a bad state record: that rule starts afresh
                        log.warning("state record %s skipped: %s", key, error)
        except KafkaException as error:
            raise Unavailable(self.kafka, f"reading {topic}: {error.args[0].str()}") from error
        finally:
            reader.close()
        kept = {k: s for k, s in states.items() if s.rule_id in self.book.rules}
        self.book.restore(kept)
        self._snapshot = self.book.snapshot()
        log.info("state of %d (rule, symbol, source) read back", len(kept))

    # --- the prices topic ---

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                tp.offset = high if self.options.from_end else low
            self._next[tp.partition] = self._committed[tp.partition] = tp.offset
        consumer.assign(committed)
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in committed))
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.commit()
        except (Unavailable, KafkaException) as error:
            log.info("no commit on revocation (%s); the next owner evaluates those ticks again", error)
            with contextlib.suppress(Unavailable, KafkaException):
                self._abort()
        self._next.clear()
        self._committed.clear()
        consumer.unassign()

    def _apply(self, message: Message) -> None:
        tick = read_tick(self._ticks, message, self.registry, self.stats)
        self._next[message.partition()] = message.offset() + 1
        if tick is None:
            return
        symbol, source, ts, price, published = tick
        self.stats.consumed += 1
        self._dirty = True
        for alert in self.book.evaluate(symbol, source, ts, price, now_ms(),
                                        epoch_ms(published) if published is not None else None):
            self._produce(self.settings.alerts_topic, alert["_id"], self._encode(self._alerts, alert))
            self.stats.fired += 1
            log.info("alert %s: %s", alert["_id"], alert["message"])

    # --- transactions ---

    def _encode(self, codec: AvroCodec, record: dict) -> bytes:
        try:
            return codec.encode(record)
        except RegistryUnavailable as error:  # only before the schema is known
            raise Unavailable(self.registry, error) from error

    def _produce(self, topic: str, key: str, value: bytes | None) -> None:
        if not self._in_txn:
            self._producer.begin_transaction()
            self._in_txn = True
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def commit(self) -> None:
        """Commit the alerts, the changed states and the consumed offsets in one transaction."""
        if self._committing:
            self._commit_transaction()
            return
        if not self._dirty and not self._in_txn and not self.book.changed and not self.book.removed:
            return
        changed, removed = self.book.take_changes()
        for state in changed:
            self._produce(self.settings.alerts_state_topic, state.key, self._encode(self._states, state.to_record()))
        for key in removed:
            self._produce(self.settings.alerts_state_topic, key, None)
        if not self._in_txn:
            self._producer.begin_transaction()
            self._in_txn = True
        offsets = [TopicPartition(self.settings.prices_topic, p, n) for p, n in self._next.items()]
        try:
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
        except KafkaException as error:
            self._failed(error, "send_offsets_to_transaction")
        self._committing = True
        self._commit_transaction()

    def _commit_transaction(self) -> None:
        try:
            self._producer.commit_transaction(30)
        except KafkaException as error:
            self._failed(error, "commit_transaction")
        self._committing = self._in_txn = self._dirty = False
        self._committed = dict(self._next)
        self._snapshot = self.book.snapshot()
        self.stats.transactions += 1
        self.kafka.up()

    def _failed(self, error: KafkaException, what: str) -> None:
        kafka_error: KafkaError = error.args[0]
        if kafka_error.fatal():
            raise error  # fenced by a newer instance, or worse: stop; the supervisor (or `keep`) starts it again
        if kafka_error.txn_requires_abort():
            self._abort()
            raise Unavailable(self.kafka, f"{what}: {kafka_error.str()}; transaction aborted, evaluating again")
        raise Unavailable(self.kafka, f"{what}: {kafka_error.str()}; retrying")

    def _abort(self) -> None:
        """Go back to the last commit (its state, its offsets) and abort the open transaction; an abort Kafka
        could not take is tried again before anything else is produced."""
        self.book.restore(self._snapshot)
        self._committing = self._dirty = False
        for partition, offset in self._committed.items():
            self._next[partition] = offset
            with contextlib.suppress(KafkaException):  # not assigned any more: the next assignment starts there
                self._consumer.seek(TopicPartition(self.settings.prices_topic, partition, offset))
        if self._in_txn:
            self._abort_pending = True
            self._finish_abort()

    def _finish_abort(self) -> None:
        try:
            self._producer.abort_transaction(30)
        except KafkaException as error:
            if error.args[0].fatal():
                raise
            raise Unavailable(self.kafka, f"abort_transaction: {error.args[0].str()}") from error
        self.stats.aborted += 1
        self._abort_pending = self._in_txn = False

    # --- the loop ---

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Evaluate until `stop()`; Kafka or the registry going away never ends it (it waits, says so once)."""
        backoff = Backoff(0.5, 10.0)
        started = subscribed = False
        last_commit = last_summary = time.monotonic()
        try:
            while not stop():
                try:
                    if not started:
                        self._start()
                        started = True
                    if not subscribed:
                        self._consumer.subscribe([self.settings.prices_topic], on_assign=self._on_assign,
                                                 on_revoke=self._on_revoke)
                        subscribed = True
                    if self._abort_pending:
                        self._finish_abort()
                    if self._committing:
                        self.commit()
                    fired = self.stats.fired
                    self._step()
                    now = time.monotonic()
                    if self.stats.fired != fired or now - last_commit >= self.options.commit_every:
                        last_commit = now
                        self.commit()
                    if now - last_summary >= 60:
                        log.info("%s", self.stats)
                        last_summary = now
                    backoff.reset()
                except Unavailable as error:
                    error.outage.down(error.cause)
                    deadline = time.monotonic() + backoff.next()
                    while time.monotonic() < deadline and not stop():
                        self._producer.poll(0.1)
        finally:
            try:
                if started:
                    self.commit()
            except (Unavailable, KafkaException) as error:
                log.warning("stopping without a final commit (%s); the restart evaluates those ticks again", error)
            self.closed = close_within([self._consumer, self._rules_reader], 20.0)

    def _step(self) -> None:
        self._learn_rules(self._rules_reader.consume(1000, timeout=0))
        messages = self._consumer.consume(self.options.batch, timeout=0.2)
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    self.kafka.down(message.error().str())
                continue
            try:
                self._apply(message)
            except Unavailable:
                # the book may have moved past ticks whose alerts were not produced: back to the last commit
                self._abort()
                raise
