"""The operator's command line: the native stack, connectors, schemas, topics, backfill."""
