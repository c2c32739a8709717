"""Real local receivers for the notifier's tests: an HTTP server on 127.0.0.1 speaking the shapes of a webhook, an
ntfy server and the Telegram Bot API, and an SMTP server (aiosmtpd) with STARTTLS or TLS and a login.

The HTTP receiver answers like the real thing unless cued: `cue(prefix, Reply(500), Reply(429, headers=
{"Retry-After": "2"}), ...)` plays those replies, in order, to the next requests whose path starts with `prefix`,
then answers normally again; `hang(prefix)` makes it never answer them (until `release()`), `refuse(prefix, 400)`
answers that status for ever. `stop()` closes its port (connections refused) and `start()` opens the same port
again: a receiver down for a while. Every request is recorded (path, headers, body, when, what it was answered).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes import Reply

FOREVER = 3600.0


@dataclass
class Seen:
    """One request the receiver took: what it was, and what it answered (None: it never did)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time()
    status: int | None = None

    @property
    def key(self) -> str | None:
        return self.headers.get("Idempotency-Key")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    replies: list[Reply] = field(default_factory=list)
    forever: Reply | None = None  # answered to every request once `replies` is played
    hang: bool = False
    delay: float = 0.0  # seconds before every answer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before its answer (it timed out on a held request) is no error of the test."""


class Receiver:
    """An HTTP receiver for webhooks (/hook/...), ntfy topics (/ntfy/<topic>) and the Telegram Bot API
    (/bot<token>/sendMessage), on 127.0.0.1."""

    def __init__(self, telegram_token: str = "123456:TEST-token-not-real") -> None:
        self.telegram_token = telegram_token
        self.seen: list[Seen] = []
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: QuietServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- cues ---

    def cue(self, prefix: str, *replies: Reply) -> None:
        with self._lock:
            self.scripts.setdefault(prefix, Script()).replies.extend(replies)

    def refuse(self, prefix: str, status: int, body: Any = None) -> None:
        with self._lock:
            self.scripts.setdefault(prefix, Script()).forever = Reply(status, body)

    def slow(self, prefix: str, seconds: float) -> None:
        """Answer every request under `prefix` `seconds` late."""
        with self._lock:
            self.scripts.setdefault(prefix, Script()).delay = seconds

    def hang(self, prefix: str) -> None:
        with self._lock:
            self.scripts.setdefault(prefix, Script()).hang = True
        self._released.clear()

    def release(self) -> None:
        """Every request held by `hang` gets its answer; new ones are answered normally."""
        with self._lock:
            for script in self.scripts.values():
                script.hang = False
        self._released.set()

    def _script_for(self, path: str) -> tuple[Reply | None, bool, float]:
        """The reply cued for this path (None: the normal answer), whether to hold it, and how late to answer."""
        with self._lock:
            for prefix, script in self.scripts.items():
                if path.startswith(prefix):
                    if script.hang:
                        return None, True, 0.0
                    if script.replies:
                        return script.replies.pop(0), False, script.delay
                    return script.forever, False, script.delay
        return None, False, 0.0

    # --- what it saw ---

    def requests(self, prefix: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    def delivered_keys(self, prefix: str) -> list[str]:
        """The idempotency keys of the requests under `prefix` it answered with a 2xx, in arrival order."""
        return [s.key for s in self.requests(prefix) if s.status is not None and 200 <= s.status < 300 and s.key]

    # --- running ---

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as the real receivers
            # the answer's headers and body are two writes: with Nagle's algorithm the body waited for the client's
            # delayed ACK, 40-50 ms a request once requests came back to back (as a real server does not)
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.path, dict(self.headers.items()), self.rfile.read(length), time.time())
                with receiver._lock:
                    receiver.seen.append(seen)
                reply, hang, delay = receiver._script_for(self.path)
                if hang:
                    receiver._released.wait(FOREVER)
                    reply = None
                time.sleep(delay + (reply.delay if reply is not None else 0.0))
                status, body, headers = receiver._answer(self.path, seen, reply)
                seen.status = status
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = QuietServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="receiver").start()

    def stop(self) -> None:
        """Go down: the port closed (connections refused until `start()`) and every open connection cut."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._released.set()
        self.stop()

    # --- the real things' answers ---

    def _answer(self, path: str, seen: Seen, reply: Reply | None) -> tuple[int, Any, dict[str, str]]:
        if reply is not None:
            body = reply.body if reply.body is not None else {"error": f"cued {reply.status}"}
            if path.startswith("/bot") and reply.body is None:
                body = {"ok": reply.status < 300, "error_code": reply.status, "description": f"cued {reply.status}"}
            return reply.status, body.encode() if isinstance(body, str) else body, reply.headers
        if path.startswith("/bot"):
            return self._telegram(path, seen)
        if path.startswith("/ntfy/"):
            topic = path.removeprefix("/ntfy/")
            return 200, {"id": f"n{len(self.seen)}", "time": int(seen.at), "event": "message", "topic": topic,
                         "message": seen.body.decode(errors="replace")}, {}
        return 200, {"ok": True}, {}

    def _telegram(self, path: str, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        token, _, method = path.removeprefix("/bot").partition("/")
        if token != self.telegram_token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}
        if method != "sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, {}
        try:
            body = seen.json()
        except ValueError:
            body = {}
        if not body.get("chat_id") or not body.get("text"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, {}
        return 200, {"ok": True, "result": {"message_id": len(self.seen), "chat": {"id": body["chat_id"]},
                                            "date": int(seen.at), "text": body["text"]}}, {}


# --- email ---

@dataclass
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, in files: a server's key and certificate, which a
    client trusts as its CA (SSL_CERT_FILE, or `client_context`)."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cryptopulse-test-smtp")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        made = cls(folder / "smtp-cert.pem", folder / "smtp-key.pem")
        made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return made

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None


class MailHandler:
    def __init__(self, receiver: MailReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if address in self.receiver.refused:
            return "550 5.1.1 no such mailbox here"
        if self.receiver.busy:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.receiver.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                        message_from_bytes(envelope.content, policy=policy.default), login))
        return f"250 2.0.0 queued as m{len(self.receiver.mails)}"


class TlsController(Controller):
    """aiosmtpd's controller, quiet about "AUTH without requiring TLS": the session is TLS from its first byte (or,
    for the test of a server without STARTTLS, that is the point)."""

    def factory(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return super().factory()


class MailReceiver:
    """aiosmtpd on 127.0.0.1: STARTTLS required before AUTH (`tls=False`), or TLS from the first byte (`tls=True`),
    or neither (`starttls=False`: a server that would take a login in clear); one user and password. `refused`
    addresses get 550, `busy` makes every recipient 451; `logins` counts the AUTH attempts it saw."""

    def __init__(self, certificate: Certificate, user: str, password: str, tls: bool = False,
                 starttls: bool = True) -> None:
        self.user, self.password, self.tls = user, password, tls
        self.logins = 0
        self.mails: list[Mail] = []
        self.refused: set[str] = set()
        self.busy = False
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        kwargs: dict[str, Any] = {"authenticator": self._authenticate, "auth_required": True}
        if tls:
            kwargs["auth_require_tls"] = False  # the whole session is TLS (aiosmtpd only knows STARTTLS's)
            self.controller = TlsController(MailHandler(self), hostname="127.0.0.1", port=self.port,
                                            ssl_context=certificate.server_context(), **kwargs)
        elif starttls:
            self.controller = Controller(MailHandler(self), hostname="127.0.0.1", port=self.port,
                                         tls_context=certificate.server_context(), require_starttls=True, **kwargs)
        else:
            kwargs["auth_require_tls"] = False
            self.controller = TlsController(MailHandler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls else "smtp"
        return f"{scheme}://{self.user.replace('@', '%40')}@127.0.0.1:{self.port}"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        self.logins += 1
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (self.user,
                                                                                                   self.password)
        return AuthResult(success=ok, handled=False, auth_data=data)

    def message_ids(self) -> list[str]:
        return [str(mail.message["Idempotency-Key"]) for mail in self.mails]

    def close(self) -> None:
        self.controller.stop()
