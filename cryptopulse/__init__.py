"""Shared pieces of CryptoPulse: settings from the environment and the Avro serde."""
