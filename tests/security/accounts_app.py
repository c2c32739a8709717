"""The dashboard app with accounts, in-process and without services: a book of accounts and tokens given by the
test (what webui/accounts.py would read from Kafka), rules kept in memory in place of the rules topic, and the
audit trail collected in a list."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptopulse import alert_rules
from cryptopulse.accounts import HASHER, ApiToken, User, new_token
from cryptopulse.alert import Rule
from cryptopulse.settings import Settings
from webui.app import create_app
from webui.state import State, state

PASSWORD = "correct horse battery"
OUTSIDE = ("203.0.113.9", 40000)  # a client on another machine
LOCAL = ("127.0.0.1", 40000)
HOST = {"Host": "dash.example.com"}
_HASH = HASHER.hash(PASSWORD)  # once: argon2 is slow on purpose


@dataclass
class RulesTopic:
    """The rules topic and the table the dashboard keeps of it (kafka.Table), in memory: what the page lists from
    (`values`, `bad`, `ready`, `wait_for`), and alert_rules.publish writing into it."""

    rules: dict[str, Rule] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.ready.set()

    @property
    def values(self) -> dict[str, Rule]:
        return self.rules

    def publish(self, _settings: Any, key: str, rule: Rule | None, _timeout: float = 30.0) -> tuple[int, int]:
        if rule is None:
            self.rules.pop(key, None)
        else:
            self.rules[key] = rule
        return 0, len(self.rules)

    def wait_for(self, _partition: int, _offset: int, _timeout: float) -> bool:
        return True

    def stop(self, _timeout: float = 1.0) -> None:
        pass


@dataclass
class ChannelsTable:
    """No channels: the table the dashboard keeps of the channels topic, in memory."""

    values: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.ready.set()

    def stop(self, _timeout: float = 1.0) -> None:
        pass


class Trail(list):
    def add(self, made: dict[str, Any]) -> None:
        self.append(made)

    def close(self, timeout: float = 5.0) -> None:
        pass


@dataclass
class Board:
    app: Any
    shared: State
    rules: RulesTopic
    trail: Trail
    tokens: dict[str, str]  # name -> the token's text


def board(tmp: Path, monkeypatch: Any, users: dict[str, str] | None = None, **overrides: Any) -> Board:
    """The app, with `users` {name: role} (default alice and bob users, root an admin, vic a viewer) and tokens
    alice-read, alice-write, vic-write, expired."""
    users = {"alice": "user", "bob": "user", "root": "admin", "vic": "viewer"} if users is None else users
    topic = RulesTopic()
    monkeypatch.setattr(alert_rules, "publish", topic.publish)
    overrides = {"allowed_hosts": ("dash.example.com",), "secret_file": str(tmp / "secret"), **overrides}
    app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                     start_consumer=False, views=False, probe_seconds=0, **overrides)
    shared = state(app)
    shared.rules, shared.channels = topic, ChannelsTable()  # type: ignore[assignment]
    trail = Trail()
    shared.trail = trail  # type: ignore[assignment]
    for name, role in users.items():
        shared.book.set_user(name, User(name, role, _HASH, 0, 0))
    texts = {}
    for label, user, scope, lifetime in (("alice-read", "alice", "read", None), ("alice-write", "alice", "write", None),
                                         ("vic-write", "vic", "write", None)):
        if user in users:
            token, texts[label] = new_token(label, user, scope, lifetime)
            shared.book.set_token(token.id, token)
    if "alice" in users:
        token, texts["expired"] = new_token("old", "alice", "write", 1000, now=0)
        shared.book.set_token(token.id, token)
    return Board(app, shared, topic, trail, texts)


async def log_in(client: Any, name: str, password: str = PASSWORD, client_at: tuple[str, int] = OUTSIDE,
                 headers: dict[str, str] | None = None) -> Any:
    """The login form, as a browser fills it (GET the page for its CSRF field, POST it back)."""
    page = await client.get("/login", headers={**HOST, **(headers or {})}, scope_base={"client": client_at})
    csrf = re.search(r'name="csrf" value="([^"]+)"', await page.get_data(as_text=True)).group(1)
    return await client.post("/login", headers={**HOST, **(headers or {})}, scope_base={"client": client_at},
                             form={"name": name, "password": password, "csrf": csrf, "next": "/chart"})


async def page_csrf(client: Any, client_at: tuple[str, int] = OUTSIDE) -> str:
    page = await client.get("/chart", headers=HOST, scope_base={"client": client_at})
    return re.search(r'data-csrf="([^"]*)"', await page.get_data(as_text=True)).group(1)


def token_of(shared: State, text: str) -> ApiToken:
    return shared.book.tokens[text.split("_")[1]]


def user_of(shared: State, name: str) -> User:
    found = shared.book.user(name)
    assert found is not None
    return found
