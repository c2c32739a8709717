"""Market-data sources: one module per API, each turning its payloads into `Tick`s.

A source knows nothing about Kafka; the publisher does.
"""
