"""The source registry, and the simulated market behind the same async interface as the real feeds."""

from __future__ import annotations

from itertools import islice

import pytest

from cryptopulse.errors import UnknownSymbol
from producer.sources import SOURCES, Source, make_source
from producer.sources.simulated import SimulatedMarket, SimulatedSource
from tests.fakes import Sleeps, run, take


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_listed_source_can_be_made_by_name(name, monkeypatch):
    monkeypatch.setenv("COINMARKETCAP_API_KEY", "test-key")
    source = make_source(name, ["btc", "ETH", "BTC"])
    assert isinstance(source, Source) and source.name == name
    assert source.symbols == ["BTC", "ETH"]
    assert (source.reconnects, source.rejected) == (0, 0)


def test_make_source_explains_unknown_names_and_symbols():
    with pytest.raises(ValueError, match="unknown source 'kraken'; known: simulated, coingecko"):
        make_source("kraken", ["BTC"])
    with pytest.raises(UnknownSymbol, match="coinbase has no market for PEPE"):
        make_source("coinbase", ["BTC", "PEPE"])
    with pytest.raises(ValueError, match="give at least one symbol"):
        make_source("binance", [])


def test_simulated_fast_mode_gives_the_market_ticks_without_waiting():
    sleeps = Sleeps()
    source = SimulatedSource(["BTC", "ETH"], seed=7, start_ms=1_000_000, fast=True, sleep=sleeps)
    expected = list(islice(SimulatedMarket(["BTC", "ETH"], seed=7, start_ms=1_000_000).ticks(), 6))
    assert run(take(source.ticks(), 6)) == expected
    assert sleeps == [0] * 6


def test_simulated_ticks_wait_for_their_event_time():
    sleeps = Sleeps()
    source = SimulatedSource(["BTC", "ETH"], seed=7, interval_ms=500, clock=lambda: 1_000.0, sleep=sleeps)
    ticks = run(take(source.ticks(), 6))
    assert [t.ts for t in ticks] == [1_000_000, 1_000_000, 1_000_500, 1_000_500, 1_001_000, 1_001_000]
    assert sleeps == [0, 0, 0.5, 0.5, 1.0, 1.0]  # the clock stands still here, so each wait is from t=1000 s
