"""Every error CryptoPulse raises on purpose derives from one root, so a command can catch "ours" in one place
and print one line instead of a traceback. The message always says what failed and what to do.

    CryptoPulseError
    ├── ConfigError (ValueError)        a setting, option or input is invalid: which one, and what to give
    │   └── UnknownSymbol               a symbol the source has no market for
    ├── StackError                      a stack component could not be installed or did not come up
    ├── ConnectError                    Kafka Connect refused a connector, or a task failed
    ├── RegistryError                   the schema registry refused a request
    │   └── RegistryUnavailable         the registry cannot answer now (down, timing out, 5xx): wait, retry
    ├── SourceError                     a market-data source cannot go on by itself
    │   └── TransientError              ... but may after a wait (`retry_after` seconds when the server says)
    └── DeliveryError                   records were not delivered to Kafka; nothing was committed past them

The dashboard's `ProtocolError` (a client message it refuses) is a ConfigError: the client's input is wrong.
"""

from __future__ import annotations


class CryptoPulseError(Exception):
    """The root of every error raised on purpose."""


class ConfigError(CryptoPulseError, ValueError):
    """A setting, option or input is invalid; the message names it and what to give instead."""


class UnknownSymbol(ConfigError):
    """A symbol the source has no market for; raised when the source is built."""


class StackError(CryptoPulseError):
    """A component could not be installed or did not come up; the message says which and where to look."""


class ConnectError(CryptoPulseError):
    """Connect refused a connector or a task failed; the message says which and why."""


class RegistryError(CryptoPulseError):
    """The schema registry refused a request (a 4xx: unknown subject, incompatible schema, ...)."""


class RegistryUnavailable(RegistryError):
    """The registry could not answer (down, timing out, 5xx): the record may be fine, so do not skip it."""


class SourceError(CryptoPulseError):
    """The source cannot go on by itself; the message says what failed and what to do."""


class TransientError(SourceError):
    """A failure worth retrying: after `retry_after` seconds when the server said so, else after a backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryError(CryptoPulseError):
    """Records were not delivered to Kafka; nothing was committed past them, so running again retries them."""
