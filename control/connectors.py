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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests
from pymongo import ASCENDING

from cryptopulse import store, topics
from cryptopulse.candle import INTERVALS
from cryptopulse.errors import ConnectError
from cryptopulse.settings import Settings

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


@dataclass(frozen=True)
class Connector:
    name: str
    config: dict[str, str]
    path: Path


def placeholder_values(settings: Settings) -> dict[str, str]:
    return {
        "PRICES_TOPIC": settings.prices_topic,
        "PRICES_DLQ_TOPIC": settings.prices_dlq_topic,
        # the candles sink reads every interval's topic into that interval's collection
        "CANDLES_TOPICS": ",".join(settings.candle_topic(interval) for interval in INTERVALS),
        **{f"CANDLES_TOPIC_{interval.upper()}": settings.candle_topic(interval) for interval in INTERVALS},
        "CANDLES_DLQ_TOPIC": settings.candles_dlq_topic,
        "ALERTS_TOPIC": settings.alerts_topic,
        "ALERTS_DLQ_TOPIC": settings.alerts_dlq_topic,
        "USERS_TOPIC": settings.users_topic,
        "API_TOKENS_TOPIC": settings.api_tokens_topic,
        "AUDIT_TOPIC": settings.audit_topic,
        "ACCOUNTS_DLQ_TOPIC": settings.accounts_dlq_topic,
        "ALERT_DELIVERIES_TOPIC": settings.alert_deliveries_topic,
        "ALERT_DELIVERIES_DLQ_TOPIC": settings.alert_deliveries_dlq_topic,
        "MONGODB_DATABASE": settings.database,
        # each sink's tasks: up to its topic's partition count (a task reads whole partitions; docs/scaling.md)
        "SINK_TASKS_MAX": str(settings.sink_tasks_max),
        "TOPIC_REPLICATION_FACTOR": str(settings.replication_factor),
    }


def load(path: Path, values: dict[str, str]) -> Connector:
    """Read one connector file and fill its `${NAME}` placeholders (in values, and in keys such as a per-topic
    override's)."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "name" not in data or not isinstance(data.get("config"), dict):
        raise ConnectError(f"{path}: expected {{\"name\": ..., \"config\": {{...}}}}")

    def fill(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ConnectError(f"{path}: unknown placeholder ${{{match.group(1)}}}; known: {', '.join(values)}")
            return values[match.group(1)]

        return PLACEHOLDER.sub(one, value)

    return Connector(data["name"], {fill(k): fill(str(v)) for k, v in data["config"].items()}, path)


def load_all(settings: Settings) -> list[Connector]:
    values = placeholder_values(settings)
    connectors = [load(p, values) for p in sorted(settings.connectors_dir.glob("*.json"))]
    return [replace(c, name=settings.connector_prefix + c.name) for c in connectors]


def ensure_indexes(settings: Settings) -> None:
    """The (symbol, ts) index for range queries. Real MongoDB uses it; FerretDB keeps but ignores it."""
    with store.database(settings) as db:
        db[store.PRICES].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name="symbol_ts")


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

    def validate(self, connector: Connector) -> dict[str, list[str]]:
        """Connect's own check of a config: {field: [errors]} for the fields it rejects."""
        plugin = connector.config["connector.class"].rsplit(".", 1)[-1]
        response = self._request("PUT", f"/connector-plugins/{plugin}/config/validate",
                                 json={**connector.config, "name": connector.name})
        if not response.ok:
            raise ConnectError(f"connector {connector.name}: Connect cannot validate it ({response.status_code}): "
                               f"{response.json().get('message', response.text)}")
        return {c["value"]["name"]: c["value"]["errors"] for c in response.json()["configs"] if c["value"]["errors"]}

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
                    raise ConnectError(f"connector {name}: task {failed[0]['id']} FAILED: "
                                       f"{trace_summary(failed[0].get('trace', ''))}")
                if status["tasks"] and all(s == "RUNNING" for s in states):
                    return status
            time.sleep(0.5)
        raise ConnectError(f"connector {name} not RUNNING after {timeout:.0f}s: {status}")


def trace_summary(trace: str) -> str:
    """The first line of a Java stack trace and its root cause, which together say what went wrong."""
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    if not lines:
        return "no trace"
    causes = [line for line in lines if line.startswith("Caused by:")]
    return lines[0] if not causes else f"{lines[0]} ... {causes[-1]}"


def deploy(settings: Settings, dry_run: bool = False, say=print) -> dict[str, str]:
    """Validate every connector, then create or update each one and wait until it runs.

    Returns {name: created|updated|unchanged}. Nothing is applied when any config is invalid;
    with `dry_run` nothing is applied at all and the result says what would happen.
    """
    connectors = load_all(settings)
    client = ConnectClient(settings.connect_url)
    invalid = {c.name: errors for c in connectors if (errors := client.validate(c))}
    if invalid:
        lines = [f"  {name}.{field}: {'; '.join(errors)}"
                 for name, fields in invalid.items() for field, errors in fields.items()]
        raise ConnectError("invalid connector config, nothing applied:\n" + "\n".join(lines))

    plan = {}
    for connector in connectors:
        current = client.config(connector.name)
        wanted = {**connector.config, "name": connector.name}
        plan[connector.name] = "created" if current is None else ("unchanged" if current == wanted else "updated")
    if dry_run:
        for name, outcome in plan.items():
            say(f"{name}: would be {outcome} (dry run)")
        return plan

    created = topics.create_missing(settings)
    if created:
        say(f"created topics: {', '.join(created)}")
    ensure_indexes(settings)
    for connector in connectors:
        if plan[connector.name] != "unchanged":
            client.put_config(connector.name, connector.config)
        client.wait_running(connector.name)
        say(f"{connector.name}: {plan[connector.name]}, RUNNING")
    return plan
