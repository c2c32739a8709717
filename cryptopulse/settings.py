"""Where every service is, read from the environment.

The defaults are the native stack's loopback addresses, which docker compose
publishes on the same ports, so one configuration serves both ways of running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Settings:
    """Addresses and names shared by the producer, the control plane and the dashboard."""

    kafka_bootstrap: str = field(default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    # Apicurio's Confluent-compatible API, for the Python clients.
    schema_registry_url: str = field(
        default_factory=lambda: _env("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
    )
    connect_url: str = field(default_factory=lambda: _env("CONNECT_URL", "http://127.0.0.1:8083"))
    mongodb_uri: str = field(default_factory=lambda: _env("MONGODB_URI", "mongodb://127.0.0.1:27017"))
    database: str = field(default_factory=lambda: _env("MONGODB_DATABASE", "crypto_db"))
    prices_topic: str = field(default_factory=lambda: _env("PRICES_TOPIC", "crypto-prices"))
    prices_dlq_topic: str = field(default_factory=lambda: _env("PRICES_DLQ_TOPIC", "crypto-prices-dlq"))
    candles_topic: str = field(default_factory=lambda: _env("CANDLES_TOPIC", "crypto-candles-1m"))
    candles_dlq_topic: str = field(default_factory=lambda: _env("CANDLES_DLQ_TOPIC", "crypto-candles-1m-dlq"))
    state_dir: Path = field(default_factory=lambda: Path(_env("CRYPTOPULSE_STATE_DIR", str(PROJECT_DIR / ".state"))))

    # The repository's schemas/ and connectors/ folders; configurable for an installed (non-editable) copy.
    schemas_dir: Path = field(default_factory=lambda: Path(_env("SCHEMAS_DIR", str(PROJECT_DIR / "schemas"))))
    connectors_dir: Path = field(
        default_factory=lambda: Path(_env("CONNECTORS_DIR", str(PROJECT_DIR / "connectors")))
    )
