"""Price alerts: the rule type (schemas/alert_rule.avsc) and the identities of rules, alerts and their state.

A rule is data: it lives in the compacted topic `crypto-alert-rules` under its id, written by `control alerts`
and read by `streams alerts` (which evaluates ticks against it) and the dashboard. An alert's `_id` derives from
the rule and the tick that fired it, so a redelivered alert is the same document (docs/alerts.md).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from cryptopulse.channel import channel_names
from cryptopulse.errors import ConfigError
from cryptopulse.prices import price_text
from cryptopulse.settings import SYMBOL
from cryptopulse.text import terminal_safe
from cryptopulse.times import epoch_ms, now_ms

KINDS = ("above", "below", "move")
MAX_MINUTES = 7 * 24 * 60  # a move window of at most a week
MAX_PCT = 1000.0
MAX_VALUE = 1e12  # a price or percent given by a person: a positive number up to this
SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RULE_ID = re.compile(r"[0-9a-f]{1,32}")


# The checks of what a person gives for a rule, one each, shared by `control alerts` and the dashboard's form
# (webui/rules.py), so both refuse the same input with the same reason. Each raises ConfigError.

def rule_symbol(text: object) -> str:
    """A coin's ticker, upper-cased: `btc` -> `BTC`."""
    symbol = text.strip().upper() if isinstance(text, str) else ""
    if not SYMBOL.fullmatch(symbol):
        raise ConfigError(f"{text!r} is not a symbol (one ticker of letters and digits, such as BTC)")
    return symbol


def rule_kind(text: object) -> str:
    if text not in KINDS:
        raise ConfigError(f"{text!r} is not a condition: give one of {', '.join(KINDS)}")
    return str(text)


def rule_value(value: object) -> float:
    """The price (above/below) or the percent (move): a positive number, as text or a JSON number."""
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not 1e-9 <= number <= MAX_VALUE:  # NaN fails too
        raise ConfigError(f"{value!r} is not a positive number")
    return number


def rule_minutes(value: object) -> int:
    """A move's window: a whole number of minutes, at least 1."""
    try:
        number = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else 0
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{value!r} is not a whole number of at least 1")
    return number


def rule_source(text: object) -> str:
    """A source name as ticks carry it (simulated, binance, ...)."""
    if not isinstance(text, str) or not SOURCE.fullmatch(text):
        raise ConfigError(f"{text!r} is not a source name (such as simulated or binance)")
    return text


def rule_id(text: object) -> str:
    if not isinstance(text, str) or not RULE_ID.fullmatch(text):
        raise ConfigError(f"{terminal_safe(str(text))!r} is not a rule id (hex digits, as the rules are listed)")
    return text


def new_rule_id() -> str:
    """A short random id: 8 hex digits (4 billion of them; `control alerts add` never reuses a live one)."""
    return uuid.uuid4().hex[:8]


def new_rule(symbol: str, kind: str, value: float, minutes: int | None = None, source: str | None = None,
             created: int | None = None, channels: tuple[str, ...] = (), owner: str | None = None) -> Rule:
    """A new rule (a fresh id) from checked values: `minutes` only, and always, for a move; ConfigError else.
    `owner`: the account it belongs to (None: nobody's, as without accounts; with accounts only admins see it)."""
    created = now_ms() if created is None else created
    if kind == "move":
        if minutes is None:
            raise ConfigError("move: give the window, a number of minutes")
        return Rule(new_rule_id(), symbol, kind, pct=value, minutes=minutes, source=source, created=created,
                    channels=channels, owner=owner)
    if minutes is not None:
        raise ConfigError(f"{kind}: --minutes is for `move` rules only")
    return Rule(new_rule_id(), symbol, kind, price=value, source=source, created=created, channels=channels,
                owner=owner)


def alert_id(rule_id: str, symbol: str, source: str, ts: int) -> str:
    """The alert's `_id` and Kafka key: the rule and the firing tick's identity, `rule|symbol|source|ts`."""
    return f"{rule_id}|{symbol}|{source}|{ts}"


def state_key(rule_id: str, symbol: str, source: str) -> str:
    """The key of the processor's state for one rule on one (symbol, source)."""
    return f"{rule_id}|{symbol}|{source}"


@dataclass(frozen=True, slots=True)
class Rule:
    """above/below: fire when the price crosses `price`; move: when it changes by more than `pct` % within
    `minutes` (event time). `source` None: every source, each on its own. It watches ticks from `created` on.
    `channels`: where `streams notify` delivers its alerts (docs/alerts.md), by name; none: the dashboard only."""

    id: str
    symbol: str
    kind: str
    price: float | None = None
    pct: float | None = None
    minutes: int | None = None
    source: str | None = None
    created: int = 0  # epoch ms
    channels: tuple[str, ...] = ()
    owner: str | None = None  # the account it belongs to (docs/security.md); None: nobody's

    def __post_init__(self) -> None:
        # a string is "phone,ops", never the letters of one name
        given = self.channels if isinstance(self.channels, str) else list(self.channels)
        object.__setattr__(self, "channels", channel_names(given))
        if not SYMBOL.fullmatch(self.symbol):
            raise ConfigError(f"not a symbol: {terminal_safe(self.symbol)!r}: give a ticker of letters and digits, "
                              "such as BTC")
        if self.kind not in KINDS:
            raise ConfigError(f"not a condition: {self.kind!r}: give one of {', '.join(KINDS)}")
        if self.kind == "move":
            if self.pct is None or not (0 < self.pct <= MAX_PCT) or math.isnan(self.pct):
                raise ConfigError(f"move: give a percent above 0 and at most {MAX_PCT:g}")
            if self.minutes is None or not 1 <= self.minutes <= MAX_MINUTES:
                raise ConfigError(f"move: a window of 1 to {MAX_MINUTES} minutes")
        elif self.price is None or not math.isfinite(self.price) or self.price <= 0:
            raise ConfigError(f"{self.kind}: give a price above 0")

    def matches(self, symbol: str, source: str) -> bool:
        return symbol == self.symbol and (self.source is None or source == self.source)

    def describe(self) -> str:
        """One line: `BTC above 50,000`, `SHIB below 0.00001234`, `ETH move 5% within 15 min (binance)`,
        `BTC above 70,000; notify phone, ops`."""
        what = (f"move {self.pct:g}% within {self.minutes} min" if self.kind == "move"
                else f"{self.kind} {price_text(self.price)}")  # type: ignore[arg-type] - never None but for a move
        notify = f"; notify {', '.join(self.channels)}" if self.channels else ""
        return f"{self.symbol} {what}" + (f" ({self.source})" if self.source else "") + notify

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "symbol": self.symbol, "kind": self.kind, "price": self.price, "pct": self.pct,
                "minutes": self.minutes, "source": self.source, "created": self.created,
                "channels": list(self.channels), "owner": self.owner}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Rule:
        """The rule in an Avro record; ConfigError when it breaks a rule's constraints."""
        return cls(record["id"], record["symbol"], record["kind"], record.get("price"), record.get("pct"),
                   record.get("minutes"), record.get("source"), epoch_ms(record["created"]),
                   tuple(record.get("channels") or ()), record.get("owner"))
