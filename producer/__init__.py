"""The producer: market-data sources turned into Avro ticks on the `crypto-prices` topic."""
