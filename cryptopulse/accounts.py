"""The dashboard's accounts and API tokens: what they are, the checks of what a person gives for one, hashing, and
their topics (read, add, change, remove): the one implementation behind `control users`, `control tokens` and the
dashboard's login (webui/auth.py). docs/security.md says what is stored how, and why.

- An account lives in the compacted topic `crypto-users` under its name (schemas/user.avsc): its role and an
  argon2id hash of its password (argon2-cffi's defaults, RFC 9106's second recommendation), never the password.
  Removing one writes it again with `removed` set and no hash, so the store's copy (crypto_db.users, written by the
  accounts sink) keeps no hash either, and a dashboard that follows the topic drops it at once.
- An API token is `cpt_<id>_<secret>`: 8 hex digits anyone may see (in `control tokens list`, in the audit trail)
  and 32 random bytes. Only the SHA-256 of the secret is kept (`crypto-api-tokens`, key = id). A secret of 256
  random bits cannot be guessed, so a fast hash is enough, and it lets every API request be checked in
  microseconds (an argon2 check per request would be a way to burn the server's CPU).

Every function that reads or writes a topic blocks (Kafka, the registry).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError, DeliveryError
from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS, HOUR_MS, epoch_ms, now_ms

ROLES = ("admin", "user", "viewer")  # admin: everything; user: its own rules; viewer: reads its own, writes nothing
SCOPES = ("read", "write")
USER_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")
TOKEN = re.compile(r"cpt_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
TOKEN_ID = re.compile(r"[0-9a-f]{8}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte of "password" is only a way to burn CPU
HASHER = PasswordHasher()  # argon2id; time_cost 3, 64 MiB, parallelism 4 (RFC 9106, low-memory profile)


@functools.cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows: an unknown name is checked against it, so it takes as long as a known one.
    Made at the first check, not at import (an argon2 hash costs every process that imports this ~100 ms of CPU)."""
    return HASHER.hash(secrets.token_urlsafe(16))


# --- the checks of what a person gives (control's argument types; the login form's) ---

def user_name(text: object) -> str:
    """An account's name: lower-case letters, digits, `.`, `_`, `-`, starting with a letter, at most 32."""
    name = text.strip().lower() if isinstance(text, str) else ""
    if not USER_NAME.fullmatch(name):
        raise ConfigError(f"{text!r} is not an account name: give 1 to 32 lower-case letters, digits, '.', '_' or "
                          "'-', starting with a letter (such as alice)")
    return name


def role(text: object) -> str:
    if text not in ROLES:
        raise ConfigError(f"{text!r} is not a role: give one of {', '.join(ROLES)}")
    return str(text)


def scope(text: object) -> str:
    if text not in SCOPES:
        raise ConfigError(f"{text!r} is not a scope: give read or write")
    return str(text)


def token_id(text: object) -> str:
    if not isinstance(text, str) or not TOKEN_ID.fullmatch(text):
        raise ConfigError(f"{text!r} is not a token id (8 hex digits; see control tokens list)")
    return text


DURATION = re.compile(r"(\d{1,5})([hd])")


def duration_ms(text: object) -> int:
    """`30d`, `12h`: a token's lifetime, from an hour to 10 years."""
    found = DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ConfigError(f"{text!r} is not a duration: give hours or days, such as 12h or 30d")
    ms = int(found.group(1)) * (HOUR_MS if found.group(2) == "h" else DAY_MS)
    if not HOUR_MS <= ms <= 3650 * DAY_MS:
        raise ConfigError(f"{text!r}: give from 1h to 3650d")
    return ms


def password(text: str) -> str:
    """A new password: at least MIN_PASSWORD characters (a passphrase is best), at most MAX_PASSWORD."""
    if len(text) < MIN_PASSWORD:
        raise ConfigError(f"the password is {len(text)} characters: give at least {MIN_PASSWORD} (a few words "
                          "make a good one)")
    if len(text) > MAX_PASSWORD:
        raise ConfigError(f"the password is longer than {MAX_PASSWORD} characters")
    return text


# --- what they are ---

@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str | None
    created: int  # epoch ms
    changed: int  # epoch ms: a session that started before is over
    removed: int | None = None

    @property
    def active(self) -> bool:
        return self.removed is None and bool(self.password_hash)

    def to_record(self) -> dict[str, Any]:
        return {"_id": self.name, "role": self.role, "password_hash": self.password_hash, "created": self.created,
                "changed": self.changed, "removed": self.removed}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> User:
        removed = record.get("removed")
        return cls(user_name(record["_id"]), role(record["role"]), record.get("password_hash"),
                   epoch_ms(record["created"]), epoch_ms(record["changed"]),
                   None if removed is None else epoch_ms(removed))


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    user: str
    scope: str
    secret_sha256: str | None
    created: int
    expires: int | None = None
    removed: int | None = None

    def usable(self, now: int) -> bool:
        return self.removed is None and bool(self.secret_sha256) and (self.expires is None or now < self.expires)

    def to_record(self) -> dict[str, Any]:
        return {"_id": self.id, "name": self.name, "user": self.user, "scope": self.scope,
                "secret_sha256": self.secret_sha256, "created": self.created, "expires": self.expires,
                "removed": self.removed}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ApiToken:
        expires, removed = record.get("expires"), record.get("removed")
        return cls(token_id(record["_id"]), record["name"], user_name(record["user"]), scope(record["scope"]),
                   record.get("secret_sha256"), epoch_ms(record["created"]),
                   None if expires is None else epoch_ms(expires), None if removed is None else epoch_ms(removed))


# --- passwords and token secrets ---

def hash_password(text: str) -> str:
    return HASHER.hash(password(text))


def password_matches(user: User | None, given: str) -> bool:
    """Whether `given` is the password of `user` (an active account). Takes as long for an unknown account (None)
    as for a known one, so the time does not say which names exist. Blocks for ~50 ms: run it in a thread."""
    if len(given) > MAX_PASSWORD:
        return False
    stored = user.password_hash if user is not None and user.active else None
    dummy = _dummy_hash()  # asked for every name: the first check after start takes longer whoever it is for
    try:
        return HASHER.verify(stored or dummy, given) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(name: str, user: str, scope_: str, lifetime_ms: int | None, now: int | None = None
              ) -> tuple[ApiToken, str]:
    """A new token and its text (shown once, never stored)."""
    now = now_ms() if now is None else now
    ident, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    token = ApiToken(ident, name, user, scope_, secret_digest(secret), now, None if lifetime_ms is None
                     else now + lifetime_ms)
    return token, f"cpt_{ident}_{secret}"


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a token's text, None when it is not shaped like one."""
    found = TOKEN.fullmatch(text.strip())
    return (found.group(1), found.group(2)) if found else None


def token_matches(token: ApiToken | None, secret: str, now: int) -> bool:
    if token is None or not token.usable(now):
        return False
    return hmac.compare_digest(token.secret_sha256 or "", secret_digest(secret))


# --- the topics ---

def _codec(settings: Settings, topic: str, schema: str) -> AvroCodec:
    return AvroCodec(settings, topic, schema)


def ensure_topics(settings: Settings) -> None:
    wanted = {settings.users_topic, settings.api_tokens_topic, settings.sessions_ended_topic, settings.audit_topic,
              settings.accounts_dlq_topic}
    topics.create_missing(settings, [s for s in topics.project_topics(settings) if s.name in wanted])


def publish(settings: Settings, topic: str, key: str, value: bytes, timeout: float = 30.0) -> None:
    """One record, acknowledged by every in-sync replica; DeliveryError when it is not within `timeout` s."""
    from cryptopulse import kafka

    producer = kafka.producer(settings, "accounts", {"message.timeout.ms": int(timeout * 1000), "log_level": 0,
                                                     "linger.ms": 0})
    errors: list[str] = []
    producer.produce(topic, key=key.encode(), value=value,
                     on_delivery=lambda error, _message: errors.append(str(error)) if error else None)
    if producer.flush(timeout + 5) or errors:
        raise DeliveryError(f"not delivered to {topic} at {settings.kafka_bootstrap}: "
                            f"{errors[0] if errors else 'timed out'}; is Kafka up (`control stack status`)?")


def _latest(settings: Settings, topic: str, schema: str) -> dict[str, dict[str, Any]]:
    """The latest record of every key of a compacted topic."""
    found: dict[str, dict[str, Any]] = {}
    codec = None
    for message in topics.read_to_end(settings, topic):
        if message.key() is None or message.value() is None:
            continue
        codec = codec or _codec(settings, topic, schema)
        found[message.key().decode(errors="replace")] = codec.decode(message.value())
    return found


def all_users(settings: Settings) -> dict[str, User]:
    """Every account, removed ones included (the latest version of each name)."""
    users = {}
    for record in _latest(settings, settings.users_topic, "user").values():
        try:
            user = User.from_record(record)
        except (ConfigError, KeyError):
            continue
        users[user.name] = user
    return users


def users(settings: Settings) -> list[User]:
    """The accounts that exist, by name."""
    return sorted((u for u in all_users(settings).values() if u.active), key=lambda u: u.name)


def write_user(settings: Settings, user: User) -> User:
    ensure_topics(settings)
    publish(settings, settings.users_topic, user.name, _codec(settings, settings.users_topic, "user")
            .encode(user.to_record()))
    return user


def add_user(settings: Settings, name: str, role_: str, new_password: str) -> User:
    if name in {u.name for u in users(settings)}:
        raise ConfigError(f"there is an account {name!r} already: `control users passwd {name}` changes its "
                          "password, `control users rm` removes it")
    now = now_ms()
    return write_user(settings, User(name, role_, hash_password(new_password), now, now))


def existing_user(settings: Settings, name: str) -> User:
    found = {u.name: u for u in users(settings)}
    if name not in found:
        raise ConfigError(f"no account {name!r} (accounts: {', '.join(found) or 'none'}; see control users list)")
    return found[name]


def set_password(settings: Settings, name: str, new_password: str) -> User:
    """A new password; every session the account had is over."""
    user = existing_user(settings, name)
    return write_user(settings, replace(user, password_hash=hash_password(new_password), changed=now_ms()))


def set_role(settings: Settings, name: str, role_: str) -> User:
    user = existing_user(settings, name)
    return write_user(settings, replace(user, role=role_, changed=now_ms()))


def remove_user(settings: Settings, name: str) -> tuple[User, list[ApiToken]]:
    """Remove an account and its tokens; its sessions end at once. Its rules stay (an admin sees them)."""
    user = existing_user(settings, name)
    now = now_ms()
    write_user(settings, replace(user, password_hash=None, removed=now, changed=now))
    gone = [remove_token(settings, t.id) for t in tokens(settings) if t.user == name]
    return user, gone


def tokens(settings: Settings) -> list[ApiToken]:
    """The tokens that were not removed (expired ones too: `list` says so), by user and creation."""
    found = []
    for record in _latest(settings, settings.api_tokens_topic, "api_token").values():
        try:
            token = ApiToken.from_record(record)
        except (ConfigError, KeyError):
            continue
        if token.removed is None:
            found.append(token)
    return sorted(found, key=lambda t: (t.user, t.created))


def write_token(settings: Settings, token: ApiToken) -> ApiToken:
    ensure_topics(settings)
    publish(settings, settings.api_tokens_topic, token.id,
            _codec(settings, settings.api_tokens_topic, "api_token").encode(token.to_record()))
    return token


def add_token(settings: Settings, name: str, user: str, scope_: str, lifetime_ms: int | None) -> tuple[ApiToken, str]:
    """A new token of an existing account: (what is stored, the token's text to show once)."""
    existing_user(settings, user)
    if not name.strip() or len(name) > 64:
        raise ConfigError("give the token a name of 1 to 64 characters (what it is for: grafana, a script, ...)")
    token, text = new_token(name.strip(), user, scope_, lifetime_ms)
    write_token(settings, token)
    return token, text


def remove_token(settings: Settings, ident: str) -> ApiToken:
    found = {t.id: t for t in tokens(settings)}
    if ident not in found:
        raise ConfigError(f"no token {ident!r} (see control tokens list)")
    return write_token(settings, replace(found[ident], secret_sha256=None, removed=now_ms()))
