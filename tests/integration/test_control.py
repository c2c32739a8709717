"""The `control` commands against the real stack."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import requests
from confluent_kafka import Producer

from control.connectors import load, placeholder_values
from tests import children
from tests.integration.conftest import wait_for
from tests.namespace import PREFIX

SINK = f"{PREFIX}mongo-sink-prices"  # the tests' own sink (tests/namespace.py)


def control(*args: str, env: dict | None = None, timeout: float = 180) -> children.Finished:
    return children.run(["control", *args], timeout=timeout, env={**os.environ, **(env or {})})


def test_deploy_connectors_dry_run_applies_nothing(settings):
    result = control("deploy-connectors", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{SINK}: would be unchanged (dry run)" in result.stdout


def test_an_invalid_field_is_named_and_nothing_is_applied(settings, tmp_path):
    config = json.loads((settings.connectors_dir / "mongo-sink-prices.json").read_text())
    config["name"] = f"invalid-{uuid.uuid4().hex[:8]}"
    config["config"]["max.batch.size"] = "lots"
    (tmp_path / "bad.json").write_text(json.dumps(config))
    shutil.copy(settings.connectors_dir / "mongo-sink-prices.json", tmp_path)
    result = control("deploy-connectors", env={"CONNECTORS_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert f"{config['name']}.max.batch.size: Invalid value lots" in result.stderr
    assert "nothing applied" in result.stderr and "Traceback" not in result.stderr
    assert requests.get(f"{settings.connect_url}/connectors/{config['name']}", timeout=10).status_code == 404


def test_schemas_check_rejects_an_incompatible_change_with_the_reason(settings, tmp_path):
    tick = json.loads((settings.schemas_dir / "tick.avsc").read_text())
    tick["fields"].append({"name": "fee", "type": "double"})
    (tmp_path / "incompatible.avsc").write_text(json.dumps(tick))
    refused = control("schemas", "check", str(tmp_path / "incompatible.avsc"))
    assert refused.returncode == 1
    assert "NOT compatible" in refused.stdout and "field 'fee' is added without a default" in refused.stdout

    tick["fields"][-1] = {"name": "fee", "type": ["null", "double"], "default": None}
    (tmp_path / "compatible.avsc").write_text(json.dumps(tick))
    accepted = control("schemas", "check", str(tmp_path / "compatible.avsc"))
    assert accepted.returncode == 0 and "is compatible" in accepted.stdout, accepted.stdout + accepted.stderr


def test_schemas_list_show_and_diff(settings):
    subject = f"{PREFIX}control-{uuid.uuid4().hex[:8]}"
    base = settings.schema_registry_url
    tick = json.loads((settings.schemas_dir / "tick.avsc").read_text())
    for added in (None, {"name": "venue", "type": ["null", "string"], "default": None}):
        if added:
            tick["fields"].append(added)
        requests.post(f"{base}/subjects/{subject}/versions", json={"schema": json.dumps(tick)},
                      timeout=10).raise_for_status()

    listing = control("schemas", "list")
    line = next(line for line in listing.stdout.splitlines() if line.startswith(subject))
    assert "versions 1,2" in line and "latest v2" in line and "BACKWARD" in line
    shown = control("schemas", "show", subject, "--version", "1")
    assert shown.returncode == 0 and '"name": "Tick"' in shown.stdout and "venue" not in shown.stdout
    diff = control("schemas", "diff", subject, "1", "2")
    assert diff.stdout.strip() == '+ venue: [null, string] (default null)'


def test_topics_are_listed_with_their_settings(settings):
    result = control("topics")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(settings.prices_topic + " "))
    assert "1 partition(s)" in line and "retention" in line and "records" in line


def test_status_shows_a_paused_and_a_failed_connector(settings, mongo):
    # a stored tick first, so that the collections have something to count
    symbol = f"S{uuid.uuid4().hex[:6].upper()}"
    children.run(["producer", "run", "--symbols", symbol, "--count", "3", "--fast", "--metrics-port", "-1"],
                 check=True, timeout=120)
    wait_for(lambda: mongo[settings.database]["prices"].count_documents({"symbol": symbol}) == 3, 120,
             "three ticks stored")
    requests.put(f"{settings.connect_url}/connectors/{SINK}/pause", timeout=10).raise_for_status()
    failing = f"{PREFIX}failing-{uuid.uuid4().hex[:8]}"
    # the file's placeholders (topics, tasks.max, replication) filled from the settings, as deploy-connectors does
    config = load(settings.connectors_dir / "mongo-sink-prices.json", placeholder_values(settings)).config
    # Without error tolerance, a record that is not Avro fails the task.
    config.update({"topics": f"{failing}-topic", "database": settings.database, "errors.tolerance": "none"})
    del config["errors.deadletterqueue.topic.name"]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(f"{failing}-topic", key=b"BTC", value=b"not avro")
    assert producer.flush(10) == 0
    try:
        wait_for(lambda: requests.get(f"{settings.connect_url}/connectors/{SINK}/status", timeout=10)
                 .json()["connector"]["state"] == "PAUSED", 30, "the sink to pause")
        requests.put(f"{settings.connect_url}/connectors/{failing}/config", json=config, timeout=30).raise_for_status()

        def failed() -> bool:
            status = requests.get(f"{settings.connect_url}/connectors/{failing}/status", timeout=10).json()
            return status.get("connector", {}).get("state") == "FAILED" or any(
                t["state"] == "FAILED" for t in status.get("tasks", []))

        wait_for(failed, 60, "the broken connector to fail")

        def shows_failure() -> children.Finished | None:
            # the supervisor restarts a FAILED task (this one fails again on the same record): poll for a FAILED moment
            result = control("status")
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            return result if any(line.strip().startswith(failing) and "FAILED" in line for line in lines) else None

        result = wait_for(shows_failure, 60, "control status to show the FAILED connector")
        lines = result.stdout.splitlines()
        assert any(line.strip().startswith(SINK) and "PAUSED" in line for line in lines), result.stdout
        wait_for(lambda: json.loads(control("status", "--json").stdout)["supervision"]["connectors"]
                 .get(failing, {}).get("restarts", 0) >= 1, 60, "the supervisor to restart the FAILED connector")
        as_json = json.loads(control("status", "--json").stdout)
        assert as_json["services"]["kafka"]["up"] and as_json["store"]["prices"]["documents"] > 0
        assert as_json["store"]["prices"]["oldest"] and "candles_1m" in as_json["store"]
        lag = {(row["group"], row["topic"]): row["lag"] for row in as_json["lag"]}
        assert lag[(f"connect-{SINK}", settings.prices_topic)] >= 0, as_json["lag"]
        assert any(line.strip().startswith("collection candles_1m") for line in lines), result.stdout
        assert as_json["docker"]["engine"] is False and "no Docker engine" in as_json["docker"]["note"]
    finally:
        requests.delete(f"{settings.connect_url}/connectors/{failing}", timeout=30)
        requests.put(f"{settings.connect_url}/connectors/{SINK}/resume", timeout=10)
        time.sleep(1)
    wait_for(lambda: requests.get(f"{settings.connect_url}/connectors/{SINK}/status", timeout=10)
             .json()["connector"]["state"] == "RUNNING", 30, "the sink to resume")


def test_an_unreachable_service_is_named_without_a_trace(settings):
    result = control("deploy-connectors", env={"CONNECT_URL": "http://127.0.0.1:1"})
    assert result.returncode == 1
    assert "Kafka Connect is not reachable at http://127.0.0.1:1" in result.stderr
    assert "control stack up" in result.stderr and "Traceback" not in result.stderr
