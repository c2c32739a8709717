"""Sending one message to one channel, and what the receiver answered (docs/alerts.md, "Channels").

    webhook   POST of JSON; `Idempotency-Key: <alert id>`; `X-CryptoPulse-Signature: sha256=<hex>`, the HMAC-SHA256
              of the exact body bytes under the channel's secret, when it has one
    ntfy      POST of the message text to the topic URL, with Title, Tags and Priority headers (ntfy's own); an
              access token as `Authorization: Bearer`
    telegram  POST <TELEGRAM_API_URL>/bot<token>/sendMessage, {"chat_id", "text"}; the token is part of the URL,
              which is why no URL is ever logged as it is (cryptopulse/secrets.py scrubs every secret read)
    email     SMTP: TLS (smtps://) or STARTTLS (smtp://, refused if the server does not offer it: the password is
              never sent in clear), a login, one message with `Message-ID` derived from the idempotency key

Every message carries the same idempotency key at every attempt (the alert's id; a summary's key derives from the
alerts it holds), as `Idempotency-Key` (HTTP and email). A sender never raises for a failed delivery: it returns an
`Answer` saying whether the receiver took it, refused it for good (`permanent`: a 4xx, an SMTP 5xx), or failed in
a way worth trying again (a timeout, a refused connection, 408/425/429/5xx, an SMTP 4xx) — with the receiver's
`Retry-After` when it gave one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, Protocol

import requests

from cryptopulse.channel import Channel, Smtp
from cryptopulse.errors import ConfigError
from cryptopulse.retries import failure_reason, retry_after_seconds
from cryptopulse.secrets import SCRUBBER, Scrubber, fill_placeholders, read_secret
from cryptopulse.times import epoch_ms

ANSWER_CHARS = 300  # of a receiver's answer, kept in the delivery record
RETRIABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx
TELEGRAM_API = "https://api.telegram.org"
USER_AGENT = "CryptoPulse-notify/1"
SIGNATURE_HEADER = "X-CryptoPulse-Signature"
ALERT_FIELDS = ("rule_id", "symbol", "source", "kind", "direction", "threshold", "minutes", "price", "ts",
                "reference_price", "reference_ts", "change_pct", "message", "fired_at")


@dataclass(frozen=True)
class Notice:
    """One message to a channel: an alert, a summary of several, or a test. `key` is its idempotency key."""

    key: str
    kind: str  # alert | summary | test
    title: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)  # what a webhook's JSON carries besides type, id and channel


@dataclass(frozen=True)
class Answer:
    """What came of one attempt. `status`: the HTTP status or SMTP reply code (None: no answer came); `text`: the
    start of the receiver's answer, or what went wrong, without secrets; `retry_after`: seconds, if the receiver
    said."""

    ok: bool
    status: int | None
    text: str
    permanent: bool = False
    retry_after: float | None = None

    def describe(self) -> str:
        said = f"{self.status} {self.text}" if self.status is not None else self.text
        return said.strip()


class Sender(Protocol):
    def send(self, notice: Notice) -> Answer: ...

    def close(self) -> None: ...


# --- what the messages say ---

def alert_json(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert record as JSON: times as epoch milliseconds."""
    out: dict[str, Any] = {}
    for name in ALERT_FIELDS:
        value = alert.get(name)
        out[name] = epoch_ms(value) if name in ("ts", "fired_at", "reference_ts") and value is not None else value
    return out


def alert_notice(alert: dict[str, Any]) -> Notice:
    """The message of one alert; its key is the alert's id."""
    return Notice(alert["_id"], "alert", f"CryptoPulse: {alert['symbol']}", alert["message"],
                  {"alert": alert_json(alert)})


def summary_notice(alerts: list[dict[str, Any]], cap: int) -> Notice:
    """One message for alerts held back by a channel's cap: the count and each one's line (at most 20 shown).
    Its key derives from the ids it holds, so a resend of the same summary has the same key."""
    digest = hashlib.sha256("\n".join(a["_id"] for a in alerts).encode()).hexdigest()[:32]
    lines = [f"- {a['message']}" for a in alerts[:20]]
    if len(alerts) > 20:
        lines.append(f"- ... and {len(alerts) - 20} more")
    text = (f"{len(alerts)} alerts beyond this channel's limit of {cap} a minute, in one message:\n"
            + "\n".join(lines))
    return Notice(f"summary-{digest}", "summary", f"CryptoPulse: {len(alerts)} alerts", text,
                  {"count": len(alerts), "alerts": [{"id": a["_id"], **alert_json(a)} for a in alerts]})


def trial_notice(channel: Channel, key: str) -> Notice:
    return Notice(key, "test", "CryptoPulse: test",
                  f"A test message to the channel {channel.name} (control channels test). Alerts of the rules that "
                  "name this channel will come like this.", {})


def message_id(key: str) -> str:
    """An email's Message-ID from the idempotency key: the same at every resend."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@cryptopulse>"


# --- HTTP ---

def http_answer(response: requests.Response, scrubber: Scrubber, text: str | None = None) -> Answer:
    """A receiver's HTTP answer: 2xx taken; 408, 425, 429 and 5xx worth retrying (after its Retry-After, if it
    said); a redirect and any other 4xx refused for good."""
    status = response.status_code
    said = scrubber.scrub((response.text if text is None else text)[:ANSWER_CHARS]).strip()
    if 200 <= status < 300:
        return Answer(True, status, said)
    if status in RETRIABLE_STATUS or status >= 500:
        return Answer(False, status, said, retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    if 300 <= status < 400:
        where = scrubber.scrub(response.headers.get("Location", "elsewhere"))
        return Answer(False, status, f"redirected to {where}: give the channel its final URL", permanent=True)
    return Answer(False, status, said, permanent=True)


class HttpSender:
    """The three HTTP channels: one session (kept-alive connections) per channel, no redirects followed (a signed
    body or a token never goes to another host), `timeout` seconds to connect and for each read."""

    def __init__(self, channel: Channel, timeout: float = 10.0, telegram_api: str = TELEGRAM_API,
                 scrubber: Scrubber = SCRUBBER) -> None:
        self.channel = channel
        self.timeout = timeout
        self.telegram_api = telegram_api.rstrip("/")
        self.scrubber = scrubber
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    def send(self, notice: Notice) -> Answer:
        try:
            url, body, headers = self.request(notice)
        except ConfigError as error:  # a secret not there (yet): worth trying again, the reason said
            return Answer(False, None, self.scrubber.scrub(str(error)))
        try:
            response = self.session.post(url, data=body, headers=headers, timeout=(min(5.0, self.timeout),
                                                                                   self.timeout),
                                         allow_redirects=False)
        except requests.Timeout:
            return Answer(False, None, f"no answer within {self.timeout:g} s")
        except requests.RequestException as error:  # a refused or broken connection, a name that does not resolve
            return Answer(False, None, self.scrubber.scrub(f"could not deliver: {failure_reason(error)}"))
        if self.channel.kind == "telegram":
            return self.telegram_answer(response)
        return http_answer(response, self.scrubber)

    def request(self, notice: Notice) -> tuple[str, bytes, dict[str, str]]:
        """The URL, body and headers of the POST (ConfigError: a secret the channel names is not there)."""
        channel = self.channel
        headers = {"Idempotency-Key": notice.key}
        if channel.kind == "webhook":
            body = json.dumps({"type": notice.kind, "id": notice.key, "channel": channel.name, "title": notice.title,
                               "text": notice.text, **notice.data}, separators=(",", ":"), sort_keys=True).encode()
            headers["Content-Type"] = "application/json"
            headers["X-CryptoPulse-Event"] = notice.kind
            if channel.secret_from is not None:
                secret = read_secret(channel.secret_from, self.scrubber).encode()
                headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            return fill_placeholders(channel.target, self.scrubber), body, headers
        if channel.kind == "ntfy":
            alert = notice.data.get("alert") or {}
            headers.update({"Title": notice.title.encode("ascii", "replace").decode(),
                            "Tags": {"up": "chart_with_upwards_trend", "down": "chart_with_downwards_trend"}.get(
                                alert.get("direction"), "bell"),
                            "Priority": "high" if notice.kind != "test" else "default",
                            "Content-Type": "text/plain; charset=utf-8"})
            if channel.secret_from is not None:
                headers["Authorization"] = f"Bearer {read_secret(channel.secret_from, self.scrubber)}"
            return fill_placeholders(channel.target, self.scrubber), notice.text.encode(), headers
        token = read_secret(channel.secret_from or "", self.scrubber)  # telegram: required by the channel
        body = json.dumps({"chat_id": channel.target, "text": f"{notice.title}\n{notice.text}",
                           "disable_web_page_preview": True}).encode()
        headers["Content-Type"] = "application/json"
        return f"{self.telegram_api}/bot{token}/sendMessage", body, headers

    def telegram_answer(self, response: requests.Response) -> Answer:
        """The Bot API answers {"ok": true, ...} or {"ok": false, "error_code", "description", "parameters":
        {"retry_after"}}: its description is the answer, its retry_after counts as Retry-After."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return http_answer(response, self.scrubber)
        if data.get("ok") is True and 200 <= response.status_code < 300:
            message = (data.get("result") or {}).get("message_id") if isinstance(data.get("result"), dict) else None
            return Answer(True, response.status_code, f"message_id {message}" if message is not None else "ok")
        answer = http_answer(response, self.scrubber, str(data.get("description") or response.text))
        parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        retry_after = parameters.get("retry_after")
        if isinstance(retry_after, int | float) and not answer.permanent and not answer.ok:
            return Answer(False, answer.status, answer.text, retry_after=float(retry_after))
        return answer


# --- email ---

class EmailSender:
    """SMTP submission: TLS or STARTTLS (never a login in clear), the channel's password, one connection per
    message. `tls_context` makes the TLS context (the system's trusted CAs by default; SSL_CERT_FILE names
    another bundle)."""

    def __init__(self, channel: Channel, timeout: float = 10.0, scrubber: Scrubber = SCRUBBER,
                 tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> None:
        self.channel = channel
        self.server = Smtp.of(channel.smtp or "")
        self.timeout = timeout
        self.scrubber = scrubber
        self.tls_context = tls_context

    def close(self) -> None:
        pass

    def message(self, notice: Notice) -> EmailMessage:
        message = EmailMessage(policy=SMTP)
        message["From"] = self.channel.from_address()
        message["To"] = self.channel.target
        first = notice.text.splitlines()[0] if notice.text else ""
        message["Subject"] = f"{notice.title}: {first}" if notice.kind == "alert" else notice.title
        message["Message-ID"] = message_id(notice.key)
        message["Idempotency-Key"] = notice.key
        message.set_content(notice.text + "\n")
        return message

    def send(self, notice: Notice) -> Answer:
        try:
            password = read_secret(self.channel.secret_from or "", self.scrubber)
        except ConfigError as error:
            return Answer(False, None, self.scrubber.scrub(str(error)))
        message = self.message(notice)
        try:
            return self._submit(message, password)
        except smtplib.SMTPRecipientsRefused as error:
            code, said = next(iter(error.recipients.values()), (None, b""))
            return self._refused(code, said)
        except smtplib.SMTPResponseException as error:  # auth, sender, data refused, or a 4xx/5xx at any step
            return self._refused(error.smtp_code, error.smtp_error)
        except (smtplib.SMTPException, OSError) as error:  # disconnected, refused, timed out, a TLS failure
            return Answer(False, None, self.scrubber.scrub(f"could not deliver: {_smtp_reason(error)}"))

    def _submit(self, message: EmailMessage, password: str) -> Answer:
        server = self.server
        user = server.user or self.channel.from_address()
        if server.tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout,
                                                   context=self.tls_context())
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        try:
            client.ehlo()
            if not server.tls:
                if not client.has_extn("starttls"):
                    return Answer(False, None, f"{server.host}:{server.port} does not offer STARTTLS: the password "
                                  "is never sent in clear (use smtps:// for TLS from the start)", permanent=True)
                client.starttls(context=self.tls_context())
                client.ehlo()
            client.login(user, password)
            sender, recipient = self.channel.from_address(), self.channel.target
            code, said = client.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, said, sender)
            code, said = client.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, said)})
            code, said = client.data(message.as_bytes())
            if code != 250:
                raise smtplib.SMTPDataError(code, said)
            return Answer(True, code, self.scrubber.scrub(_text(said)[:ANSWER_CHARS]))
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    def _refused(self, code: int | None, said: bytes | str) -> Answer:
        text = self.scrubber.scrub(_text(said)[:ANSWER_CHARS])
        if code is not None and 400 <= code < 500:
            return Answer(False, code, text)
        return Answer(False, code, text, permanent=code is not None and code >= 500)


def _text(said: bytes | str) -> str:
    return said.decode(errors="replace") if isinstance(said, bytes) else str(said)


def _smtp_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({error.verify_message})"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"the server closed the connection ({error})"
    return failure_reason(error)


def sender_for(channel: Channel, timeout: float = 10.0, telegram_api: str = TELEGRAM_API,
               scrubber: Scrubber = SCRUBBER,
               tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> Sender:
    if channel.kind == "email":
        return EmailSender(channel, timeout, scrubber, tls_context)
    return HttpSender(channel, timeout, telegram_api, scrubber)
