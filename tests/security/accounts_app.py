"""The dashboard app with accounts, in-process and without services: a book of accounts and tokens given by the
test (what webui/accounts.py would read from Kafka), rules kept in memory in place of the rules topic, and the
audit trail collected in a list."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptopulse import alert_rules
from cryptopulse.accounts import HASHER, ApiToken, User, new_token
from cryptopulse.alert import Rule
from cryptopulse.errors import ConfigError
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
    """The rules topic, in memory: alert_rules' three functions."""

    rules: dict[str, Rule] = field(default_factory=dict)

    def list(self, _settings: Any) -> list[Rule]:
        return sorted(self.rules.values(), key=lambda r: (r.created, r.id))

    def add(self, _settings: Any, rule: Rule, _timeout: float = 30.0) -> Rule:
        self.rules[rule.id] = rule
        return rule

    def remove(self, _settings: Any, rule_id: str, _timeout: float = 30.0) -> Rule:
        if rule_id not in self.rules:
            raise ConfigError(f"no rule {rule_id!r}")
        return self.rules.pop(rule_id)


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
    monkeypatch.setattr(alert_rules, "rules", topic.list)
    monkeypatch.setattr(alert_rules, "add", topic.add)
    monkeypatch.setattr(alert_rules, "remove", topic.remove)
    overrides = {"allowed_hosts": ("dash.example.com",), "secret_file": str(tmp / "secret"), **overrides}
    app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                     start_consumer=False, views=False, probe_seconds=0, **overrides)
    shared = state(app)
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
