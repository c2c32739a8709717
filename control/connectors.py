"""Deploying the Kafka Connect connectors of connectors/*.json, idempotently.

Each file is `{"name": ..., "config": {...}}`. Two kinds of placeholder:
- `${NAME}` is filled here, from the environment or the Settings defaults
  (topic and database names), before the config is sent;
- `${env:NAME}` is left to the Connect worker's EnvVarConfigProvider, because
  only the worker knows how *it* reaches MongoDB and the registry (loopback
  natively, service names under docker compose).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo import ASCENDING, MongoClient

from cryptopulse.settings import Settings

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class ConnectError(RuntimeError):
    """Connect refused a connector or a task failed; the message says which and why."""


@dataclass(frozen=True)
class Connector:
    name: str
    config: dict[str, str]
    path: Path


def placeholder_values(settings: Settings) -> dict[str, str]:
    return {
        "PRICES_TOPIC": settings.prices_topic,
        "PRICES_DLQ_TOPIC": settings.prices_dlq_topic,
        "MONGODB_DATABASE": settings.database,
    }


def load(path: Path, values: dict[str, str]) -> Connector:
    """Read one connector file and fill its `${NAME}` placeholders."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "name" not in data or not isinstance(data.get("config"), dict):
        raise ConnectError(f"{path}: expected {{\"name\": ..., \"config\": {{...}}}}")

    def fill(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ConnectError(f"{path}: unknown placeholder ${{{match.group(1)}}}; known: {', '.join(values)}")
            return values[match.group(1)]

        return PLACEHOLDER.sub(one, value)

    return Connector(data["name"], {k: fill(str(v)) for k, v in data["config"].items()}, path)


def load_all(settings: Settings) -> list[Connector]:
    values = placeholder_values(settings)
    return [load(p, values) for p in sorted(settings.connectors_dir.glob("*.json"))]


def ensure_topics(settings: Settings, names: list[str], partitions: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing])
    for future in futures.values():
        try:
            future.result()
        except Exception as error:  # noqa: BLE001 - a concurrent creation is fine
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return missing


def ensure_indexes(settings: Settings) -> None:
    """The (symbol, ts) index for range queries. Real MongoDB uses it; FerretDB keeps but ignores it."""
    client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        client[settings.database]["prices"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name="symbol_ts")
    finally:
        client.close()


class ConnectClient:
    """The few calls of Connect's REST API that deployment needs."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        except requests.ConnectionError as error:
            raise ConnectError(
                f"Kafka Connect is not reachable at {self.url}; start the stack with `control stack up`"
            ) from error

    def config(self, name: str) -> dict[str, str] | None:
        response = self._request("GET", f"/connectors/{name}/config")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def put_config(self, name: str, config: dict[str, str]) -> None:
        response = self._request("PUT", f"/connectors/{name}/config", json=config)
        if not response.ok:
            raise ConnectError(f"connector {name}: Connect refused the config ({response.status_code}): "
                               f"{response.json().get('message', response.text)}")

    def status(self, name: str) -> dict[str, Any]:
        response = self._request("GET", f"/connectors/{name}/status")
        response.raise_for_status()
        return response.json()

    def restart_failed(self, name: str) -> None:
        self._request("POST", f"/connectors/{name}/restart", params={"includeTasks": "true", "onlyFailed": "true"})

    def wait_running(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the connector and all its tasks are RUNNING.

        A task that FAILED earlier (say, the store restarted under it: the sink
        does not retry writes on a standalone server) is restarted once; a task
        that fails again is an error carrying the first line of its trace.
        """
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        restarted = False
        while time.monotonic() < deadline:
            response = self._request("GET", f"/connectors/{name}/status")
            if response.ok:
                status = response.json()
                states = [status["connector"]["state"], *(t["state"] for t in status["tasks"])]
                failed = [t for t in status["tasks"] if t["state"] == "FAILED"]
                if failed and not restarted:
                    self.restart_failed(name)
                    restarted = True
                    time.sleep(1)
                    continue
                if failed:
                    trace = failed[0].get("trace", "").splitlines()
                    raise ConnectError(f"connector {name}: task {failed[0]['id']} FAILED: "
                                       f"{trace[0] if trace else 'no trace'}")
                if status["tasks"] and all(s == "RUNNING" for s in states):
                    return status
            time.sleep(0.5)
        raise ConnectError(f"connector {name} not RUNNING after {timeout:.0f}s: {status}")


def deploy(settings: Settings, say=print) -> dict[str, str]:
    """Create or update every connector; returns {name: created|updated|unchanged}."""
    connectors = load_all(settings)
    created = ensure_topics(settings, [settings.prices_topic, settings.prices_dlq_topic])
    if created:
        say(f"created topics: {', '.join(created)}")
    ensure_indexes(settings)
    client = ConnectClient(settings.connect_url)
    outcome = {}
    for connector in connectors:
        current = client.config(connector.name)
        wanted = {**connector.config, "name": connector.name}
        if current == wanted:
            outcome[connector.name] = "unchanged"
        else:
            client.put_config(connector.name, connector.config)
            outcome[connector.name] = "created" if current is None else "updated"
        client.wait_running(connector.name)
        say(f"{connector.name}: {outcome[connector.name]}, RUNNING")
    return outcome
