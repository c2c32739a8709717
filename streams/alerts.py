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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from cryptopulse import kafka
from cryptopulse.alert import Rule
from cryptopulse.alert_rules import make_rule
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.kafka import Reader, Unavailable
from cryptopulse.settings import Settings
from cryptopulse.tick import TickRead, tick_read
from cryptopulse.times import epoch_ms, now_ms
from streams.alertbook import AlertBook, RuleState

log = logging.getLogger("streams.alerts")


WARM_UP_ALERT = {"_id": "-", "rule_id": "-", "symbol": "-", "source": "-", "kind": "above", "direction": "up",
                 "threshold": 1.0, "minutes": None, "price": 1.0, "ts": 0, "reference_price": None,
                 "reference_ts": None, "change_pct": None, "message": "", "fired_at": 0, "tick_published_at": None,
                 "channels": []}
WARM_UP_STATE = RuleState("-", "-", "-", 0, 1.0, True)


@dataclass
class AlertOptions:
    group: str = ""  # "": the settings' group
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


# what the rules reader hands on: (rule id, the rule or None for a tombstone)
RuleChange = tuple[str, Rule | None]


class AlertProcessor(kafka.Processor):
    """One transactional producer, one reader of the prices topic (a member of the group), one reader of the rules
    topic, over an `AlertBook`."""

    name = "alerts"
    summary_every = 60.0

    def __init__(self, settings: Settings, options: AlertOptions | None = None) -> None:
        self.options = options or AlertOptions()
        super().__init__(settings, log, self.options.commit_every)
        self.options.group = self.options.group or settings.alerts_group
        self.stats = AlertStats()
        self.book = AlertBook()
        self._ticks = AvroCodec(settings, settings.prices_topic, "tick")
        self._rules = AvroCodec(settings, settings.alert_rules_topic, "alert_rule")
        self._alerts = AvroCodec(settings, settings.alerts_topic, "alert")
        self._states = AvroCodec(settings, settings.alerts_state_topic, "alert_state")
        self._make_producer = lambda: kafka.producer(settings, "alerts", {
            "transactional.id": self.options.group, "linger.ms": 5, "compression.type": "none",
            "message.timeout.ms": 60_000,  # within the transaction's timeout, as librdkafka requires
        }, self.watch)
        self._producer = self._make_producer()
        self.rules = Reader(settings, "alerts-rules", [settings.alert_rules_topic],
                            kafka.keyed_decoder(lambda value: self._rules.decode(value), make_rule, "rule", log),
                            group=f"{self.options.group}-rules", watch=self.watch, registry=self.registry,
                            config={"fetch.wait.max.ms": 100})
        self.prices = self.member("alerts", [settings.prices_topic], self.options.group, _tick,
                                  decode_value=lambda message: self._ticks.decode(message.value()),
                                  from_end=self.options.from_end, config={"isolation.level": "read_committed"})
        self._committed: dict[int, int] = {}  # prices partition -> offset as of the last committed transaction
        self._snapshot: dict[str, RuleState] = {}
        self._in_txn = False
        self._committing = False  # a commit_transaction failed retriably: retry it before anything else
        self._dirty = False  # consumed or produced since the last commit
        self._initialized = False
        self._abort_pending = False
        self._init_needed = False  # a new producer (the old one gave no answer): init_transactions first
        self._fired = False  # fired in this step: commit at once

    def summary(self) -> str:
        return str(self.stats)

    # --- start: the transactional id, the rules, the state ---

    def start(self) -> None:
        if not self._initialized:
            self._init_transactions()
            self._initialized = True
            # the schemas registered (or looked up) now, so that producing an alert never waits for the registry
            self._encode(self._alerts, WARM_UP_ALERT)
            self._encode(self._states, WARM_UP_STATE.to_record())
        with self.talking_to_kafka():
            self.rules.catch_up(self._learn_rules)
        log.info("%d rule(s): %s", len(self.book.rules),
                 "; ".join(f"{r.id} {r.describe()}" for r in self.book.rules.values()) or "none yet")
        self._load_state()
        with self.talking_to_kafka():
            self.prices.open()

    def _learn_rules(self, changes: list[RuleChange]) -> None:
        for rule_id, rule in changes:
            if rule is None:
                if rule_id in self.book.rules:
                    log.info("rule %s removed", rule_id)
                self.book.remove_rule(rule_id)
                continue
            if self.book.rules.get(rule.id) != rule:
                log.info("rule %s: %s", rule.id, rule.describe())
            self.book.set_rule(rule)
        self.stats.rules = len(self.book.rules)

    def _load_state(self, timeout: float = 60.0) -> None:
        """The state as of the last committed transaction (read committed: an aborted one is not seen)."""
        states: dict[str, RuleState] = {}

        def keep(records: list[tuple[str, RuleState | None]]) -> None:
            for key, state in records:
                if state is None:
                    states.pop(key, None)
                else:
                    states[key] = state

        state_record = kafka.keyed_decoder(lambda value: self._states.decode(value),
                                           lambda _key, record: RuleState.from_record(record), "state record", log)
        reader = Reader(self.settings, "alerts-state", [self.settings.alerts_state_topic], state_record,
                        group=f"{self.options.group}-state", watch=self.watch, registry=self.registry,
                        config={"isolation.level": "read_committed"})
        try:
            with self.talking_to_kafka(f"reading {self.settings.alerts_state_topic}: "):
                reader.catch_up(keep, timeout)
        finally:
            reader.close()
        kept = {k: s for k, s in states.items() if s.rule_id in self.book.rules}
        self.book.restore(kept)
        self._snapshot = self.book.snapshot()
        log.info("state of %d (rule, symbol, source) read back", len(kept))

    # --- the prices topic ---

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed[tp.partition] = tp.offset

    def revoked(self) -> None:
        try:
            self.commit()
        except (Unavailable, KafkaException) as error:
            log.info("no commit on revocation (%s); the next owner evaluates those ticks again", error)
            with contextlib.suppress(Unavailable, KafkaException):
                self._abort()
        self._committed.clear()

    def _evaluate(self, ticks: list[TickRead]) -> None:
        for symbol, source, ts, price, published in ticks:
            self.stats.consumed += 1
            self._dirty = True
            for alert in self.book.evaluate(symbol, source, ts, price, now_ms(),
                                            epoch_ms(published) if published is not None else None):
                self._produce(self.settings.alerts_topic, alert["_id"], self._encode(self._alerts, alert))
                self.stats.fired += 1
                self._fired = True
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
        kafka.produce(self._producer, topic, value, key.encode())
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
        offsets = [TopicPartition(self.settings.prices_topic, p, n) for p, n in self._next().items()]
        try:
            if offsets:
                metadata = self.prices.client.consumer_group_metadata()
                self._transactional("send_offsets_to_transaction",
                                    lambda: self._producer.send_offsets_to_transaction(offsets, metadata, 30))
        except KafkaException as error:
            self._failed(error, "send_offsets_to_transaction")
        self._committing = True
        self._commit_transaction()

    def _next(self) -> dict[int, int]:
        topic = self.settings.prices_topic
        return {p: offset for (t, p), offset in self.prices.positions.items() if t == topic}

    def _commit_transaction(self) -> None:
        try:
            self._transactional("commit_transaction", lambda: self._producer.commit_transaction(30))
        except KafkaException as error:
            self._failed(error, "commit_transaction")
        self._committing = self._in_txn = self._dirty = False
        self._committed = self._next()
        self._snapshot = self.book.snapshot()
        self.stats.transactions += 1
        self.watch.alive()

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
        self.prices.seek({(self.settings.prices_topic, p): offset for p, offset in self._committed.items()})
        if self._in_txn:
            self._abort_pending = True
            self._finish_abort()

    def _finish_abort(self) -> None:
        with self.talking_to_kafka("abort_transaction: "):
            self._transactional("abort_transaction", lambda: self._producer.abort_transaction(30))
        self.stats.aborted += 1
        self._abort_pending = self._in_txn = False

    def _init_transactions(self) -> None:
        """Aborts what a killed predecessor (or a producer given up) left open under the transactional id."""
        with self.talking_to_kafka("init_transactions: "):
            self._transactional("init_transactions", lambda: self._producer.init_transactions(30))
        self._init_needed = False

    def _transactional(self, what: str, call: Callable[[], object]) -> None:
        """A transactional call, waited for at most kafka.TRANSACTION_CALL_BOUND: librdkafka can block in one far
        past its timeout once a killed broker took the coordinator with it. Then the producer is given up: a new one
        takes over the transactional id (its init aborts the open transaction) and the processor goes back to its
        last commit, as after any abort."""
        if kafka.answered_within(kafka.TRANSACTION_CALL_BOUND, call, f"alerts: {what}"):
            return
        log.warning("%s did not answer in %.0f s: a new producer takes over the transactional id %s (the open "
                    "transaction is aborted; evaluating again from the last commit)", what,
                    kafka.TRANSACTION_CALL_BOUND, self.options.group)
        self.book.restore(self._snapshot)
        self._committing = self._dirty = self._in_txn = self._abort_pending = False
        self.prices.seek({(self.settings.prices_topic, p): offset for p, offset in self._committed.items()})
        self._producer = self._make_producer()
        self._init_needed = True
        raise Unavailable(self.kafka, f"{what}: no answer; a new producer takes over")

    # --- the loop (kafka.Processor.run) ---

    def step(self) -> None:
        if self._init_needed:
            self._init_transactions()
        if self._abort_pending:
            self._finish_abort()
        if self._committing:
            self.commit()
        self._fired = False
        with self.talking_to_kafka():
            self.rules.pump(self._learn_rules, timeout=0)
            try:
                self.prices.pump(self._evaluate, timeout=0.2, most=self.options.batch)
            except Unavailable:
                # the book may have moved past ticks whose alerts were not produced: back to the last commit
                self._abort()
                raise
        self.watch.check(self.prices.client)

    def commit_due(self, since_last: float) -> bool:
        return self._fired or since_last >= self.commit_every

    def idle(self, seconds: float) -> None:
        self._producer.poll(seconds)

    def clients(self) -> list[Any]:
        return [self.prices.client, self.rules.client]


def _tick(record: dict[str, Any], _message: Message) -> TickRead:
    return tick_read(record)
