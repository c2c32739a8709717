"""`control status`: the whole pipeline on one screen, gathered from each service's own API.

Every probe is independent and short: a service that is down is reported as down,
with its address, and never stops the others from being reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
from confluent_kafka import ConsumerGroupState, TopicPartition
from pymongo import ASCENDING, MongoClient

from control.stack.supervision import supervision_report
from cryptopulse import alert_channels, kafka, topics
from cryptopulse import store as cryptostore
from cryptopulse.avro import AvroCodec
from cryptopulse.redact import redact
from cryptopulse.settings import Settings, sink_group
from cryptopulse.text import terminal_safe
from cryptopulse.times import DAY_MS, iso_utc

DASHBOARD_URL = "http://127.0.0.1:8000"


def _probe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except requests.ConnectionError:
        return {"up": False, "error": "not reachable"}
    except Exception as error:  # noqa: BLE001 - a probe reports, it does not fail
        return {"up": False, "error": str(error).splitlines()[0][:200]}


def services(settings: Settings) -> dict[str, dict[str, Any]]:
    def brokers() -> dict[str, Any]:
        metadata = kafka.admin(settings).list_topics(timeout=5)
        return {"up": True, "brokers": len(metadata.brokers)}

    def registry() -> dict[str, Any]:
        base = settings.schema_registry_url.split("/apis/")[0]
        response = requests.get(f"{base}/apis/registry/v2/system/info", timeout=5)
        version = response.json().get("version") if response.ok else None
        requests.get(f"{settings.schema_registry_url}/subjects", timeout=5).raise_for_status()
        return {"up": True, "version": version}

    def connect() -> dict[str, Any]:
        return {"up": True, "version": requests.get(settings.connect_url, timeout=5).json()["version"]}

    def mongodb() -> dict[str, Any]:
        client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000)
        try:
            info = client.admin.command("buildInfo")
        finally:
            client.close()
        ferret = info.get("ferretdbVersion")
        return {"up": True, "version": f"FerretDB {ferret}" if ferret else f"MongoDB {info['version']}"}

    def dashboard() -> dict[str, Any]:
        requests.get(f"{DASHBOARD_URL}/healthz", timeout=3).raise_for_status()
        return {"up": True}

    probes = {"kafka": (settings.kafka_bootstrap, brokers), "schema registry": (settings.schema_registry_url, registry),
              "connect": (settings.connect_url, connect), "mongodb": (settings.mongodb_uri, mongodb),
              "dashboard": (DASHBOARD_URL, dashboard)}
    # addresses as printed: a connection string's password never reaches a terminal or a CI log
    return {name: {"address": redact(address), **_probe(fn)} for name, (address, fn) in probes.items()}


def connectors(settings: Settings) -> list[dict[str, Any]]:
    expanded = requests.get(f"{settings.connect_url}/connectors?expand=status", timeout=10).json()
    rows = []
    for name, data in sorted(expanded.items()):
        status = data["status"]
        tasks = [{"id": t["id"], "state": t["state"],
                  **({"error": t["trace"].strip().splitlines()[0][:200]} if t.get("trace") else {})}
                 for t in status["tasks"]]
        rows.append({"name": name, "state": status["connector"]["state"], "tasks": tasks})
    return rows



def lag(settings: Settings) -> list[dict[str, Any]]:
    """Records behind the end of the prices, candles and alerts topics, per consumer group of the pipeline.

    A dashboard process has a group of its own, gone with it: only groups with live members count there.
    """
    admin = kafka.admin(settings)
    listings = admin.list_consumer_groups().result(timeout=10).valid
    # whose lag is shown: the sink connectors, the candle roll-up, the alert processor, the notifier (its router and
    # each live channel: how far behind the alerts it is) and the dashboards
    shown = (sink_group(settings.connector_prefix), settings.streams_group, settings.alerts_group,
             settings.notify_group, settings.webui_group_prefix)
    channels = {c.progress_group(settings.notify_group) for c in alert_channels.channels(settings)}
    groups = sorted(g.group_id for g in listings if g.group_id.startswith(shown) and not (
        g.group_id.startswith(settings.webui_group_prefix) and g.state == ConsumerGroupState.EMPTY) and not (
        g.group_id.startswith(f"{settings.notify_group}.") and g.group_id not in channels))
    rows = []
    for topic in (settings.prices_topic, settings.candles_topic, settings.alerts_topic):
        ends = topics.end_offsets_by_partition(settings, topic)
        for group in groups if ends else []:
            committed = topics.committed_offsets(settings, group, topic, list(ends))
            if all(offset < 0 for offset in committed.values()):
                continue  # the group reads other topics
            behind = sum(end - max(committed.get(p, 0), 0) for p, end in ends.items())
            rows.append({"group": group, "topic": topic, "lag": behind})
    return rows


COLLECTIONS = cryptostore.TIME_FIELD  # collection: its time field (ticks, and the candles of every interval)


def retention_runs(settings: Settings) -> dict[str, dict[str, Any]]:
    """The last retention run of each collection, from the retention topic (streams/retention.py reports them)."""
    codec = AvroCodec(settings, settings.retention_topic, "retention_run")
    last: dict[str, dict[str, Any]] = {}
    for message in topics.read_to_end(settings, settings.retention_topic, timeout=15):
        if message.value() is None or message.key() is None:
            continue
        try:
            run = codec.decode(message.value())
        except Exception:  # noqa: BLE001 - a bad record says nothing about the runs
            continue
        last[run["collection"]] = {
            "at": iso_utc(run["at"]), "deleted": run["deleted"],
            "keep_days": None if run["keep_ms"] is None else round(run["keep_ms"] / DAY_MS, 3),
            "cutoff": iso_utc(run["cutoff"]) if run["cutoff"] else None,
            "seconds": run["seconds"], "store": run["store"], "error": run["error"]}
    return last


def store(settings: Settings) -> dict[str, Any]:
    """Documents, size and oldest record of the tick and candle collections.

    Counts and sizes come from collStats (a count would scan the table on FerretDB); the oldest
    record needs one sorted query per collection, a scan there too (a few seconds at 100 k ticks).
    """
    client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000, tz_aware=True)
    try:
        db = client[settings.database]
        report, existing = {}, set(db.list_collection_names())
        for name, field in COLLECTIONS.items():
            if name not in existing:
                report[name] = {"documents": 0, "bytes": 0, "oldest": None}
                continue
            stats = db.command("collStats", name)
            oldest = db[name].find_one({}, {field: 1}, sort=[(field, ASCENDING)])
            report[name] = {"documents": stats.get("count", 0), "bytes": stats.get("size", 0),
                            "oldest": iso_utc(oldest[field]) if oldest else None}
        return report
    finally:
        client.close()


# Why a record is in a dead-letter topic, from the headers Connect writes with it
# (`errors.deadletterqueue.context.headers.enable`). The prices sink inserts ticks, so a tick stored once
# already (a redelivery after a crash, a replay, a repeated back-fill) comes back from the store as a
# duplicate-key write error and is reported there too: harmless, it is stored. The sink reports write errors
# as com.mongodb.kafka.connect.sink.dlq.* exceptions whose class name and message format ("v=1, code=<n>,
# ...") the connector documents as public API; a duplicate `_id` is code 11000 on MongoDB and FerretDB.
CAUSES = {
    "unconvertible": "could not be converted",
    "rejected": "rejected by the store",
    "duplicate": "redelivered duplicates (already stored)",
}
SINK_DLQ_EXCEPTIONS = "com.mongodb.kafka.connect.sink.dlq."
DUPLICATE_KEY = "v=1, code=11000,"
_STAGE, _CLASS, _MESSAGE = (f"__connect.errors.{h}" for h in ("stage", "exception.class.name", "exception.message"))
CENSUS_BUDGET_S = 10.0  # the first count of a large topic continues at the next `control status`


def dead_letter_cause(headers: list[tuple[str, bytes | None]] | None) -> tuple[str, str]:
    """(cause, why) of one dead-letter record: a key of CAUSES and a short human reason."""
    found = {k: v for k, v in headers or () if k in (_STAGE, _CLASS, _MESSAGE)}
    stage, exception, message = ((found.get(h) or b"").decode(errors="replace") for h in (_STAGE, _CLASS, _MESSAGE))
    why = f"{stage or 'no stage'}: {exception.rsplit('.', 1)[-1] or 'no exception'}: {message}"[:160]
    if stage == "TASK_PUT" and exception.startswith(SINK_DLQ_EXCEPTIONS):
        return ("duplicate" if message.startswith(DUPLICATE_KEY) else "rejected"), why
    return "unconvertible", why  # a converter or transform, or the sink could not make a document of it


def census_group(topic: str) -> str:
    """The consumer group whose committed offsets (and their metadata) keep a dead-letter topic's counts."""
    return f"{topic}-census"


def dead_letters(settings: Settings, topic: str, budget_s: float = CENSUS_BUDGET_S) -> dict[str, Any]:
    """Records of a dead-letter topic counted by cause: {cause: n, ..., "expired", "uncounted", "last_broken"}.

    Counted incrementally: the counts so far ride as metadata on the offsets a consumer group of its own
    commits, so each run reads only what arrived since (Kafka drops them with the topic). Records that
    retention removed before they were counted are "expired"; what the time budget left is "uncounted".
    """
    consumer = kafka.consumer(settings, "control", census_group(topic), {"auto.offset.reset": "earliest",
                                                                          "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        saved = consumer.committed([TopicPartition(topic, p) for p in metadata.partitions], timeout=10)
        states: dict[int, dict[str, Any]] = {}
        positions: dict[int, int] = {}
        ends: dict[int, int] = {}
        for tp in saved:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            try:
                state = json.loads(tp.metadata) if tp.offset >= 0 and tp.metadata else {}
            except ValueError:
                state = {}
            position = tp.offset if state.get("v") == 1 and 0 <= tp.offset <= high else 0
            if position == 0:
                state = {}
            state = {"v": 1, **dict.fromkeys((*CAUSES, "expired"), 0), **state}
            if position < low:
                state["expired"] += low - position
                position = low
            states[tp.partition], positions[tp.partition], ends[tp.partition] = state, position, high
        todo = {p for p in positions if positions[p] < ends[p]}
        if todo:
            consumer.assign([TopicPartition(topic, p, positions[p]) for p in todo])
            deadline = time.monotonic() + budget_s
            while todo and time.monotonic() < deadline:
                for message in consumer.consume(10_000, timeout=0.5):
                    p = message.partition()
                    if message.error() is not None or p not in todo:
                        continue
                    cause, why = dead_letter_cause(message.headers())
                    states[p][cause] += 1
                    if cause != "duplicate":
                        states[p]["last_broken"] = {"offset": message.offset(), "why": why}
                    positions[p] = message.offset() + 1
                    if positions[p] >= ends[p]:
                        todo.discard(p)
            consumer.commit(offsets=[TopicPartition(topic, p, positions[p], json.dumps(states[p]))
                                     for p in positions], asynchronous=False)
        total: dict[str, Any] = {k: sum(s[k] for s in states.values()) for k in (*CAUSES, "expired")}
        total["uncounted"] = sum(ends[p] - positions[p] for p in positions)
        broken = [(p, s["last_broken"]) for p, s in states.items() if s.get("last_broken")]
        total["last_broken"] = ({"partition": broken[-1][0], **broken[-1][1]} if broken else None)
        return total
    finally:
        consumer.close()


def last_ticks(settings: Settings, tail: int = 3000) -> dict[str, dict[str, str]]:
    """The newest event time per symbol among the topic's last `tail` records per partition."""
    ends = topics.end_offsets_by_partition(settings, settings.prices_topic)
    codec = AvroCodec(settings, settings.prices_topic, "tick")
    consumer = kafka.consumer(settings, "control", "cryptopulse-control-probe", {"log_level": 0})
    last: dict[str, dict[str, Any]] = {}
    try:
        consumer.assign([TopicPartition(settings.prices_topic, p, max(end - tail, 0)) for p, end in ends.items()])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 15
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is None or message.error():
                continue
            if message.offset() >= ends[message.partition()] - 1:
                remaining.discard(message.partition())
            try:
                tick = codec.decode(message.value())
            except Exception:  # noqa: BLE001 - not Avro: the dead-letter topic's business, not ours
                continue
            if tick["symbol"] not in last or tick["ts"] > last[tick["symbol"]]["ts"]:
                last[tick["symbol"]] = tick
    finally:
        consumer.close()
    return {terminal_safe(symbol): {"ts": iso_utc(t["ts"]), "source": terminal_safe(t["source"])}
            for symbol, t in sorted(last.items())}


def docker_health() -> dict[str, Any]:
    """Health of the compose services' containers, or why it cannot be known."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as error:  # noqa: BLE001 - no engine is the normal case on the native stack
        return {"engine": False, "note": f"no Docker engine ({type(error).__name__}): container health not checked"}
    containers = {}
    for container in client.containers.list(all=True, filters={"label": "com.docker.compose.project"}):
        health = container.attrs.get("State", {}).get("Health", {}).get("Status", "no healthcheck")
        containers[container.labels.get("com.docker.compose.service", container.name)] = {
            "state": container.status, "health": health}
    return {"engine": True, "containers": containers}


def supervision(settings: Settings) -> dict[str, Any]:
    """What the supervisor (`control supervise`) has seen: restarts, and anything down, held or flapping."""
    report = supervision_report(settings.state_dir)
    if report.get("updated") is None:
        return {"running": False, "note": "no supervisor report (`control stack up` starts the supervisor)"}
    age = time.time() - report["updated"]
    keep = ("state", "restarts", "last_error")
    return {
        "running": age < 15,
        "report_age_s": round(age, 1),
        "components": {n: {k: r.get(k) for k in keep} for n, r in report["components"].items()},
        "connectors": {n: {k: r.get(k) for k in keep} for n, r in report["connectors"].items()},
    }


def gather(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"at": iso_utc(datetime.now(UTC)), "services": services(settings)}
    up = {name for name, s in report["services"].items() if s.get("up")}
    started = time.monotonic()
    report["connectors"] = _probe(lambda: connectors(settings)) if "connect" in up else []
    report["lag"] = _probe(lambda: lag(settings)) if "kafka" in up else []
    names = [settings.prices_topic, settings.prices_dlq_topic]
    report["topics"] = _probe(lambda: topics.end_offsets(settings, names)) if "kafka" in up else {}
    dlqs = (settings.prices_dlq_topic, settings.candles_dlq_topic, settings.alerts_dlq_topic,
            settings.alert_deliveries_dlq_topic)
    report["dead_letters"] = {t: _probe(lambda t=t: dead_letters(settings, t)) for t in dlqs} if "kafka" in up else {}
    report["store"] = _probe(lambda: store(settings)) if "mongodb" in up else {}
    report["last_tick"] = _probe(lambda: last_ticks(settings)) if {"kafka", "schema registry"} <= up else {}
    report["retention"] = _probe(lambda: retention_runs(settings)) if {"kafka", "schema registry"} <= up else {}
    report["supervision"] = supervision(settings)
    report["docker"] = docker_health()
    report["took_s"] = round(time.monotonic() - started, 2)
    return report


def render(report: dict[str, Any]) -> str:
    lines = ["services"]
    for name, s in report["services"].items():
        detail = s.get("version") or (f"{s['brokers']} broker(s)" if "brokers" in s else "")
        lines.append(f"  {name:16} {'up' if s.get('up') else 'DOWN':5} {s['address']:42} "
                     f"{detail if s.get('up') else s.get('error', '')}")
    lines.append("connectors")
    connectors_ = report["connectors"]
    if isinstance(connectors_, dict):
        lines.append(f"  unknown: {connectors_.get('error')}")
    for c in connectors_ if isinstance(connectors_, list) else []:
        tasks = ", ".join(f"task {t['id']} {t['state']}" + (f" ({t['error']})" if "error" in t else "")
                          for t in c["tasks"])
        lines.append(f"  {c['name']:24} {c['state']:9} {tasks or 'no tasks'}")
    lines.append("consumer lag (records behind the end of the topic)")
    for row in report["lag"] if isinstance(report["lag"], list) else []:
        lines.append(f"  {row['group']:46} {row['topic']:20} {row['lag']:>10,}")
    lines.append("records")
    for topic, count in (report["topics"] or {}).items():
        lines.append(f"  topic {topic:34} {count:>10,}")
    for name, c in (report["store"] or {}).items():
        if isinstance(c, dict):
            lines.append(f"  collection {name:29} {c['documents']:>10,}  {c['bytes'] / 2**20:8.1f} MiB  "
                         f"oldest {c['oldest'] or '-'}")
    lines.extend(_render_dead_letters(report.get("dead_letters") or {}))
    lines.extend(_render_retention(report.get("retention") or {}))
    lines.append("last tick per symbol (newest in the topic)")
    for symbol, last in (report["last_tick"] or {}).items():
        if isinstance(last, dict):
            lines.append(f"  {symbol:10} {last['ts']}  ({last['source']})")
    lines.extend(_render_supervision(report["supervision"]))
    docker = report["docker"]
    lines.append("docker: " + (docker["note"] if not docker["engine"] else ", ".join(
        f"{name} {c['state']}/{c['health']}" for name, c in sorted(docker["containers"].items())) or "no containers"))
    return "\n".join(lines)


def _render_dead_letters(dead: dict[str, Any]) -> list[str]:
    lines = ["dead letters (why each record of a dead-letter topic is there)"]
    for topic, counts in dead.items():
        if not counts or "error" in counts:
            lines.append(f"  {topic:40} " + (f"unknown: {counts['error']}" if counts else "no such topic"))
            continue
        broken = counts["unconvertible"] + counts["rejected"]
        text = (f"{counts['unconvertible']:,} {CAUSES['unconvertible']}, {counts['rejected']:,} {CAUSES['rejected']}"
                f"; {counts['duplicate']:,} {CAUSES['duplicate']}")
        extra = [f"{counts[k]:,} {k}" for k in ("expired", "uncounted") if counts[k]]
        lines.append(f"  {topic:40} {text}" + (f" ({', '.join(extra)})" if extra else ""))
        if broken and counts.get("last_broken"):
            last = counts["last_broken"]
            lines.append(f"  {'':40} last broken record: partition {last['partition']} offset {last['offset']:,}, "
                         f"{last['why']}")
    return lines


def _render_retention(runs: dict[str, Any]) -> list[str]:
    lines = ["retention (the last run per collection: `streams run` applies it)"]
    if "error" in runs and not isinstance(runs["error"], dict):
        return [*lines, f"  unknown: {runs['error']}"]
    if not runs:
        return [*lines, "  no run reported yet"]
    for name, run in sorted(runs.items()):
        keep = "for ever" if run["keep_days"] is None else f"{run['keep_days']:g} d"
        what = f"FAILED: {run['error']}" if run["error"] else (
            "a TTL index deletes" if run["store"] == "mongodb" else f"deleted {run['deleted']:,} older than "
            f"{run['cutoff'] or '-'} in {run['seconds']:.1f} s")
        lines.append(f"  {name:16} keeps {keep:9} {run['at']}  {what}")
    return lines


def _render_supervision(sup: dict[str, Any]) -> list[str]:
    if "note" in sup:
        return [f"supervision: {sup['note']}"]
    lines = ["supervision" + ("" if sup["running"] else
                              f" (the supervisor is NOT running: its last report is {sup['report_age_s']:.0f} s old)")]
    for kind in ("components", "connectors"):
        for name, r in sorted(sup[kind].items()):
            if r["state"] == "stopped" and not r["restarts"]:
                continue
            trouble = r["state"] not in ("running", "stopped")
            state = r["state"].upper() if trouble else r["state"]
            lines.append(f"  {name:24} {state:11} restarts {r['restarts'] or 0:<4}"
                         + (f" {r['last_error']}" if trouble and r.get("last_error") else ""))
    return lines
