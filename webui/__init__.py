"""The dashboard: a Quart app serving live prices over a WebSocket."""
