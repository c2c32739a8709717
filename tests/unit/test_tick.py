import json
import math

import fastavro
import pytest

from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from producer.sources.simulated import SimulatedMarket

RAW_SCHEMA = json.loads((Settings().schemas_dir / "tick.avsc").read_text())
SCHEMA = fastavro.parse_schema(RAW_SCHEMA)


def take(market: SimulatedMarket, n: int) -> list[Tick]:
    it = market.ticks()
    return [next(it) for _ in range(n)]


def test_id_is_derived_from_the_identity():
    tick = Tick(symbol="BTC", source="binance", ts=1_732_752_000_123, price=1.0)
    assert tick.id == "BTC|binance|1732752000123"
    assert tick.to_record()["_id"] == tick.id


def test_record_matches_the_avro_schema():
    tick = Tick(symbol="ETH", source="simulated", ts=1_700_000_000_000, price=3000.5, volume_24h=1e9)
    record = tick.to_record(published_at=1_700_000_000_050)
    assert fastavro.validate(record, SCHEMA, raise_errors=True)
    assert fastavro.validate(Tick("XRP", "simulated", 1, 0.5).to_record(), SCHEMA, raise_errors=True)


def test_optional_fields_are_nullable_with_defaults():
    optional = [f for f in RAW_SCHEMA["fields"] if isinstance(f["type"], list)]
    assert {f["name"] for f in optional} == {"volume_24h", "change_24h_pct", "published_at"}
    assert all(f["type"][0] == "null" and f["default"] is None for f in optional)
    assert "Rolling 24 h" in next(f for f in RAW_SCHEMA["fields"] if f["name"] == "volume_24h")["doc"]


def test_simulated_market_is_deterministic_for_a_seed():
    a = take(SimulatedMarket(["BTC", "ETH"], seed=7, start_ms=1_000_000), 200)
    b = take(SimulatedMarket(["BTC", "ETH"], seed=7, start_ms=1_000_000), 200)
    c = take(SimulatedMarket(["BTC", "ETH"], seed=8, start_ms=1_000_000), 200)
    assert a == b
    assert [t.price for t in a] != [t.price for t in c]


def test_simulated_ticks_are_well_formed_and_unique():
    ticks = take(SimulatedMarket(["BTC", "ETH", "XRP"], seed=1, start_ms=5_000, interval_ms=250), 3000)
    assert len({t.id for t in ticks}) == len(ticks)
    assert all(t.source == "simulated" and t.price > 0 and math.isfinite(t.price) for t in ticks)
    btc = [t for t in ticks if t.symbol == "BTC"]
    assert [t.ts for t in btc[:3]] == [5_000, 5_250, 5_500]
    # A random walk moves, but one step of a 60 %/year volatility is small.
    steps = [abs(b.price / a.price - 1) for a, b in zip(btc, btc[1:], strict=False)]
    assert 0 < max(steps) < 0.01


def test_an_unknown_symbol_still_gets_a_walk():
    (tick,) = take(SimulatedMarket(["PEPE"], seed=1, start_ms=0), 1)
    assert tick.symbol == "PEPE" and tick.price > 0


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        SimulatedMarket(["BTC"], seed=1, start_ms=0, interval_ms=0)
