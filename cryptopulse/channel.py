"""Alert channels: where an alert is delivered (schemas/alert_channel.avsc), and the checks of what a person gives
for one (`control channels add`, docs/alerts.md, "Channels").

A channel is data, kept in the compacted topic `crypto-alert-channels` under its name; a rule names the channels
its alerts go to (`control alerts add ... --notify phone,ops`), and `streams notify` delivers them. Four kinds:

    webhook   a JSON POST to a URL, its body signed with HMAC-SHA256 when the channel has a secret
    ntfy      a POST of the message to a topic URL on an ntfy server (push notifications to phones); an access token
              is optional (a protected topic)
    telegram  the Bot API's sendMessage to a chat; the bot token is required
    email     an SMTP message, over STARTTLS (smtp://) or TLS (smtps://), after a login with a password

A channel never holds a secret: `secret_from` names where it is (`env:NAME` or `file:/path`, cryptopulse/secrets.py).
A URL that carries a credential (a password, a `token=` parameter) is refused: write `${NAME}` in its place and the
notifier puts the variable's value in when it sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptopulse import secrets
from cryptopulse.errors import ConfigError
from cryptopulse.redact import redact
from cryptopulse.times import epoch_ms, now_ms

KINDS = ("webhook", "ntfy", "telegram", "email")
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
CHAT = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")  # a chat's numeric id, or a public channel's @name
ADDRESS = re.compile(r"[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}")
SMTP_PORTS = {"smtp": 587, "smtps": 465}  # STARTTLS on the submission port, or TLS from the first byte
MAX_CHANNELS_PER_RULE = 10
# what the secret is for, per kind (the word a person is shown, and whether a channel of that kind needs one)
SECRET_ROLE = {"webhook": ("signing secret", False), "ntfy": ("access token", False),
               "telegram": ("bot token", True), "email": ("password", True)}


# The checks of what a person gives, one each; each raises ConfigError with what to give instead.

def channel_name(text: object) -> str:
    name = text.strip() if isinstance(text, str) else ""
    if not NAME.fullmatch(name):
        raise ConfigError(f"{text!r} is not a channel name (lower-case letters, digits, - and _, at most 32, "
                          "starting with a letter: phone, ops-hook)")
    return name


def channel_kind(text: object) -> str:
    if text not in KINDS:
        raise ConfigError(f"{text!r} is not a channel kind: give one of {', '.join(KINDS)}")
    return str(text)


def channel_names(value: object) -> tuple[str, ...]:
    """The channels a rule notifies: `phone,ops` (text) or ["phone", "ops"] (JSON), each a channel name, in the
    order given, without repeats; at most MAX_CHANNELS_PER_RULE."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{value!r}: give channel names, comma-separated (phone,ops)")
    names = tuple(dict.fromkeys(channel_name(item) for item in items if not isinstance(item, str) or item.strip()))
    if len(names) > MAX_CHANNELS_PER_RULE:
        raise ConfigError(f"a rule notifies at most {MAX_CHANNELS_PER_RULE} channels")
    return names


def http_url(text: object, what: str = "URL") -> str:
    """An http(s) URL with a host; `${NAME}` placeholders allowed after the host; no credential in it."""
    url = text.strip() if isinstance(text, str) else ""
    probe = secrets.PLACEHOLDER.sub("x", url)
    parts = urlsplit(probe)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname or secrets.PLACEHOLDER.search(
            urlsplit(url).netloc):
        raise ConfigError(f"{text!r} is not a {what}: give http(s)://host[:port]/path")
    if redact(url) != url:
        raise ConfigError(f"the {what} carries a credential: put it in an environment variable and write ${{NAME}} in "
                          "its place (the URL is stored in Kafka; a secret never is)")
    return url


def chat_id(text: object) -> str:
    chat = text.strip() if isinstance(text, str) else str(text) if isinstance(text, int) else ""
    if not CHAT.fullmatch(chat):
        raise ConfigError(f"{text!r} is not a Telegram chat: give its numeric id (-1001234567890) or a public "
                          "channel's @name")
    return chat


def email_address(text: object) -> str:
    address = text.strip() if isinstance(text, str) else ""
    if not ADDRESS.fullmatch(address) or len(address) > 254:
        raise ConfigError(f"{text!r} is not an email address")
    return address


def smtp_url(text: object) -> str:
    """smtp://[user@]host[:port] (STARTTLS, port 587 by default) or smtps://[user@]host[:port] (TLS, 465); the user
    percent-encoded (alerts%40example.com); never a password."""
    url = text.strip() if isinstance(text, str) else ""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in SMTP_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{text!r} is not an SMTP server: give smtp://[user@]host[:port] (STARTTLS) or "
                          "smtps://[user@]host[:port] (TLS)")
    if parts.password is not None:
        raise ConfigError("the SMTP URL carries a password: give it with --password-env NAME (or --password-file)")
    return url


@dataclass(frozen=True, slots=True)
class Smtp:
    """An SMTP server to submit email alerts to: TLS from the start (`tls`), else STARTTLS, which is required."""

    host: str
    port: int
    tls: bool
    user: str | None

    @classmethod
    def of(cls, url: str) -> Smtp:
        parts = urlsplit(smtp_url(url))
        return cls(parts.hostname or "", parts.port or SMTP_PORTS[parts.scheme], parts.scheme == "smtps",
                   unquote(parts.username) if parts.username else None)


@dataclass(frozen=True, slots=True)
class Channel:
    """Where alerts go. `target`: the webhook's URL, the ntfy topic's URL, the Telegram chat, or the email address.
    `secret_from`: where its secret is (env:NAME or file:/path), never the secret. `smtp` and `sender`: email only."""

    name: str
    kind: str
    target: str
    secret_from: str | None = None
    smtp: str | None = None
    sender: str | None = None
    created: int = 0  # epoch ms: the channel is sent the alerts fired from then on
    owner: str | None = None  # the account it belongs to; None: the operator's (admins and the command line)

    def __post_init__(self) -> None:
        channel_name(self.name)
        channel_kind(self.kind)
        if self.secret_from is not None:
            secrets.check_reference(self.secret_from)
        role, required = SECRET_ROLE[self.kind]
        if required and self.secret_from is None:
            raise ConfigError(f"{self.kind}: give the {role} with --{secret_option(self.kind)}-env NAME "
                              f"(or --{secret_option(self.kind)}-file PATH)")
        if self.kind in ("webhook", "ntfy"):
            http_url(self.target, "webhook URL" if self.kind == "webhook" else "ntfy topic URL")
            if self.kind == "ntfy" and urlsplit(self.target).path.strip("/") == "":
                raise ConfigError(f"{self.target!r}: give the topic's URL, https://ntfy.sh/<topic>")
        elif self.kind == "telegram":
            chat_id(self.target)
        else:
            email_address(self.target)
            if self.smtp is None:
                raise ConfigError("email: give the SMTP server with --smtp smtp://host:587 (STARTTLS) or "
                                  "smtps://host:465 (TLS)")
            smtp_url(self.smtp)
            if self.sender is not None:
                email_address(self.sender)
        if self.kind != "email" and (self.smtp is not None or self.sender is not None):
            raise ConfigError(f"{self.kind}: --smtp and --from are for email channels only")

    def progress_group(self, prefix: str) -> str:
        """The consumer group (and transactional id) of this channel's progress in the notifier of group `prefix`:
        its name and when it was made, so a channel removed and added again under the same name starts afresh."""
        return f"{prefix}.{self.name}.{self.created}"

    def from_address(self) -> str:
        """email: the From address: `sender`, else the SMTP user when it is an address, else the target."""
        user = Smtp.of(self.smtp).user if self.smtp else None
        return self.sender or (user if user and ADDRESS.fullmatch(user) else self.target)

    def describe(self) -> str:
        """One line a person may see anywhere: no secret, only where it comes from."""
        if self.kind == "webhook":
            what = f"webhook {self.target}" + (" (signed)" if self.secret_from else "")
        elif self.kind == "ntfy":
            what = f"ntfy {self.target}"
        elif self.kind == "telegram":
            what = f"telegram chat {self.target}"
        else:
            what = f"email {self.target} via {self.smtp}"
        if self.secret_from is None:
            return what
        source, _, place = self.secret_from.partition(":")
        return f"{what}; {SECRET_ROLE[self.kind][0]} from " + (f"${place}" if source == "env" else f"the file {place}")

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "target": self.target, "secret_from": self.secret_from,
                "smtp": self.smtp, "sender": self.sender, "created": self.created, "owner": self.owner}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Channel:
        """The channel in an Avro record; ConfigError when it breaks a channel's constraints."""
        return cls(record["name"], record["kind"], record["target"], record.get("secret_from"), record.get("smtp"),
                   record.get("sender"), epoch_ms(record["created"]), record.get("owner"))

    def usable_by(self, owner: str | None) -> bool:
        """Whether a rule of `owner` may name this channel: the operator's rules (None) any; an account's its own
        and the operator's (which only an admin or the command line can hand it)."""
        return owner is None or self.owner in (None, owner)


def secret_option(kind: str) -> str:
    """The stem of the command's options that name a kind's secret: --secret-env (webhook), --token-env (ntfy,
    telegram), --password-env (email), each with its -file twin."""
    return {"webhook": "secret", "ntfy": "token", "telegram": "token", "email": "password"}[kind]


def new_channel(name: str, kind: str, target: str | None, *, secret_env: str | None = None,
                secret_file: str | None = None, chat: str | None = None, smtp: str | None = None,
                sender: str | None = None, created: int | None = None, owner: str | None = None) -> Channel:
    """A channel from what a person gave (`control channels add`): checked, ConfigError with the reason."""
    if secret_env is not None and secret_file is not None:
        raise ConfigError(f"give --{secret_option(kind)}-env or --{secret_option(kind)}-file, not both")
    reference = (secrets.env_reference(secret_env) if secret_env is not None
                 else secrets.file_reference(secret_file) if secret_file is not None else None)
    if kind == "telegram":
        if target is not None:
            raise ConfigError("telegram: give the chat with --chat ID, not as a positional argument")
        if chat is None:
            raise ConfigError("telegram: give the chat with --chat ID (its numeric id, or a channel's @name)")
        target = chat_id(chat)
    elif chat is not None:
        raise ConfigError("--chat is for telegram channels only")
    if target is None:
        wanted = {"webhook": "the URL", "ntfy": "the topic URL (https://ntfy.sh/<topic>)", "email": "the address"}
        raise ConfigError(f"{kind}: give {wanted[kind]}")
    return Channel(name, kind, target.strip(), reference, smtp, sender, now_ms() if created is None else created,
                   owner)
