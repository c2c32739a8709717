"""The one Kafka runtime every long-running part stands on: the roll-up, the alert processor, the notifier, the
dashboard's followers, the producer and the control plane's readers.

    clients      `producer`, `consumer`, `admin`: made one way (address, client id, rate-limited librdkafka
                 log, the error callback of a `KafkaWatch`), with the few settings each role adds
    outages      `KafkaWatch`: the one rule for "is Kafka there" (librdkafka's own words, records, a probe)
    reading      `Reader`: a consumer that keeps its positions; reads a topic to its end as of now
                 (`catch_up`), then follows it (`pump`); one rule for a registry outage
    writing      `TransactionalWriter`: records and a consumer's offsets in one transaction, through outages
    running      `Processor`: the loop every stream processor runs (start, step, back off while something is
                 away, a last commit, close within a bound), `run_until_signalled` around it

The registry rule, everywhere: a record the registry cannot decode *now* (down, timing out) is not the record's
fault. The reader hands on what it decoded before it, seeks back to it, and raises `Unavailable`; whoever runs
the reader waits (the outage said once) and reads that same record again. A record that is not Avro, or names a
schema the registry does not know, is the record's fault: `decode` returns None for it (counted, skipped).

Processing stays out of this module: the roll-up (`streams/processor.py` over `CandleBook`) and the alert
processor (`streams/alerts.py` over `AlertBook`) are handlers over pure books; the notifier (`streams/notify.py`)
runs one processor per channel; the dashboard's live feed, views and alert feed are readers run by `Follower`
threads (webui/).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from cryptopulse.errors import ConfigError, DeliveryError, RegistryUnavailable
from cryptopulse.outage import Backoff, Outage, librdkafka_logger
from cryptopulse.settings import Settings
from cryptopulse.text import terminal_safe

log = logging.getLogger(__name__)

T = TypeVar("T")

# librdkafka errors that say a broker cannot be reached (as opposed to a bad request or a missing topic)
CONNECTIVITY = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                          KafkaError._TIMED_OUT, KafkaError._AUTHENTICATION, KafkaError._SSL})

# A producer whose every record counts: written to every in-sync replica, never twice, never given up while the
# broker is away (it waits in the bounded local queue), batched a little.
RELIABLE = {"acks": "all", "enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4",
            "message.timeout.ms": 0}
# A member of a processing group: offsets committed by hand, and a partition of a killed member taken over after
# ~10 s rather than the default 45 s.
GROUP_MEMBER = {"enable.auto.commit": False, "enable.auto.offset.store": False,
                "session.timeout.ms": 10_000, "heartbeat.interval.ms": 3_000}


# Records a back-fill publishes carry this header: its history's candles and ticks (BACKFILL), and the coarser
# candles it rolled up from them itself (BACKFILL_ROLLUP). The roll-ups leave them alone, the cascade takes the first
# as children of the buckets it has open (docs/rollups.md), the dashboard's live feed does not push them.
ORIGIN_HEADER = "cryptopulse-origin"
BACKFILL = b"backfill"
BACKFILL_ROLLUP = b"backfill-rollup"
# A back-fill's ticks also carry their event time (epoch ms, decimal): published all at once, "now", they are what a
# reader of the last hour by publish time (the dashboard's ticks view) finds, and it skips the older ones unread.
EVENT_TIME_HEADER = "cryptopulse-ts"


def header(message: Message, name: str) -> bytes | None:
    """The value of a record's header `name`, or None."""
    headers = message.headers()
    if headers:
        for key, value in headers:
            if key == name:
                return value
    return None


def origin(message: Message) -> bytes | None:
    """The ORIGIN_HEADER of a record, or None."""
    return header(message, ORIGIN_HEADER)


def partition_for(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC32 of the key) gives a keyed record:
    candles are produced with it for their symbol, so a symbol's candles of every interval share one partition
    number, the one its ticks are on when the counts agree, and one process of a group holds all of them."""
    return zlib.crc32(key.encode()) % partitions


# --- outages ---

class Reporter(Protocol):
    """Where an outage is told: `cryptopulse.outage.Outage`, or one reporter's view of a dashboard dependency."""

    def down(self, reason: object) -> object: ...

    def up(self) -> object: ...


def error_text(error: object) -> str:
    """A Kafka error in its own words (librdkafka's string, not the wrapper's repr)."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    return error.str() if isinstance(error, KafkaError) else (str(error) or type(error).__name__)


def is_fatal(error: KafkaException) -> bool:
    return bool(error.args) and isinstance(error.args[0], KafkaError) and error.args[0].fatal()


class KafkaWatch:
    """Whether one client reaches the brokers: the one outage detector.

    librdkafka reconnects by itself and reports trouble through its error callback, many times a second while
    a broker is away, but never says when it is back. So:
    - "every broker is down" (`_ALL_BROKERS_DOWN`) is an outage at once, except the "0/N brokers are down" it
      also says right after a reconnect;
    - any other connectivity error, or a call that raised, only raises a doubt: `check(client)` (called by the
      client's loop each turn) settles it with a metadata request when one is due, again after a backoff while
      it fails;
    - a record, a delivery or a commit (`alive`) says the broker is there.
    The reporter hears `down` once per outage and `up` once when it ends (it may be told more often: an `Outage`
    logs only the first).
    """

    def __init__(self, reporter: Reporter, clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None, timeout: float = 2.0) -> None:
        self.reporter = reporter
        self.clock = clock
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.timeout = timeout
        self.doubt: str | None = None  # the error that raised the doubt, until a probe or a record settles it
        self.last_error: str | None = None  # the latest error, said by librdkafka or by a failed call
        self.is_down = False
        self._next_probe = 0.0

    def on_error(self, error: KafkaError) -> None:
        """A client's `error_cb` (called from inside poll/flush, on the client's thread)."""
        self.last_error = text = error.str()
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if not text.startswith("0/"):
                self.down(text)
        elif error.code() in CONNECTIVITY or error.fatal():
            self.doubt = self.doubt or text

    def failed(self, error: object) -> None:
        """A call on the client raised: doubt until a probe or a record settles it."""
        self.last_error = error_text(error)
        self.doubt = self.doubt or self.last_error

    def down(self, reason: object) -> None:
        self.last_error = error_text(reason)
        self.doubt = self.doubt or self.last_error
        self.is_down = True
        self.reporter.down(self.last_error)

    def alive(self) -> None:
        """A record, a delivery or a commit: the broker is there."""
        if self.doubt is not None or self.is_down:
            self.doubt = None
            self.backoff.reset()
            self._next_probe = 0.0
            self.is_down = False
            self.reporter.up()

    def check(self, client: Any) -> None:
        """Settle a doubt with `client.list_topics` when a probe is due; otherwise return at once."""
        if self.doubt is None or self.clock() < self._next_probe:
            return
        try:
            client.list_topics(timeout=self.timeout)
        except Exception as error:  # noqa: BLE001 - KafkaException, or a client that is closing
            # librdkafka's own words ("Connect to ... failed: Connection refused") say more than the probe's
            self.is_down = True
            self.reporter.down(self.last_error or error_text(error))
            self._next_probe = self.clock() + self.backoff.next()
            return
        self.alive()


class Unavailable(Exception):
    """Kafka or the registry did not answer: wait and try again; nothing was skipped or committed past."""

    def __init__(self, outage: Reporter, cause: object) -> None:
        super().__init__(str(cause))
        self.outage = outage
        self.cause = cause


# --- clients ---

def client_config(settings: Settings, name: str, config: dict[str, Any] | None = None,
                  watch: KafkaWatch | None = None) -> dict[str, Any]:
    """A client's configuration: the brokers, `client.id` cryptopulse-<name>, librdkafka's lines through a
    rate-limited logger (`librdkafka.<name>`), the watch's error callback, then `config`."""
    made: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "client.id": f"cryptopulse-{name}",
                            "logger": librdkafka_logger(name)}
    if watch is not None:
        made["error_cb"] = watch.on_error
    return {**made, **(config or {})}


def producer(settings: Settings, name: str, config: dict[str, Any] | None = None,
             watch: KafkaWatch | None = None) -> Producer:
    """A producer: `RELIABLE` unless `config` says otherwise."""
    return Producer(client_config(settings, name, {**RELIABLE, **(config or {})}, watch))


def consumer(settings: Settings, name: str, group: str, config: dict[str, Any] | None = None,
             watch: KafkaWatch | None = None) -> Consumer:
    """A consumer in `group` that commits nothing by itself unless `config` says so."""
    return Consumer(client_config(settings, name, {"group.id": group, "enable.auto.commit": False, **(config or {})},
                                  watch))


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})  # errors are ours to say


def partitions_of(client: Any, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partitions. Kafka away: KafkaException (retriable); no such topic: ConfigError."""
    metadata = client.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None and metadata.error.retriable():
        raise KafkaException(metadata.error)
    if metadata.error is not None or not metadata.partitions:
        raise ConfigError(f"topic {topic}: {metadata.error or 'no partitions'}; create it with "
                          "`control topics create` or `control deploy-connectors`")
    return sorted(metadata.partitions)


def offsets_at(client: Any, topic: str, ts_ms: int, timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """Per partition of `topic`, the first offset whose record was published at or after `ts_ms` (its end when none
    was): where to start reading to see everything published since."""
    wanted = [TopicPartition(topic, p, ts_ms) for p in partitions_of(client, topic, timeout)]
    found = client.offsets_for_times(wanted, timeout=timeout)
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_END for tp in found}


def rewind(client: Consumer, messages: Iterable[Message]) -> None:
    """Seek back to the first of `messages` per partition, so they are read again."""
    first: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            key = (message.topic(), message.partition())
            first[key] = min(first.get(key, message.offset()), message.offset())
    for (topic, partition), offset in first.items():
        client.seek(TopicPartition(topic, partition, offset))


def close_within(clients: Iterable[Any], seconds: float) -> bool:
    """Close the consumers, waiting at most `seconds`.

    librdkafka's close (leave the group, destroy) can block for good when the group coordinator misbehaves
    (confluent-kafka-python#1667). A stop that has committed already loses nothing by not waiting longer.
    """
    done = threading.Event()
    clients = [c for c in clients if c is not None]

    def close() -> None:
        for client in clients:
            with contextlib.suppress(RuntimeError):  # closed already
                client.close()
        done.set()

    threading.Thread(target=close, daemon=True, name="close-consumers").start()
    return done.wait(seconds)


# --- reading ---

BEGINNING, END = "beginning", "end"


@dataclass
class Stats:
    """What a reader did: records decoded and handed on, and records skipped as undecodable."""

    read: int = 0
    undecodable: int = 0


class Counts(Protocol):
    undecodable: int


class Reader(Generic[T]):
    """One consumer over one or more topics that keeps its positions, so a new consumer (after a failure) or a
    rebalance carries on from the record after the last one handed on: nothing twice, nothing lost.

    - Assigned (no `subscribe`): every partition of `topics`, from `start` (BEGINNING, END, or
      {(topic, partition): offset}), or from the kept positions. `catch_up` reads to the end as of now: a
      compacted topic read back as state.
    - Subscribed: a member of `group`; `on_assign(reader, partitions)` may set each partition's offset (else the
      kept position, else `start`), `on_revoke(reader, partitions)` hears what goes.

    `decode(message)` turns a record into what the caller wants: None skips it (a bad record, counted when
    `decode` says so), RegistryUnavailable stops the batch before it (see the module's registry rule). Kafka's
    own failures come out as KafkaException; the owner decides (a processor: `Unavailable`; a follower: a new
    consumer after a backoff).
    """

    def __init__(self, settings: Settings, name: str, topics: list[str], decode: Callable[[Message], T | None], *,
                 group: str | None = None, subscribe: bool = False, start: Any = BEGINNING,
                 config: dict[str, Any] | None = None, watch: KafkaWatch | None = None,
                 registry: Reporter | None = None, make_consumer: Callable[[dict[str, Any]], Any] | None = None,
                 on_assign: Callable[[Reader[T], list[TopicPartition]], None] | None = None,
                 on_revoke: Callable[[Reader[T], list[TopicPartition]], None] | None = None) -> None:
        self.settings = settings
        self.name = name
        self.topics = topics
        self.decode = decode
        self.group = group or f"cryptopulse-{name}"
        self.subscribe = subscribe
        self.start = start
        self.watch = watch or KafkaWatch(Outage("Kafka", log))
        self.registry = registry or Outage("the schema registry", log)
        self.positions: dict[tuple[str, int], int] = {}  # next offset to hand on, per (topic, partition)
        # where each partition's end was last met (librdkafka's partition EOF event): the end of a partition whose
        # last offsets hold nothing to deliver (transaction markers, aborted records) is known only from it, as
        # position() stays unknown until a record is delivered
        self.ends_met: dict[tuple[str, int], int] = {}
        self.stats = Stats()
        self.assigned = False
        self.client: Any = None
        self._config = config or {}
        self._make = make_consumer
        self._on_assign, self._on_revoke = on_assign, on_revoke

    # the consumer

    def open(self) -> None:
        """A consumer, subscribed or assigned at the kept positions (else `start`); again after `close`."""
        if self.client is not None:
            return
        config = client_config(self.settings, self.name, {"group.id": self.group, "enable.auto.commit": False,
                                                          "enable.partition.eof": True, **self._config}, self.watch)
        self.client = self._make(config) if self._make else Consumer(config)
        if self.subscribe:
            self.client.subscribe(self.topics, on_assign=self._assign_cb, on_revoke=self._revoke_cb)
            return
        try:
            if isinstance(self.start, dict):  # the partitions are given
                wanted = sorted({*self.start, *self.positions})
            else:
                wanted = [(topic, p) for topic in self.topics for p in partitions_of(self.client, topic)]
            partitions = [TopicPartition(topic, p, self._position(topic, p)) for topic, p in wanted]
            for tp in partitions:  # the end, resolved now: a position is known at once (catch_up counts on it)
                if tp.offset == OFFSET_END:
                    tp.offset = self.client.get_watermark_offsets(tp, timeout=10)[1]
            self.client.assign(partitions)
        except Exception:
            self.close()
            raise
        self.assigned = True

    def close(self, timeout: float = 20.0) -> bool:
        client, self.client, self.assigned = self.client, None, False
        self.ends_met.clear()  # a new consumer meets the ends again
        return client is None or close_within([client], timeout)

    def _position(self, topic: str, partition: int) -> int:
        kept = self.positions.get((topic, partition))
        if kept is not None:
            return kept
        if isinstance(self.start, dict):
            return self.start.get((topic, partition), OFFSET_BEGINNING)
        return OFFSET_END if self.start == END else OFFSET_BEGINNING

    def _assign_cb(self, client: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = self._position(tp.topic, tp.partition)
            if tp.offset == OFFSET_END:  # resolved now: once assigned, every record published from now on comes
                with contextlib.suppress(KafkaException):  # (librdkafka would resolve it at the first fetch)
                    tp.offset = client.get_watermark_offsets(tp, timeout=5)[1]
        if self._on_assign is not None:
            self._on_assign(self, partitions)
        client.assign(partitions)
        for tp in partitions:
            if tp.offset >= 0:
                self.positions[(tp.topic, tp.partition)] = tp.offset
        self.assigned = bool(partitions)

    def _revoke_cb(self, client: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = False
        if self._on_revoke is not None:
            self._on_revoke(self, partitions)
        with contextlib.suppress(KafkaException, RuntimeError):
            client.unassign()

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Read again from these offsets (a processor going back to its last commit, or to a record that must be
        processed again)."""
        for (topic, partition), offset in offsets.items():
            self.positions[(topic, partition)] = offset
            self.ends_met.pop((topic, partition), None)
            if self.client is not None:
                with contextlib.suppress(KafkaException):  # not assigned any more: the next assignment starts there
                    self.client.seek(TopicPartition(topic, partition, offset))

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop the kept positions of these partitions (a processor: its next owner starts at the commit)."""
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
            self.ends_met.pop((tp.topic, tp.partition), None)

    def assignment(self) -> list[TopicPartition]:
        return list(self.client.assignment()) if self.client is not None else []

    # reading

    def fetch(self, timeout: float = 0.5, most: int = 1000) -> list[Message]:
        """The records already fetched, waiting at most `timeout` for the first (poll returns with the first
        record; consume(n, timeout) would wait for n records or the timeout). Errors other than a partition's
        end go to the watch."""
        self.open()
        first = self.client.poll(timeout)
        messages = [first, *self.client.consume(most - 1, timeout=0)] if first is not None else []
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                self.ends_met[(message.topic(), message.partition())] = message.offset()
            else:
                self.watch.failed(error)
        if records:
            self.watch.alive()
        return records

    def pump(self, handle: Callable[[list[T]], None], timeout: float = 0.5, most: int = 1000) -> int:
        """Read what is there, decode it, and hand the decoded records to `handle` in one batch; returns how many
        records were read. The registry away: what was decoded before is handed on, the reader seeks back to the
        record that needed it, and Unavailable(registry) is raised."""
        return self.handle(self.fetch(timeout, most), handle)

    def handle(self, messages: list[Message], handle: Callable[[list[T]], None]) -> int:
        """`pump` for records fetched already."""
        batch: list[T] = []
        positions, decode = self.positions, self.decode  # the roll-up's hot path: a record costs what it must
        for i, message in enumerate(messages):
            key = (message.topic(), message.partition())
            offset = message.offset()
            if offset < positions.get(key, -1):
                continue  # handed on already (read again after a rebalance or a seek)
            try:
                item = decode(message)
            except RegistryUnavailable as error:
                if batch:
                    handle(batch)
                rewind(self.client, messages[i:])
                self.ends_met.clear()  # read again: no end is met before they are
                raise Unavailable(self.registry, f"{error}; waiting before {message.topic()}[{message.partition()}]"
                                                 f"@{message.offset()}, which is read again") from error
            positions[key] = offset + 1
            if item is not None:
                batch.append(item)
        if batch or messages:
            self.registry.up()
        if batch:
            self.stats.read += len(batch)
            handle(batch)
        return len(messages)

    def ends(self) -> dict[tuple[str, int], int]:
        """The end offset of every assigned partition, as of now."""
        return {(tp.topic, tp.partition): self.client.get_watermark_offsets(tp, timeout=10)[1]
                for tp in self.assignment()}

    def catch_up(self, handle: Callable[[list[T]], None], timeout: float = 30.0, most: int = 1000) -> None:
        """Hand on every record up to each assigned partition's end as of now (a compacted topic read back as
        state), in batches of at most `most`. The end is where the consumer's position reaches the end offset, not a
        record's offset: a topic written in transactions ends with a commit marker that is never delivered; and when
        nothing at all is left to deliver (markers or aborted records only, or a start at the end) the position stays
        unknown, so the partition's end event says it instead. TimeoutError when the end is not reached within
        `timeout`."""
        self.open()
        ends = self.ends()
        deadline = time.monotonic() + timeout
        while True:
            positions = {(tp.topic, tp.partition): tp.offset for tp in self.client.position(self.assignment())}
            if all(max(positions.get(key, -1), self.ends_met.get(key, -1)) >= end or end == 0
                   for key, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {', '.join(self.topics)} to its end in {timeout:.0f} s")
            self.pump(handle, timeout=0.5, most=most)


def decoder(decode_value: Callable[[Message], dict[str, Any]], stats: Counts, what: str, logger: logging.Logger = log,
            make: Callable[[dict[str, Any], Message], T | None] = lambda record, _message: record,
            skip: Callable[[Message], bool] | None = None) -> Callable[[Message], T | None]:
    """A Reader's `decode` for Avro values (`decode_value(message)`: an AvroCodec's decode of its value): `make(record,
    message)`, or
    None for a record that is not Avro or names an unknown schema (counted in `stats.undecodable`, logged the first
    time and every 1000th); a tombstone, or a record `skip` says to leave alone (looked at before decoding), is
    None. RegistryUnavailable passes through (the registry rule)."""

    def decode(message: Message) -> T | None:
        value = message.value()
        if value is None or (skip is not None and skip(message)):
            return None
        try:
            return make(decode_value(message), message)
        except RegistryUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - a bad record is counted and skipped
            stats.undecodable += 1
            if stats.undecodable == 1 or stats.undecodable % 1000 == 0:
                logger.warning("%s at %s[%d]@%d skipped (%d so far): %s", what, message.topic(), message.partition(),
                               message.offset(), stats.undecodable, error)
            return None

    return decode


def keyed_decoder(decode_value: Callable[[bytes], dict[str, Any]], make: Callable[[str, dict[str, Any]], T], what: str,
                  logger: logging.Logger = log) -> Callable[[Message], tuple[str, T | None] | None]:
    """A Reader's `decode` for a compacted topic read back as state: (key, make(key, record)), or (key, None) for a
    tombstone; None for a record without a key, or one that cannot be read or made (`definition`: logged, skipped,
    never a traceback). RegistryUnavailable passes through (the registry rule)."""

    def decode(message: Message) -> tuple[str, T | None] | None:
        change = definition(message, decode_value, make)
        if change is not None and isinstance(change[1], Bad):
            logger.warning("%s %s at offset %d skipped: %s", what, terminal_safe(change[0]), message.offset(),
                           change[1].reason)
            return None
        return change  # type: ignore[return-value] - a Bad was handled above

    return decode


class Follower(Generic[T]):
    """A thread that runs a `Reader` until stopped, through any outage, handing each batch to `deliver`.

    `prepare()` (once, until it works; Unavailable or anything else: again after a backoff) runs before the
    reader opens: a view loads its window there. Then it follows: the registry away makes it wait and read the
    same record again; a poll that raised, or Kafka away, waits with a backoff (the watch settles the doubt); a
    consumer that cannot go on (a fatal error, a bug) is closed and a new one carries on from the kept positions.
    Each kind of failure is logged once. `turn()` runs after every poll (trimming, status)."""

    def __init__(self, name: str, reader: Reader[T], deliver: Callable[[list[T]], None], *,
                 prepare: Callable[[], None] | None = None, turn: Callable[[], None] | None = None,
                 backoff_cap: float = 10.0, poll_timeout: float = 0.5, most: int = 1000,
                 logger: logging.Logger = log) -> None:
        self.name = name
        self.reader = reader
        self.deliver = deliver
        self.prepare = prepare
        self.turn = turn
        self.backoff_cap = backoff_cap
        self.poll_timeout = poll_timeout
        self.most = most
        self.log = logger
        self.prepared = prepare is None
        self.failure: str | None = None  # the latest failure of its own (a step that raised)
        self.last_poll = 0.0  # time.monotonic() of the latest poll
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._said: set[str] = set()

    def backoff(self) -> Backoff:
        return Backoff(min(0.5, self.backoff_cap), self.backoff_cap)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def assigned(self) -> bool:
        """Its reader has partitions: every record published from now on comes."""
        return self.reader.assigned

    @property
    def last_error(self) -> str | None:
        """The latest failure, its own or librdkafka's, for /healthz."""
        return self.failure or self.reader.watch.last_error

    def _run(self) -> None:
        backoff = self.backoff()
        while not self.stopping.is_set():
            try:
                if not self.prepared:
                    self.prepare()
                    self.prepared = True
                    backoff.reset()
                self._follow()
                return  # stopped
            except Unavailable as error:
                if self.stopping.is_set():
                    return  # a failure after the stop was asked for is nobody's concern (nor a log line)
                error.outage.down(error.cause)
                self.failure = error_text(error.cause)
            except Exception as error:  # noqa: BLE001 - never fatal: a new consumer, after a backoff
                if self.stopping.is_set():
                    return
                self.failure = error_text(error)
                said = f"{type(error).__name__}: {self.failure}"
                if said not in self._said:  # once per kind of failure, not once per retry; a traceback if a bug
                    self._said.add(said)
                    self.log.warning("%s failed (%s); it goes on where it stopped", self.name, self.failure,
                                     exc_info=not isinstance(error, KafkaException | ConfigError))
            self.reader.close(5.0)
            self.stopping.wait(backoff.next())

    def _follow(self) -> None:
        reader = self.reader
        backoff = self.backoff()
        try:
            reader.open()
            while not self.stopping.is_set():
                self.last_poll = time.monotonic()
                try:
                    reader.pump(self.deliver, self.poll_timeout, self.most)
                except Unavailable as error:  # the registry: the same record again, a little later
                    error.outage.down(error.cause)
                    self.failure = error_text(error.cause)
                    if self.turn is not None:
                        self.turn()
                    self.stopping.wait(backoff.next())
                    continue
                except KafkaException as error:
                    if is_fatal(error):
                        raise  # this consumer cannot go on: a new one, from the kept positions
                    reader.watch.failed(error)
                    self.stopping.wait(backoff.next())
                else:
                    backoff.reset()
                reader.watch.check(reader.client)
                if self.turn is not None:
                    self.turn()
        finally:
            reader.close(5.0)


@dataclass(frozen=True)
class Bad:
    """A record of a compacted definitions topic that no reader takes, and why (terminal-safe)."""

    reason: str


def definition(message: Message, decode_value: Callable[[bytes], dict[str, Any]],
               make: Callable[[str, dict[str, Any]], T]) -> tuple[str, T | Bad | None] | None:
    """One record of a compacted topic of definitions (rules, channels): (key, make(key, record)), (key, None) for a
    tombstone, (key, Bad(why)) for a value no reader takes (not Avro, an unknown schema, refused by `make`), None
    without a key. RegistryUnavailable passes through (the registry rule)."""
    if message.key() is None:
        return None
    key = message.key().decode(errors="replace")
    if message.value() is None:
        return key, None
    try:
        return key, make(key, decode_value(message.value()))
    except RegistryUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - a bad record: left out with its reason, never a traceback
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return key, Bad(terminal_safe(text)[:200])


class Table(Follower[tuple[str, Any]], Generic[T]):
    """A compacted topic kept as {key: value} in memory, as a Kafka Streams table is: read from its start, then
    followed (a `Follower` thread through any outage). `make(key, record)` builds a value from an Avro record; one it
    refuses (ConfigError, or any error reading it: not Avro, an unknown schema) is left out, counted in `bad`
    (key -> why, for whoever lists the table) and logged once. A tombstone removes its key. `wait_for(offset)`
    lets a writer read its own write."""

    def __init__(self, settings: Settings, name: str, topic: str, decode_value: Callable[[bytes], dict[str, Any]],
                 make: Callable[[str, dict[str, Any]], T], *, logger: logging.Logger = log,
                 make_consumer: Callable[[dict[str, Any]], Any] | None = None, backoff_cap: float = 10.0,
                 watch: KafkaWatch | None = None, registry: Reporter | None = None) -> None:
        self.values: dict[str, T] = {}
        self.bad: dict[str, str] = {}
        self.ready = threading.Event()
        self._applied: dict[int, int] = {}  # partition -> next offset applied
        self._changed = threading.Condition()
        self._make, self._decode_value = make, decode_value
        reader = Reader(settings, name, [topic], self._decode, group=f"cryptopulse-{name}-table", watch=watch,
                        registry=registry, make_consumer=make_consumer)
        super().__init__(name, reader, self._apply, turn=self._turn, backoff_cap=backoff_cap, logger=logger)

    def _decode(self, message: Message) -> tuple[str, Any] | None:
        change = definition(message, self._decode_value, self._make)
        if change is not None and isinstance(change[1], Bad) and self.bad.get(change[0]) != change[1].reason:
            self.log.warning("%s: the record under %s at offset %d is left out: %s", self.name,
                             terminal_safe(change[0]), message.offset(), change[1].reason)
        return change

    def _apply(self, changes: list[tuple[str, Any]]) -> None:
        with self._changed:
            for key, value in changes:
                self.values.pop(key, None)
                self.bad.pop(key, None)
                if isinstance(value, Bad):
                    self.bad[key] = value.reason
                elif value is not None:
                    self.values[key] = value
            self._note_positions()
            self._changed.notify_all()

    def _turn(self) -> None:
        if not self.ready.is_set() and self.reader.client is not None:
            try:
                ends = self.reader.ends()
            except KafkaException:
                return
            positions = {key: self.reader.positions.get(key, 0) for key in ends}
            if all(positions[key] >= end for key, end in ends.items()):
                self.ready.set()
        with self._changed:
            self._note_positions()
            self._changed.notify_all()

    def _note_positions(self) -> None:
        for (_, partition), offset in self.reader.positions.items():
            self._applied[partition] = offset

    def wait_for(self, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the record at `offset` of `partition` is applied (a writer reading its own write)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._applied.get(partition, 0) > offset, timeout)


# --- running ---

class Processor:
    """The loop every stream processor runs; a subclass says what a start, a step and a commit are.

    `run(stop)` starts (again after a failure), steps and commits every `commit_every` seconds until `stop()`.
    Kafka or the registry going away never ends it: a step that raises Unavailable (after seeking back to what
    must be read again) makes it say so once, wait with a backoff (while `idle` lets the producer deliver), and
    go on. On the way out it commits what it can and closes its consumers within 20 s.
    """

    name = "processor"
    summary_every = 30.0

    def __init__(self, settings: Settings, logger: logging.Logger, commit_every: float = 1.0) -> None:
        self.settings = settings
        self.log = logger
        self.commit_every = commit_every
        self.stats: Counts = Stats()
        self.undelivered = 0  # records the producer gave up on (`on_delivery`): no commit goes past them
        self.kafka = Outage("Kafka", logger)
        self.registry = Outage("the schema registry", logger)
        self.watch = KafkaWatch(self.kafka)
        self.ready = threading.Event()
        self.closed = False  # run() ended and its Kafka consumers closed
        self.started = False

    def member(self, name: str, topics: list[str], group: str, make: Callable[[dict[str, Any], Message], T | None],
               *, decode_value: Callable[[Message], dict[str, Any]], from_end: bool,
               config: dict[str, Any] | None = None, skip: Callable[[Message], bool] | None = None) -> Reader[T]:
        """A reader of `topics` as a member of `group`, decoding with `decode_value(message)` (an AvroCodec's decode
        of the value, its codec looked up at each record so a test can swap it) into `make(record, message)`,
        leaving alone what `skip` says (before decoding);
        undecodable records counted in `stats.undecodable`. Each assigned partition starts at the group's commit
        (`committed_or`), then `assigned` hears it; `revoked` hears what goes, whose kept positions are then dropped
        (the next owner starts at the commit)."""

        def on_assign(reader: Reader[T], partitions: list[TopicPartition]) -> None:
            committed = committed_or(reader.client, partitions, from_end)
            for tp, given in zip(committed, partitions, strict=True):
                given.offset = tp.offset
            self.assigned(committed)
            self.log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in committed))
            self.ready.set()

        def on_revoke(reader: Reader[T], partitions: list[TopicPartition]) -> None:
            self.revoked()
            reader.forget(partitions)

        decode = decoder(decode_value, self.stats,
                         f"undecodable record of {', '.join(topics)}", self.log, make, skip)
        return Reader(self.settings, name, topics, decode,
                      group=group, subscribe=True, watch=self.watch, registry=self.registry,
                      config={**GROUP_MEMBER, "auto.offset.reset": "latest" if from_end else "earliest",
                              **(config or {})},
                      on_assign=on_assign, on_revoke=on_revoke)

    # what a subclass says

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions of the member reader were assigned, each at the offset it starts from."""

    def revoked(self) -> None:
        """Partitions of the member reader are taken away (a rebalance): commit what can be, forget the rest."""

    def start(self) -> None:
        """Before the first step, and again after a failure until it works (Unavailable: try again later)."""

    def step(self) -> None:
        """One batch: read, process, publish."""
        raise NotImplementedError

    def commit(self) -> None:
        """Make what was processed durable (Unavailable: try again later)."""

    def finish(self) -> None:
        """On the way out, before the last commit."""

    def idle(self, seconds: float) -> None:
        """While waiting out an outage: let the producer deliver (and librdkafka reconnect)."""
        time.sleep(seconds)

    def final_commit(self) -> None:
        """The commit on the way out (a subclass may wait longer for its producer)."""
        self.commit()

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        """The producer's delivery report: a record it gave up on is counted and said; `all_delivered` then stops
        every commit (a restart of the processor reads its input again from the last one)."""
        if error is not None:
            self.undelivered += 1
            self.log.error("%s: a record could not be delivered: %s", self.name, error)

    def all_delivered(self, what: str) -> None:
        """DeliveryError when the producer gave up on any record: a commit past it would lose it."""
        if self.undelivered:
            raise DeliveryError(f"{self.undelivered} {what} could not be delivered; not committing")

    def clients(self) -> list[Any]:
        """The consumers to close at the end."""
        return []

    @contextlib.contextmanager
    def talking_to_kafka(self, what: str = "") -> Iterator[None]:
        """Kafka not answering (a KafkaException that is not fatal, a read that timed out) is `Unavailable`: wait
        and try again. A fatal error (fenced, say) ends the run."""
        try:
            yield
        except KafkaException as error:
            if is_fatal(error):
                raise
            raise Unavailable(self.kafka, f"{what}{error_text(error)}") from error
        except TimeoutError as error:
            raise Unavailable(self.kafka, f"{what}{error}") from error

    def summary(self) -> str:
        return ""

    # the loop

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        backoff = Backoff(0.5, 10.0)
        last_commit = last_summary = time.monotonic()
        try:
            while not stop():
                try:
                    if not self.started:
                        self.start()
                        self.started = True
                    self.step()
                    now = time.monotonic()
                    if self.commit_due(now - last_commit):
                        last_commit = now
                        self.commit()
                    if now - last_summary >= self.summary_every:
                        self.log.info("%s", self.summary())
                        last_summary = now
                    backoff.reset()
                except Unavailable as error:
                    error.outage.down(error.cause)
                    deadline = time.monotonic() + backoff.next()
                    while time.monotonic() < deadline and not stop():
                        self.idle(0.1)
        finally:
            try:
                self.finish()
                if self.started:
                    self.final_commit()
            except (Unavailable, KafkaException) as error:
                self.log.warning("stopping without a final commit (%s); the restart goes on from the last one",
                                 error_text(error))
            self.closed = close_within(self.clients(), 20.0)
            if not self.closed:
                self.log.warning("the Kafka consumers did not close within 20 s (everything was committed already)")

    def commit_due(self, since_last: float) -> bool:
        return since_last >= self.commit_every


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes, **kwargs: Any) -> None:
    """Queue one record; while librdkafka's queue is full, serve deliveries and try again (backpressure)."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:
            producer.poll(0.1)


Record = tuple[str, str, bytes | None, list[tuple[str, bytes]]]  # topic, key, value, headers


TRANSACTION_CALL_BOUND = 45.0  # the longest a transactional call is waited for (each is given a 30 s timeout)


def answered_within(seconds: float, call: Callable[[], object], name: str) -> bool:
    """Run `call()` on a thread of its own and wait at most `seconds`: True when it returned (its exception is
    raised here), False when it did not answer. For librdkafka's transactional calls, which can block far past
    their timeout once the coordinator is gone (confluentinc/librdkafka#3779, #5456): the caller then gives the
    producer up (the call is left to itself) and a new one takes over the transactional id."""
    outcome: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        return False
    if outcome:
        raise outcome[0]
    return True


class TransactionalWriter:
    """Records and a consumer's offsets written together, all or nothing, by one transactional producer: what a
    processor did with some input, and how far it has read it, become durable at once.

    `write(records, offsets, consumer)` begins a transaction, produces the records, sends the offsets for the
    consumer's group and commits. Kafka away (a retriable error): `Unavailable`, and the caller calls `write` again
    with the same list, which resumes where it failed (a commit is retried, as librdkafka asks); when Kafka says the
    transaction must be aborted, it is, and the next `write` starts it again. Fatal (fenced by a newer instance with
    the same transactional id): the KafkaException itself, which ends the run. `init()` first: it aborts what a
    killed predecessor with the same transactional id left open.

    A transaction still failing `replace_after` seconds after its first failure, or a call that does not return
    within `call_bound` (librdkafka can lose its coordinator for good when the broker is killed mid-commit, and then
    ignore the call's timeout: confluentinc/librdkafka#3779, #5456, #5511), is handed to
    a new producer of the same transactional id, whose `init_transactions` aborts the open one; the next `write`
    then starts the batch again. Nothing is doubled: the aborted records are never read by read_committed readers.
    """

    def __init__(self, settings: Settings, name: str, transactional_id: str, watch: KafkaWatch, outage: Reporter,
                 config: dict[str, Any] | None = None, replace_after: float = 45.0,
                 call_bound: float = TRANSACTION_CALL_BOUND) -> None:
        # a short retry backoff: right after a commit the coordinator answers CONCURRENT_TRANSACTIONS until its
        # markers are written, and librdkafka's default 100 ms wait made every transaction take 100 ms (measured:
        # 7-10 ms with 5)
        self._make = lambda: producer(settings, name, {"transactional.id": transactional_id, "linger.ms": 0,
                                                       "compression.type": "none", "message.timeout.ms": 60_000,
                                                       "retry.backoff.ms": 5, "retry.backoff.max.ms": 100,
                                                       **(config or {})}, watch)
        self.producer = self._make()
        self.name = transactional_id
        self.watch = watch
        self.outage = outage
        self.replace_after = replace_after
        self.call_bound = call_bound  # the longest a transactional call is waited for (its own timeout is 30 s)
        self.transactions = 0
        self.replaced = 0
        self._batch: list[Record] | None = None  # the records of the open transaction
        self._offsets_sent = False
        self._abort_needed = False
        self._init_needed = False  # a replacement producer: init_transactions before anything else
        self._failing_since: float | None = None  # monotonic time of the first failure of the current write

    def init(self, timeout: float = 30.0) -> None:
        self._call("init_transactions", lambda: self.producer.init_transactions(timeout))
        self._init_needed = False

    def write(self, records: list[Record], offsets: list[TopicPartition], consumer: Any | None,
              timeout: float = 30.0) -> None:
        if self._failing_since is not None and time.monotonic() - self._failing_since > self.replace_after:
            self._replace()
        if self._init_needed:
            self.init(timeout)
        if self._abort_needed or (self._batch is not None and self._batch is not records):
            self._call("abort_transaction", self._abort)
        if self._batch is None:
            self._call("begin_transaction", self.producer.begin_transaction)
            self._batch, self._offsets_sent = records, not offsets
            for topic, key, value, headers in records:
                produce(self.producer, topic, value, key.encode(), headers=headers or None)
        if not self._offsets_sent:
            self._call("send_offsets_to_transaction", lambda: self.producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), timeout))
            self._offsets_sent = True
        self._call("commit_transaction", lambda: self.producer.commit_transaction(timeout))
        self._batch = None
        self._failing_since = None
        self.transactions += 1
        self.watch.alive()

    def _bounded(self, what: str, call: Callable[[], object]) -> None:
        """`call()` within `call_bound` seconds (`answered_within`); past it, a new producer takes over at the next
        `write`."""
        if not answered_within(self.call_bound, call, f"{self.name}: {what}"):
            self._failing_since = float("-inf")  # replaced at the next write
            raise Unavailable(self.outage, f"{what}: no answer in {self.call_bound:.0f} s (its coordinator lost); "
                                           "a new producer takes over the transactional id")

    def _replace(self) -> None:
        log.warning("%s: a transaction failing since %s; a new producer takes over its transactional id (the open "
                    "transaction is aborted, its records written again)", self.name,
                    "a call that never answered" if self._failing_since == float("-inf") else
                    f"{time.monotonic() - (self._failing_since or time.monotonic()):.0f} s")
        self.producer = self._make()  # the old one is dropped: its epoch is fenced by the new one's init
        self.replaced += 1
        self._batch, self._offsets_sent, self._abort_needed = None, False, False
        self._init_needed = True
        self._failing_since = time.monotonic()  # the next replacement, if any, a bound later

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._STATE:  # no transaction open: nothing to abort
                raise
        self._batch, self._abort_needed = None, False

    def _call(self, what: str, call: Callable[[], object]) -> None:
        try:
            if what == "begin_transaction":
                call()  # local: never waits on a broker
            else:
                self._bounded(what, call)
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.fatal():
                raise
            if error.txn_requires_abort() or not error.retriable():
                self._abort_needed = True
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            raise Unavailable(self.outage, f"{what}: {error.str()}") from exception


def committed_or(client: Any, partitions: list[TopicPartition], from_end: bool) -> list[TopicPartition]:
    """Each partition at the group's committed offset, or where a group without one starts (its end with
    `from_end`, else its beginning), resolved now and committed: once assigned, every record published from then
    on is read, by this member or by whichever takes over (a restart before the first commit included)."""
    committed = client.committed(partitions, timeout=30)
    starts = []
    for tp in committed:
        if tp.offset == OFFSET_INVALID or tp.offset < 0:
            low, high = client.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            tp.offset = high if from_end else low
            starts.append(TopicPartition(tp.topic, tp.partition, tp.offset))
    if starts:
        client.commit(offsets=starts, asynchronous=False)
    return committed


FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


def worth_a_restart(error: BaseException) -> bool:
    """An error after which a new processor (new clients, state read back, from the last commit) goes on, as a
    restarted process would: records that were not delivered (nothing was committed past them), or a producer
    that cannot go on (librdkafka's fatal idempotence errors: a broker that lost or reused a producer id after an
    unclean restart answers "out of order sequence number"). Not a fenced producer: a newer instance has taken
    over, and this one must end."""
    if isinstance(error, DeliveryError):
        return True
    return isinstance(error, KafkaException) and is_fatal(error) and error.args[0].code() not in FENCED


def run_until_signalled(*makers: Callable[[], Processor]) -> int:
    """Run the processors `makers` make until SIGINT/SIGTERM, when each commits what it has done and stops; one line
    each at the end, and a non-zero exit when one ended on an error, for whoever restarts the process (the
    supervisor, `./run demo`, compose). Several run side by side, one thread each; an error in one stops them all,
    except one `worth_a_restart`: that processor is made again (after a backoff) and goes on from its last commit.
    """
    stopping: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        stopping.append(number)
        # if the stop itself hangs, the log shows where: every thread's stack after 60 s
        faulthandler.dump_traceback_later(60, exit=False)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    failed: list[str] = []
    running = [make() for make in makers]  # a processor that cannot be made ends the command before any runs

    def stop() -> bool:
        return bool(stopping) or bool(failed)

    def run(n: int) -> None:
        backoff = Backoff(1.0, 30.0)
        while True:
            processor = running[n]
            try:
                processor.run(stop=stop)
                processor.log.info("%s stopped: %s", processor.name, processor.summary())
                return
            except Exception as error:  # noqa: BLE001 - one clear line, and a non-zero exit for whoever restarts it
                if not worth_a_restart(error) or stop():
                    processor.log.error("%s stopped: %s", processor.name, error_text(error))
                    failed.append(processor.name)
                    return
                wait = backoff.next()
                processor.log.error("%s stopped: %s; a new one goes on from the last commit in %.0f s",
                                    processor.name, error_text(error), wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not stop():
                time.sleep(0.1)
            if stop():
                return
            try:
                running[n] = makers[n]()
            except Exception as error:  # noqa: BLE001 - as above
                processor.log.error("%s could not be made again: %s", processor.name, error_text(error))
                failed.append(processor.name)
                return

    threads = [threading.Thread(target=run, args=(n,), name=p.name) for n, p in enumerate(running)]
    for thread in threads[1:]:
        thread.start()
    run(0)
    while any(t.is_alive() for t in threads[1:]):
        for thread in threads[1:]:
            thread.join(0.2)  # short joins: the main thread keeps taking signals
    code = 1 if failed else 0
    if not all(p.closed for p in running):  # a Kafka client stuck in close would also block the interpreter's exit
        logging.shutdown()
        os._exit(code)
    return code
