"""Where every service is, read from the environment.

The defaults are the native stack's loopback addresses, which docker compose
publishes on the same ports, so one configuration serves both ways of running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptopulse.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent


DEFAULT_SYMBOLS = "BTC,ETH,XRP"


def env(name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name) or default


def env_number(name: str, default: float, low: float, high: float, kind: type = float, unit: str = "") -> float:
    """A numeric variable, checked: a bad value is a ConfigError naming the variable and what it takes. The one
    reader of numbers from the environment (the dashboard's limits, the sources' pacing, the topics' shape)."""
    raw = os.environ.get(name) or ""
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:
        what = f"{'whole ' if kind is int else ''}number{f' of {unit}' if unit else ''}"
        raise ConfigError(f"{name}={raw!r} is not a {what} from {low:g} to {high:g}")
    return value


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no variable: 1 (or true, yes, on) or 0 (or false, no, off); unset or empty is `default`."""
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: give 1 or 0")


# The project's addresses given as URLs, with the schemes each may have: checked by `check_urls` before a command
# starts, so `BINANCE_WS_URL=not-a-url` is one line, not a traceback when the feed first connects.
HTTP, WEBSOCKET = ("http", "https"), ("ws", "wss")
URL_VARIABLES = {
    "SCHEMA_REGISTRY_URL": HTTP, "CONNECT_URL": HTTP, "COINGECKO_URL": HTTP, "COINMARKETCAP_URL": HTTP,
    "BINANCE_REST_URL": HTTP, "COINBASE_REST_URL": HTTP, "BINANCE_WS_URL": WEBSOCKET, "COINBASE_WS_URL": WEBSOCKET,
    "TELEGRAM_API_URL": HTTP,
}


def check_urls() -> None:
    """Every variable of URL_VARIABLES that is set holds an absolute URL of its schemes with a host (a
    comma-separated list: each of them); else a ConfigError naming the variable."""
    for name, schemes in URL_VARIABLES.items():
        value = os.environ.get(name) or ""
        if not all(_is_url(url.strip(), schemes) for url in value.split(",") if url.strip()):
            raise ConfigError(f"{name}={value!r}: not a URL; give {schemes[0]}://host[:port][/path] "
                              f"({' or '.join(schemes)})")


def _is_url(text: str, schemes: tuple[str, ...]) -> bool:
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


SYMBOL = re.compile(r"[A-Z0-9]{1,15}")


def symbols(text: str) -> list[str]:
    """A comma-separated symbol list (`--symbols`, SYMBOLS), upper-cased, without duplicates; each one a ticker
    (letters and digits, at most 15)."""
    parsed = list(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    bad = [s for s in parsed if not SYMBOL.fullmatch(s)]
    if bad:
        raise ConfigError(f"not a symbol: {', '.join(map(repr, bad))}: give tickers of letters and digits, "
                          f"comma-separated, such as {DEFAULT_SYMBOLS}")
    if not parsed:
        raise ConfigError(f"no symbol in {text!r}: give a comma-separated list such as {DEFAULT_SYMBOLS}")
    return parsed


@dataclass(frozen=True)
class StackLayout:
    """The native stack's shape: how many Kafka brokers and Connect workers it runs, and how far its loopback ports
    are moved from the defaults. `control stack up --brokers 3 --connect-workers 2 [--port-offset N]` keeps it in
    `<state>/layout.json`; every command reading that state folder derives its default addresses from it.

    Ports (plus `port_offset`): broker n 9092 + 2(n - 1) and its controller the next one (9092/9093, 9094/9095,
    ...), the registry 8081 (management 9000), Connect worker n 8083 + n - 1, FerretDB 27017.
    """

    brokers: int = 1
    connect_workers: int = 1
    port_offset: int = 0

    LIMITS = {"brokers": (1, 9), "connect_workers": (1, 9), "port_offset": (0, 30_000)}

    def __post_init__(self) -> None:
        for name, (low, high) in self.LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"stack layout: {name} = {value!r}; give a whole number from {low} to {high}")

    @classmethod
    def of(cls, state_dir: Path) -> StackLayout:
        """The layout a state folder was set up with; the single-node default when it has none. Read once per
        process (again only when the file changes: `control stack up --brokers 3` writes it)."""
        path = state_dir / "layout.json"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return cls()
        known = _LAYOUTS.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            data = json.loads(path.read_text())
            layout = cls(**{name: data[name] for name in cls.LIMITS if name in data})
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError, AttributeError) as error:
            raise ConfigError(f"{path} is not a stack layout ({error}); remove it to go back to one node") from None
        _LAYOUTS[path] = (stamp, layout)
        return layout

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "layout.json").write_text(json.dumps({name: getattr(self, name) for name in self.LIMITS}))

    def broker_port(self, node: int) -> int:
        return 9092 + self.port_offset + 2 * (node - 1)

    def controller_port(self, node: int) -> int:
        return self.broker_port(node) + 1

    def connect_port(self, worker: int) -> int:
        return 8083 + self.port_offset + worker - 1

    @property
    def registry_port(self) -> int:
        return 8081 + self.port_offset

    @property
    def registry_management_port(self) -> int:
        return 9000 + self.port_offset

    @property
    def ferretdb_port(self) -> int:
        return 27017 + self.port_offset

    @property
    def ports(self) -> list[int]:
        """Every port the stack listens on."""
        return [*(p for n in range(1, self.brokers + 1) for p in (self.broker_port(n), self.controller_port(n))),
                self.registry_port, self.registry_management_port, self.ferretdb_port,
                *(self.connect_port(n) for n in range(1, self.connect_workers + 1))]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(n)}" for n in range(1, self.brokers + 1))

    @property
    def replication_factor(self) -> int:
        """Three replicas once there are three brokers (one may be down and a write still lands on two)."""
        return min(3, self.brokers)


_LAYOUTS: dict[Path, tuple[int, StackLayout]] = {}  # layout.json read, by path: (its mtime, the layout)


def _state_dir() -> Path:
    return Path(env("CRYPTOPULSE_STATE_DIR", str(PROJECT_DIR / ".state")))


def _layout() -> StackLayout:
    return StackLayout.of(_state_dir())


def min_insync_for(replicas: int) -> int:
    """2 when there are 3 or more replicas (one broker may be down and a write still lands on two), else 1."""
    return 2 if replicas >= 3 else 1


def _min_insync_replicas(replicas: int) -> int:
    """TOPIC_MIN_INSYNC_REPLICAS, checked against the replication factor; by default `min_insync_for` it."""
    default = min_insync_for(replicas)
    value = env_number("TOPIC_MIN_INSYNC_REPLICAS", default, 1, 100, int)
    if value > replicas:
        raise ConfigError(f"TOPIC_MIN_INSYNC_REPLICAS={value} is more than TOPIC_REPLICATION_FACTOR={replicas}: "
                          "no write could ever succeed")
    return value


def _env(name: str, default: Callable[[], str] | str, parse: Callable[[str], Any] = str) -> Any:
    """A field of Settings read from the variable `name` (its default computed only when it is unset); the name is
    kept in the field's metadata, so `Settings.variables()` lists every variable once."""
    return field(default_factory=lambda: parse(env(name, default() if callable(default) else default)),
                 metadata={"env": name})


def _number(name: str, default: Callable[[], float] | float, low: float, high: float, kind: type = int) -> Any:
    return field(default_factory=lambda: env_number(name, default() if callable(default) else default, low, high, kind),
                 metadata={"env": name})


@dataclass(frozen=True)
class Settings:
    """Addresses and names shared by the producer, the control plane and the dashboard, each from its environment
    variable (`variables()` lists them); a process makes one and hands it down."""

    # by default the native stack's loopback addresses, of the layout its state folder was set up with
    kafka_bootstrap: str = _env("KAFKA_BOOTSTRAP_SERVERS", lambda: _layout().bootstrap)
    # Apicurio's Confluent-compatible API, for the Python clients.
    schema_registry_url: str = _env("SCHEMA_REGISTRY_URL",
                                    lambda: f"http://127.0.0.1:{_layout().registry_port}/apis/ccompat/v7")
    connect_url: str = _env("CONNECT_URL", lambda: f"http://127.0.0.1:{_layout().connect_port(1)}")
    mongodb_uri: str = _env("MONGODB_URI", lambda: f"mongodb://127.0.0.1:{_layout().ferretdb_port}")
    database: str = _env("MONGODB_DATABASE", "crypto_db")
    prices_topic: str = _env("PRICES_TOPIC", "crypto-prices")
    prices_dlq_topic: str = _env("PRICES_DLQ_TOPIC", "crypto-prices-dlq")
    # candles: one topic per interval, <prefix>-1m ... <prefix>-1w (`candle_topic`), their sink's dead letters and
    # the roll-up's checkpoints (docs/rollups.md)
    candles_topic_prefix: str = _env("CANDLES_TOPIC_PREFIX", "crypto-candles")
    # price alerts (docs/alerts.md): the rules (compacted, key = rule id), the alerts fired, the alerts the sink could
    # not write, and the alert processor's own state (compacted, key = rule|symbol|source)
    alert_rules_topic: str = _env("ALERT_RULES_TOPIC", "crypto-alert-rules")
    alerts_topic: str = _env("ALERTS_TOPIC", "crypto-alerts")
    alerts_dlq_topic: str = _env("ALERTS_DLQ_TOPIC", "crypto-alerts-dlq")
    alerts_state_topic: str = _env("ALERTS_STATE_TOPIC", "crypto-alerts-state")
    # alert delivery (docs/alerts.md, "Delivery"): the channels (compacted, key = channel name); every outcome of a
    # delivery (key = channel|alert id), which a fourth sink stores; what that sink could not write; and the alerts
    # the notifier gave up on, with the reason in their headers
    alert_channels_topic: str = _env("ALERT_CHANNELS_TOPIC", "crypto-alert-channels")
    alert_deliveries_topic: str = _env("ALERT_DELIVERIES_TOPIC", "crypto-alert-deliveries")
    alert_deliveries_dlq_topic: str = _env("ALERT_DELIVERIES_DLQ_TOPIC", "crypto-alert-deliveries-dlq")
    alerts_undelivered_topic: str = _env("ALERTS_UNDELIVERED_TOPIC", "crypto-alerts-undelivered")
    # what each retention run did (compacted, key = collection): `control status` shows it
    retention_topic: str = _env("RETENTION_TOPIC", "crypto-retention")
    # accounts (docs/security.md): the dashboard's accounts and API tokens (compacted, key = name / token id), the
    # sessions ended by a logout (compacted, kept as long as a session lasts), the audit trail, and what their sink
    # could not write
    users_topic: str = _env("USERS_TOPIC", "crypto-users")
    api_tokens_topic: str = _env("API_TOKENS_TOPIC", "crypto-api-tokens")
    sessions_ended_topic: str = _env("SESSIONS_ENDED_TOPIC", "crypto-sessions-ended")
    audit_topic: str = _env("AUDIT_TOPIC", "crypto-audit")
    accounts_dlq_topic: str = _env("ACCOUNTS_DLQ_TOPIC", "crypto-accounts-dlq")
    # The roll-up's consumer group, and the prefix of each dashboard process's own group.
    streams_group: str = _env("STREAMS_GROUP", "cryptopulse-streams")
    # the alert processor's consumer group, also its transactional id (one instance per group)
    alerts_group: str = _env("ALERTS_GROUP", "cryptopulse-alerts")
    # the notifier's consumer groups and transactional ids: <group> for the alerts naming no known channel, and
    # <group>.<channel>.<created> for each channel's own progress (one process per group)
    notify_group: str = _env("NOTIFY_GROUP", "cryptopulse-notify")
    webui_group_prefix: str = _env("WEBUI_GROUP_PREFIX", "cryptopulse-webui")
    # Scaling (docs/scaling.md). Partitions of the two topics that carry the load: a symbol's ticks stay on one
    # partition (key = symbol), and the roll-up's processes and the sinks' tasks share the partitions. One
    # partition each on one machine; raise an existing topic's with `control topics partitions TOPIC N`.
    prices_partitions: int = _number("PRICES_PARTITIONS", 1, 1, 10_000)
    candles_partitions: int = _number("CANDLES_PARTITIONS", 1, 1, 10_000)
    # Every project topic's replication factor (also the sinks' dead-letter topics'), and the replicas that must
    # have a write before it counts (acks=all); min.insync.replicas is set on the topics only when replicated.
    replication_factor: int = _number("TOPIC_REPLICATION_FACTOR", lambda: _layout().replication_factor, 1, 100)
    min_insync_replicas: int = field(default=0, metadata={"env": "TOPIC_MIN_INSYNC_REPLICAS"})  # 0: from the above
    # Each sink connector's tasks.max: useful up to its topic's partition count (a task reads whole partitions).
    sink_tasks_max: int = _number("SINK_TASKS_MAX", 1, 1, 1_000)
    # Prepended to every connector's name (and so to its `connect-<name>` consumer group): the tests and
    # benchmarks deploy their own sinks beside the user's.
    connector_prefix: str = _env("CONNECTOR_PREFIX", "")
    state_dir: Path = _env("CRYPTOPULSE_STATE_DIR", lambda: str(PROJECT_DIR / ".state"), Path)

    # The repository's schemas/ and connectors/ folders; configurable for an installed (non-editable) copy.
    schemas_dir: Path = _env("SCHEMAS_DIR", lambda: str(PROJECT_DIR / "schemas"), Path)
    connectors_dir: Path = _env("CONNECTORS_DIR", lambda: str(PROJECT_DIR / "connectors"), Path)

    def __post_init__(self) -> None:
        if not self.min_insync_replicas:
            object.__setattr__(self, "min_insync_replicas", _min_insync_replicas(self.replication_factor))

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable the settings read."""
        return tuple(f.metadata["env"] for f in dataclasses.fields(cls) if "env" in f.metadata)

    def candle_topic(self, interval: str) -> str:
        """The topic of one interval's candles."""
        return f"{self.candles_topic_prefix}-{interval}"

    @property
    def candles_topic(self) -> str:
        """The 1-minute candles' topic (rolled up from ticks; every coarser interval is rolled up from it)."""
        return self.candle_topic("1m")

    @property
    def candles_dlq_topic(self) -> str:
        return f"{self.candles_topic_prefix}-dlq"

    @property
    def candles_state_topic(self) -> str:
        """The roll-ups' checkpoints (compacted, key = stage|symbol|source)."""
        return f"{self.candles_topic_prefix}-state"

    @property
    def prices_sink(self) -> str:
        """The name of the connector that writes the prices topic to MongoDB."""
        return f"{self.connector_prefix}mongo-sink-prices"

    @property
    def candles_sink(self) -> str:
        return f"{self.connector_prefix}mongo-sink-candles"

    @property
    def alerts_sink(self) -> str:
        return f"{self.connector_prefix}mongo-sink-alerts"

    @property
    def accounts_sink(self) -> str:
        """The connector that writes accounts, API tokens and the audit trail to MongoDB."""
        return f"{self.connector_prefix}mongo-sink-accounts"

    @property
    def alert_deliveries_sink(self) -> str:
        return f"{self.connector_prefix}mongo-sink-alert-deliveries"


# How long the sink's MongoDB driver waits for a server before an operation fails (its default is 30 s):
# long enough to ride out a store restart inside the task instead of failing it (docs/operations.md).
SINK_SERVER_SELECTION_MS = 120_000


def with_driver_option(uri: str, name: str, value: object) -> str:
    """The connection string with one more driver option, unless it sets that option already."""
    base, _, query = uri.partition("?")
    options = [kv for kv in query.split("&") if kv]
    if any(kv.split("=", 1)[0].lower() == name.lower() for kv in options):
        return uri
    if "/" not in base.split("://", 1)[-1]:
        base += "/"
    return f"{base}?{'&'.join([*options, f'{name}={value}'])}"


def sink_group(connector: str) -> str:
    """The consumer group Kafka Connect gives a sink connector: its committed offsets are what it has written."""
    return f"connect-{connector}"
