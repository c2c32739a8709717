"""Market-data sources: one module per API, each turning its payloads into `Tick`s.

A source knows nothing about Kafka; the publisher does. Build one by name with `make_source`;
modules are imported on demand, so the simulated source needs no WebSocket library loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from producer.sources.base import Source
from producer.sources.validation import reject_reason

__all__ = ["SOURCES", "Source", "make_source", "reject_reason"]

SOURCES: dict[str, str] = {
    "simulated": "a seeded random walk per symbol (offline, the default)",
    "coingecko": "CoinGecko REST /simple/price, polled (USD; optional COINGECKO_API_KEY or COINGECKO_PRO_API_KEY)",
    "binance": "Binance spot WebSocket miniTicker, live each second (USDT; BINANCE_WS_URL)",
    "coinbase": "Coinbase Exchange WebSocket ticker, live per trade (USD; COINBASE_WS_URL)",
    "cmc": "CoinMarketCap REST quotes/latest, polled (USD; needs COINMARKETCAP_API_KEY)",
}
_CLASSES = {
    "simulated": "simulated:SimulatedSource",
    "coingecko": "coingecko:CoinGecko",
    "binance": "binance:Binance",
    "coinbase": "coinbase:Coinbase",
    "cmc": "coinmarketcap:CoinMarketCap",
}


def make_source(name: str, symbols: list[str], **options: Any) -> Source:
    """The source `name` for `symbols`; `options` go to its constructor (base_url, interval, ...),
    and whatever is not given comes from the environment or the defaults.

    Raises UnknownSymbol for a symbol the source has no market for, SourceError for missing
    configuration (such as an API key), ValueError for an unknown source name.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    module, cls = _CLASSES[name].split(":")
    return getattr(import_module(f"producer.sources.{module}"), cls)(symbols, **options)
