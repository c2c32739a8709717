"""The audit trail: one record per login, failed login, logout and change to accounts, tokens, rules and channels
(schemas/audit_event.avsc), on the topic `crypto-audit`, stored in crypto_db.audit by the accounts sink
(connectors/mongo-sink-accounts.json) and listed by `control audit`.

`event(...)` makes a record; `Trail` publishes them from a long-running process (the dashboard: never blocking
a request, delivered in the background, waiting through a Kafka outage in the producer's bounded queue);
`record(...)` publishes one and waits (the command line). `recent(...)` reads the store's copy.
"""

from __future__ import annotations

import getpass
import logging
import uuid
from typing import Any

from cryptopulse import kafka, store
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import DeliveryError
from cryptopulse.settings import Settings
from cryptopulse.text import terminal_safe
from cryptopulse.times import epoch_ms, iso_utc, now_ms

log = logging.getLogger(__name__)
EVENTS = ("login", "login_failed", "login_throttled", "logout", "user_added", "user_removed", "password_changed",
          "role_changed", "token_added", "token_removed", "rule_added", "rule_removed", "channel_added",
          "channel_removed")
AGENT_CHARS = 200
DETAIL_CHARS = 300


def event(kind: str, *, user: str | None, via: str, address: str | None = None, user_agent: str | None = None,
          target: str | None = None, detail: str | None = None, at: int | None = None) -> dict[str, Any]:
    """An audit record (what the client sent is cut short: a User-Agent of a megabyte stays a header's worth)."""
    if kind not in EVENTS:
        raise ValueError(f"unknown audit event {kind!r}")
    return {"_id": uuid.uuid4().hex, "at": now_ms() if at is None else at, "event": kind, "user": user, "via": via,
            "address": address, "user_agent": None if user_agent is None else user_agent[:AGENT_CHARS],
            "target": target, "detail": None if detail is None else detail[:DETAIL_CHARS]}


def operator() -> str:
    """`control` as the OS user who ran it: the actor of the command line's changes."""
    try:
        return f"control ({getpass.getuser()})"
    except (KeyError, OSError):
        return "control"


def record(settings: Settings, kind: str, *, target: str | None = None, detail: str | None = None,
           user: str | None = None, timeout: float = 30.0) -> None:
    """Publish one event of the command line and wait for it (DeliveryError when Kafka does not take it)."""
    from cryptopulse.accounts import ensure_topics

    ensure_topics(settings)
    made = event(kind, user=user, via=operator(), target=target, detail=detail)
    producer = kafka.producer(settings, "audit", {"message.timeout.ms": int(timeout * 1000), "log_level": 0,
                                                  "linger.ms": 0})
    errors: list[str] = []
    producer.produce(settings.audit_topic, key=made["_id"].encode(),
                     value=AvroCodec(settings, settings.audit_topic, "audit_event").encode(made),
                     on_delivery=lambda error, _message: errors.append(str(error)) if error else None)
    if producer.flush(timeout + 5) or errors:
        raise DeliveryError(f"the audit record was not delivered to {settings.audit_topic}: "
                            f"{errors[0] if errors else 'timed out'}")


class Trail:
    """The dashboard's audit producer: `add` never blocks (librdkafka's queue, bounded; `message.timeout.ms` 0: a
    record waits through an outage rather than being dropped); `close` flushes what is queued, for a few seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._codec: AvroCodec | None = None
        self.failed = 0

    def add(self, made: dict[str, Any]) -> None:
        try:
            if self._producer is None:
                self._producer = kafka.producer(self.settings, "webui-audit", {"log_level": 0})
                self._codec = AvroCodec(self.settings, self.settings.audit_topic, "audit_event")
            assert self._codec is not None
            self._producer.produce(self.settings.audit_topic, key=made["_id"].encode(),
                                   value=self._codec.encode(made), on_delivery=self._delivered)
            self._producer.poll(0)
        except Exception as error:  # noqa: BLE001 - a login must not fail because the trail cannot be written
            self.failed += 1
            log.warning("audit record %s (%s of %s) not published: %s", made["_id"], made["event"], made["user"],
                        error)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failed += 1
            log.warning("an audit record was not delivered: %s", error)

    def close(self, timeout: float = 5.0) -> None:
        if self._producer is not None:
            left = self._producer.flush(timeout)
            if left:
                log.warning("%d audit record(s) not delivered before the dashboard stopped", left)


def recent(settings: Settings, limit: int = 50, user: str | None = None, kind: str | None = None
           ) -> list[dict[str, Any]]:
    """The newest events from the store's copy (crypto_db.audit), newest first."""
    query: dict[str, Any] = {}
    if user:
        query["user"] = user
    if kind:
        query["event"] = kind
    with store.database(settings) as db:
        return list(db[store.AUDIT].find(query).sort("at", -1).limit(limit))


def render(events: list[dict[str, Any]]) -> str:
    """One line an event, oldest first, every value from a client made terminal-safe."""
    if not events:
        return "no audit events yet"
    lines = []
    for found in reversed(events):
        parts = [iso_utc(epoch_ms(found["at"])), f"{found['event']:16}", f"user={found.get('user') or '-'}",
                 f"via={found.get('via')}"]
        for name in ("address", "target", "detail", "user_agent"):
            if found.get(name):
                parts.append(f"{name}={found[name]}")
        lines.append(terminal_safe("  ".join(str(p) for p in parts)))
    return "\n".join(lines)
