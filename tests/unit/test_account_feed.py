"""The dashboard's account feed (webui/accounts.py) makes users, tokens and session ends from their records: each
topic's decoder is handed (key, record), like every table of the Kafka runtime (cryptopulse/kafka.py). The Avro
codec is replaced by JSON; no service is needed."""

from __future__ import annotations

import json
from typing import Any

import webui.accounts
from cryptopulse.accounts import ApiToken, User
from cryptopulse.settings import Settings
from webui.accounts import AccountBook, AccountFeed


class JsonCodec:
    def __init__(self, _settings: Settings, _topic: str, _schema: str) -> None:
        pass

    def decode(self, value: bytes) -> dict[str, Any]:
        return json.loads(value)


class Record:
    def __init__(self, topic: str, key: str, value: dict[str, Any] | None, offset: int = 0) -> None:
        self._topic, self._key, self._offset = topic, key, offset
        self._value = None if value is None else json.dumps(value).encode()

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return self._key.encode()

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def error(self) -> None:
        return None


def test_users_tokens_and_session_ends_are_made_from_their_records(monkeypatch):
    monkeypatch.setattr(webui.accounts, "AvroCodec", JsonCodec)
    settings = Settings()
    book = AccountBook()
    feed = AccountFeed(settings, book, make_consumer=lambda config: None)
    user = User("alice", "user", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", 1_000, 1_000)
    token = ApiToken("d3586d6a", "a script", "alice", "read", "ab" * 32, 1_000, expires=9_000)
    updates = [feed._decode(Record(settings.users_topic, "alice", user.to_record())),
               feed._decode(Record(settings.api_tokens_topic, token.id, token.to_record())),
               feed._decode(Record(settings.sessions_ended_topic, "s1", {"_id": "s1", "ended": 5_000}))]
    assert None not in updates
    feed.apply(updates)
    assert book.user("alice") == user and book.tokens[token.id] == token and book.ended == {"s1": 5_000}
    assert book.has_accounts
    feed.apply([feed._decode(Record(settings.users_topic, "alice", None, 1))])  # a tombstone removes it
    assert book.user("alice") is None
