"""Dashboard sessions: signed cookies every process can check, their CSRF tokens, and the login throttle.

A session is a cookie signed (itsdangerous, HMAC-SHA256) with the server's secret, a file in the state folder
(`<state>/webui/session-secret`, made once, 0600; WEBUI_SECRET_FILE elsewhere) that every worker of
`webui serve --processes N` reads, and that outlives a restart: so a session works on any worker and after a
restart without a session store. It carries the account, a random session id and when it began; the signature's
own time is when it was last renewed. It is valid while
- the signature holds and was renewed within the idle limit (WEBUI_SESSION_IDLE_MINUTES, 30; each request renews
  it at most once a minute),
- it began within the absolute limit (WEBUI_SESSION_ABSOLUTE_HOURS, 12),
- the account exists and has not changed its password or role since it began (the users topic says when), and
- no logout ended it (the sessions-ended topic, followed by every process: webui/accounts.py).

The CSRF token of a session is an HMAC of its id: the page carries it, every write must send it back in
`X-CSRF-Token` (or the login form's field), and a page of another site can neither read nor forge it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from cryptopulse.errors import ConfigError
from webui.accounts import AccountBook

SECRET_BYTES = 32
RENEW_AFTER = 60.0  # seconds: a session's cookie is renewed (its idle clock reset) at most this often


def load_secret(path: Path) -> bytes:
    """The server's secret: made on first use (32 random bytes, the file 0600, created exclusively so that two
    workers starting together agree on one), then read."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES).hex().encode())
        finally:
            os.close(fd)
    for _ in range(50):  # another worker may be writing it this very moment
        text = path.read_text().strip()
        if len(text) >= 2 * SECRET_BYTES:
            return bytes.fromhex(text)
        time.sleep(0.02)
    raise ConfigError(f"{path} does not hold a session secret (64 hex digits): remove it, and a new one is made "
                      "(every session ends)")


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    id: str
    began: float  # epoch seconds
    renewed: float  # epoch seconds: when its cookie was signed


class Sessions:
    """Makes and checks session cookies and CSRF tokens (module docstring)."""

    def __init__(self, secret: bytes, idle_seconds: float, absolute_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.idle = idle_seconds
        self.absolute = absolute_seconds
        self.clock = clock
        sessions = self

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:  # the sessions' clock (a test's, or time.time)
                return int(sessions.clock())

        self._signer = URLSafeTimedSerializer(secret, salt="cryptopulse-session", signer=Signer)

    def new(self, user: str) -> tuple[Session, str]:
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(18), now, now)
        return session, self.cookie(session)

    def cookie(self, session: Session) -> str:
        return self._signer.dumps({"u": session.user, "s": session.id, "b": int(session.began * 1000)})

    def check(self, cookie: str, book: AccountBook) -> Session | None:
        """The session of a cookie, or None when it is not one, or no longer valid."""
        if not cookie or len(cookie) > 512:
            return None
        now = self.clock()
        try:
            data, signed = self._signer.loads(cookie, max_age=None, return_timestamp=True)
        except (BadSignature, SignatureExpired, ValueError):
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in
                                                 (("u", str), ("s", str), ("b", int))):
            return None
        renewed = signed.timestamp()
        session = Session(data["u"], data["s"], data["b"] / 1000, renewed)
        user = book.user(session.user)
        if (now - renewed > self.idle or now - session.began > self.absolute or user is None
                or user.changed / 1000 > session.began or session.id in book.ended):
            return None
        return session

    def due_renewal(self, session: Session) -> bool:
        return self.clock() - session.renewed > RENEW_AFTER

    def csrf(self, session_id: str) -> str:
        return hmac.new(self.secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session_id: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(session_id), given or "")

    def login_token(self, nonce: str) -> str:
        """The login form's CSRF field for the nonce in its cookie (before there is a session)."""
        return hmac.new(self.secret, f"login:{nonce}".encode(), hashlib.sha256).hexdigest()

    def login_ok(self, nonce: str | None, given: str | None) -> bool:
        return bool(nonce) and bool(given) and hmac.compare_digest(self.login_token(nonce or ""), given or "")


@dataclass
class Strikes:
    failures: int = 0
    last: float = 0.0
    until: float = 0.0  # no attempt is checked before this (monotonic)


@dataclass
class LoginThrottle:
    """Failed logins per address and per account name, with a delay that grows: the first `free` failures cost
    nothing, then the n-th makes the next attempt wait `base * 2**(n - free - 1)` seconds, at most `cap`. An attempt
    within the wait is refused without checking its password (429, Retry-After). A success clears the address's
    and the account's count; a count is forgotten an hour after its last failure. Per process (docs/security.md)."""

    free: int = 3
    base: float = 1.0
    cap: float = 300.0
    clock: Callable[[], float] = time.monotonic
    entries: dict[str, Strikes] = field(default_factory=dict)
    _pruned: float = 0.0

    def keys(self, address: str, name: str) -> tuple[str, str]:
        return f"address:{address}", f"account:{name}"

    def wait(self, address: str, name: str) -> float:
        """Seconds before an attempt from `address` for `name` is checked (0: now)."""
        now = self.clock()
        self._prune(now)
        return max([0.0, *(self.entries[k].until - now for k in self.keys(address, name) if k in self.entries)])

    def failed(self, address: str, name: str) -> float:
        """Count a failure; the wait it sets."""
        now = self.clock()
        longest = 0.0
        for key in self.keys(address, name):
            strikes = self.entries.setdefault(key, Strikes())
            strikes.failures += 1
            strikes.last = now
            over = strikes.failures - self.free
            delay = 0.0 if over <= 0 else min(self.cap, self.base * 2 ** (over - 1))
            strikes.until = now + delay
            longest = max(longest, delay)
        return longest

    def succeeded(self, address: str, name: str) -> None:
        for key in self.keys(address, name):
            self.entries.pop(key, None)

    def _prune(self, now: float) -> None:
        if now - self._pruned < 60:
            return
        self._pruned = now
        for key in [k for k, s in self.entries.items() if now - s.last > 3600 and s.until <= now]:
            del self.entries[key]
        if len(self.entries) > 100_000:  # an attack from very many addresses: forget the oldest half
            for key in sorted(self.entries, key=lambda k: self.entries[k].last)[: len(self.entries) // 2]:
                del self.entries[key]
