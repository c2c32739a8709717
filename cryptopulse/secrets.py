"""Secrets of the alert channels (docs/security.md, "How secrets flow"): where each is read from, and keeping its
value out of everything the project prints, logs or writes.

A channel never holds a secret. It names where the secret is: `env:NAME` (an environment variable of the process
that sends: `streams notify`, or `control channels test`) or `file:/path` (a file, read at each send, so a rotated
token applies without a restart; its trailing newline dropped). Only that reference is written to Kafka.

Every value read is remembered by the process's `Scrubber`, which replaces it with `***` in any text: the reasons
and receivers' answers a delivery records, the dead-letter headers, and every log line (`ScrubFilter` on the
root handlers), including the lines of libraries that name a URL (a Telegram bot token is part of its URL).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from cryptopulse.errors import ConfigError

HIDDEN = "***"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# `${NAME}` in a channel's URL: a variable's value put in at send time (a webhook whose URL is its credential)
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}")
MIN_SCRUBBED = 4  # shorter values are not replaced in text (they would mangle every line); a secret is longer


def env_reference(name: object) -> str:
    """`env:NAME` for a variable name given by a person; ConfigError for anything that is not one."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not an environment variable name (letters, digits, _): give the variable's "
                          "NAME, never its value")
    return f"env:{name}"


def file_reference(path: object) -> str:
    """`file:/absolute/path` for a path given by a person (made absolute); ConfigError for an empty one."""
    if not isinstance(path, str) or not path.strip() or "\n" in path:
        raise ConfigError(f"{path!r} is not a file path")
    return f"file:{Path(path).expanduser().resolve()}"


def check_reference(reference: object) -> str:
    """A reference as stored (`env:NAME` or `file:/path`), checked; ConfigError otherwise."""
    text = reference if isinstance(reference, str) else ""
    kind, _, where = text.partition(":")
    if kind == "env" and ENV_NAME.fullmatch(where):
        return text
    if kind == "file" and where.startswith("/"):
        return text
    raise ConfigError(f"{reference!r} is not a secret reference: give env:NAME or file:/path")


class Scrubber:
    """The secret values this process has read, and their removal from any text. Thread-safe: every channel's
    worker reads its secrets on its own thread."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def remember(self, value: str) -> str:
        if len(value) >= MIN_SCRUBBED and value not in self._values:
            with self._lock:
                self._values.add(value)
                # the longest first: a secret that contains another is replaced whole
                self._pattern = re.compile("|".join(re.escape(v) for v in sorted(self._values, key=len,
                                                                                    reverse=True)))
        return value

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(HIDDEN, text) if pattern is not None and text else text


SCRUBBER = Scrubber()  # the process's own


def read_secret(reference: str, scrubber: Scrubber = SCRUBBER) -> str:
    """The secret a reference names, remembered by `scrubber`. ConfigError (naming the variable or the file, never
    a value) when it is not there or empty: the process that sends must have it."""
    kind, _, where = check_reference(reference).partition(":")
    if kind == "env":
        value = os.environ.get(where) or ""
        if not value:
            raise ConfigError(f"the environment variable {where} is not set (or empty) in this process: set it where "
                              "`streams notify` runs (and for `control channels test`, in that shell)")
    else:
        try:
            value = Path(where).read_text().rstrip("\r\n")
        except OSError as error:
            raise ConfigError(f"the secret file {where} cannot be read ({error.strerror or error})") from None
        if not value:
            raise ConfigError(f"the secret file {where} is empty")
    return scrubber.remember(value)


def fill_placeholders(text: str, scrubber: Scrubber = SCRUBBER) -> str:
    """`text` with every `${NAME}` replaced by that variable's value (remembered as a secret); ConfigError for a
    variable that is not set."""
    return PLACEHOLDER.sub(lambda match: read_secret(f"env:{match.group(1)}", scrubber), text)


def placeholders(text: str) -> list[str]:
    """The variable names of the `${NAME}`s in `text`."""
    return PLACEHOLDER.findall(text)


class ScrubFilter(logging.Filter):
    """Replaces every remembered secret in a log record's final text (message and arguments merged, traceback
    included) before a handler writes it."""

    def __init__(self, scrubber: Scrubber = SCRUBBER) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info = record.exc_text = None
        scrubbed = self.scrubber.scrub(text)
        record.msg, record.args = scrubbed, None
        return True


def scrub_logs(scrubber: Scrubber = SCRUBBER) -> None:
    """Put a ScrubFilter on every handler of the root logger (after `setup_logging`): whatever logger a line comes
    from (ours, urllib3's, librdkafka's), it is written without the secrets this process has read."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter(scrubber))
