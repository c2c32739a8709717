"""The accounts every dashboard process knows: the users, API tokens and ended sessions topics, followed.

`AccountBook` is pure (what the topics said, the latest record per key); `AccountFeed` is a `Follower` thread
(cryptopulse/kafka.py) that reads the three compacted topics from their beginning, in every process (no consumer
group: each worker of `webui serve --processes N` has the whole book), and goes on following them, so an account
added, a password changed or a logout is seen by every process within a poll. Until its first read to the end
(`ready`), the dashboard does not know whether accounts exist: webui/auth.py then refuses every client that is not
on this machine (it fails closed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptopulse import accounts
from cryptopulse.accounts import ApiToken, User
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError
from cryptopulse.kafka import BEGINNING, Follower, KafkaWatch, Reader, keyed_decoder
from cryptopulse.outage import Backoff
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.health import Dependencies

log = logging.getLogger(__name__)


@dataclass
class AccountBook:
    """Accounts, tokens and ended sessions by key, as their topics last said."""

    users: dict[str, User] = field(default_factory=dict)  # active accounts only
    tokens: dict[str, ApiToken] = field(default_factory=dict)  # not removed
    ended: dict[str, int] = field(default_factory=dict)  # session id -> when it ended (epoch ms)

    @property
    def has_accounts(self) -> bool:
        return bool(self.users)

    def user(self, name: str) -> User | None:
        return self.users.get(name)

    def set_user(self, name: str, user: User | None) -> None:
        if user is None or not user.active:
            self.users.pop(name, None)
        else:
            self.users[name] = user

    def set_token(self, ident: str, token: ApiToken | None) -> None:
        if token is None or token.removed is not None:
            self.tokens.pop(ident, None)
        else:
            self.tokens[ident] = token

    def end_session(self, session_id: str, at: int) -> None:
        self.ended[session_id] = at

    def forget_ended_before(self, at: int) -> None:
        """Session ends older than the longest session: no cookie they ended is valid anyway."""
        for key in [k for k, when in self.ended.items() if when < at]:
            del self.ended[key]


Update = tuple[str, str, Any]  # (topic, key, the record made, or None)


class AccountFeed(Follower[Update]):
    """Follows the accounts topics into an `AccountBook` (on its own thread; a dict assignment is atomic, so the
    event loop reads the book without a lock). `ready` is set once all three were read to their end."""

    def __init__(self, settings: Settings, book: AccountBook, deps: Dependencies | None = None, *,
                 make_consumer: Callable[[dict[str, Any]], Any] | None = None, backoff_cap: float = 10.0) -> None:
        self.settings = settings
        self.book = book
        self.ready = threading.Event()
        deps = deps or Dependencies()
        names = {settings.users_topic: ("user", lambda _key, record: accounts.User.from_record(record)),
                 settings.api_tokens_topic: ("api_token", lambda _key, record: accounts.ApiToken.from_record(record)),
                 settings.sessions_ended_topic: ("session_end", lambda _key, record: epoch_ms(record["ended"]))}
        self._decoders = {topic: keyed_decoder(self._codec(topic, schema), make, f"{topic} record", log)
                          for topic, (schema, make) in names.items()}
        who = "accounts"
        reader = Reader(settings, "webui-accounts", list(names), self._decode, start=BEGINNING,
                        make_consumer=make_consumer,
                        watch=KafkaWatch(deps.kafka.reporter(who), backoff=Backoff(min(0.5, backoff_cap), backoff_cap)),
                        registry=deps.registry.reporter(who))
        super().__init__("webui-accounts", reader, self.apply, prepare=self._load, backoff_cap=backoff_cap,
                         most=500, logger=log)

    def _codec(self, topic: str, schema: str) -> Callable[[bytes], dict[str, Any]]:
        made: list[AvroCodec] = []

        def decode(value: bytes) -> dict[str, Any]:
            if not made:
                made.append(AvroCodec(self.settings, topic, schema))
            return made[0].decode(value)

        return decode

    def _decode(self, message: Any) -> Update | None:
        found = self._decoders[message.topic()](message)
        return None if found is None else (message.topic(), *found)

    def _load(self) -> None:
        """The topics made if missing (a first start), then read to their end: the book is complete."""
        try:
            accounts.ensure_topics(self.settings)
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - Kafka away: the follower tries again after a backoff
            raise ConnectionError(f"the accounts topics could not be made: {error}") from error
        self.reader.catch_up(self.apply, timeout=30)
        self.ready.set()
        log.info("accounts read: %d account(s), %d token(s)%s", len(self.book.users), len(self.book.tokens),
                 "" if self.book.users else " (local mode: no login until an account exists)")

    def apply(self, updates: list[Update]) -> None:
        book, settings = self.book, self.settings
        for topic, key, value in updates:
            if topic == settings.users_topic:
                before = book.has_accounts
                book.set_user(key, value)
                if book.has_accounts != before and self.ready.is_set():
                    log.warning("accounts %s: %s", "exist now" if book.has_accounts else "all removed",
                                "every visitor must log in" if book.has_accounts else "back to local mode")
            elif topic == settings.api_tokens_topic:
                book.set_token(key, value)
            elif value is not None:
                book.end_session(key, value)
