"""Alert rules from the dashboard: list them, add one, remove one (the chart page's form, webui/static/alerts.js).

    GET    /alerts/rules        {"rules": [...], "channels": [{"name", "kind"}], "writable": bool}   every client
                                (rules and channel names are not secret; a channel's address is not shown)
    POST   /alerts/rules        {"symbol", "condition", "value", "minutes"?, "source"?, "notify"?: [names]}
                                -> 201 {"rule": ...}
    DELETE /alerts/rules/<id>   -> 200 {"removed": ...}

The rules are written to the compacted rules topic by cryptopulse/alert_rules.py, the same code as
`control alerts`, and every value is checked by cryptopulse/alert.py's rule_* functions, so the page and the
command refuse the same input with the same reason (a 400 {"error": reason} here).

With accounts (webui/auth.py) a rule belongs to the account that added it: a page lists its account's rules
(an admin's, every rule), removes only those (404 for another's: it does not exist for this account), offers and
accepts only its account's channels (`control channels add --user`; an admin's page also the operator's), and a viewer,
or a token of scope read, writes nothing (403); every write of a session carries its CSRF token (checked by
webui/auth.py before this runs). Without accounts (local mode) nobody is authenticated, so writing is limited:
- only clients on this machine that no proxy forwarded (`is_local`, as /healthz's detail), unless
  WEBUI_ALERT_RULES_REMOTE=1 — 403 otherwise;
- CSRF: a browser's Origin must pass the WebSocket's rule (the page's own host, or WEBUI_ALLOWED_ORIGINS), and
  a POST must carry Content-Type application/json (415 otherwise) — a cross-site page can send neither that
  nor a DELETE without a CORS preflight, which this app never grants; the Host allowlist ran before (421);
- every request draws on its address's budget (webui/guard.py, shared with the history API and the
  WebSocket's subscribes: 429 past it), and one write runs at a time (`State.rules_writes`).

Reads never touch Kafka: the rules and the channels are tables the dashboard follows (`kafka.Table`, started with
the app), so a list answers in microseconds and never waits on a write. A write waits until the table holds it, so
the page's next list shows it. A record on the rules topic that no processor takes (not Avro, an unknown schema, a
value a rule may not have, a key that is not its id) is left out of the list with one warning, and can still be
removed by its key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaException
from quart import Blueprint, Response, current_app, request

from cryptopulse import alert_rules
from cryptopulse.alert import Rule, new_rule, rule_kind, rule_minutes, rule_source, rule_symbol, rule_value
from cryptopulse.alert_channels import make_channel
from cryptopulse.alert_rules import make_rule
from cryptopulse.avro import AvroCodec
from cryptopulse.channel import Channel, channel_names
from cryptopulse.errors import ConfigError, CryptoPulseError
from cryptopulse.kafka import KafkaWatch, Table
from cryptopulse.outage import RateLimitFilter
from cryptopulse.text import terminal_safe
from cryptopulse.times import epoch_ms
from cryptopulse.topics import Definitions
from webui.api import admitted, problem
from webui.auth import Principal, audit, principal, read_body
from webui.guard import client_address, is_local
from webui.health import plain
from webui.history import encode
from webui.protocol import origin_allowed
from webui.state import State, state

log = logging.getLogger(__name__)
log.addFilter(RateLimitFilter(period=60, burst=5))
FIELDS = ("symbol", "condition", "value", "minutes", "source", "notify")
MAX_BODY = 4096
KAFKA_TIMEOUT = 10.0  # seconds a write may take before the page is told Kafka did not answer

rules = Blueprint("rules", __name__)


def parse_rule(body: Any) -> Rule:
    """A new rule from the form's JSON object, checked as `control alerts add` checks its arguments;
    ConfigError with the reason."""
    if not isinstance(body, dict):
        raise ConfigError('give a JSON object: {"symbol": "BTC", "condition": "above", "value": 70000}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown field(s): {', '.join(unknown)}; the fields are {', '.join(FIELDS)}")
    missing = [name for name in FIELDS[:3] if name not in body]
    if missing:
        raise ConfigError(f"missing: {', '.join(missing)}")
    minutes, source = body.get("minutes"), body.get("source")
    return new_rule(rule_symbol(body["symbol"]), rule_kind(body["condition"]), rule_value(body["value"]),
                    None if minutes is None else rule_minutes(minutes),
                    None if source is None else rule_source(source),
                    channels=channel_names(body.get("notify") or []))


def rule_json(rule: Rule) -> dict[str, Any]:
    return {**rule.to_record(), "created": epoch_ms(rule.created), "text": rule.describe()}


def writable(shared: State) -> bool:
    who = principal()
    if who.user is not None:
        return who.may_write
    return shared.config.alert_rules_remote or is_local(request.scope, request.headers)


def refused_write(shared: State) -> Response | None:
    """The answer to a write this client may not make (403), or a cross-site one (403), else None."""
    who = principal()
    if who.user is not None and not who.may_write:
        shared.metrics.errors["forbidden"] += 1
        return problem(403, "this account may only read (a viewer, or a token of scope read): ask an admin")
    if not writable(shared):
        shared.metrics.errors["rules_remote"] += 1
        return problem(403, "alert rules are added and removed from this machine only (or set "
                       "WEBUI_ALERT_RULES_REMOTE=1 on the dashboard; docs/security.md)")
    if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"),
                          shared.config.allowed_origins):
        shared.metrics.errors["origin"] += 1
        return problem(403, "Origin not allowed: set WEBUI_ALLOWED_ORIGINS to the dashboard's public origin")
    return admitted(shared)


async def write(shared: State, key: str, rule: Rule | None) -> None:
    """Publish a rule (or a key's tombstone), one write at a time, and wait until the rules table holds it."""
    async with shared.rules_writes:
        partition, offset = await asyncio.to_thread(alert_rules.publish, shared.config.settings, key, rule,
                                                    KAFKA_TIMEOUT)
    table = shared.rules
    if table is not None:
        await asyncio.to_thread(table.wait_for, partition, offset, KAFKA_TIMEOUT)


def unavailable(shared: State, error: Exception) -> Response:
    """A 503 that says what did not answer, never how to reach it: the error's text (a registry URL, a broker's
    address) goes to the operator's log only."""
    log.warning("alert rules: Kafka or the registry did not answer: %s", plain(error))
    return problem(503, "Kafka or the schema registry did not answer; try again in a few seconds", 5, "rules")


def started_tables(shared: State) -> None:
    """The alert rules and channels as tables this dashboard follows, started by the first request that needs them
    (a dashboard nobody asks for rules pays nothing)."""
    if shared.rules is not None:
        return
    settings, deps = shared.config.settings, shared.deps
    for name, topic, schema, make in (("webui-rules", settings.alert_rules_topic, "alert_rule", make_rule),
                                      ("webui-channels", settings.alert_channels_topic, "alert_channel", make_channel)):
        table = Table(settings, name, topic, AvroCodec(settings, topic, schema).decode, make, logger=log,
                      watch=KafkaWatch(deps.kafka.reporter(name)), registry=deps.registry.reporter(name))
        table.start()
        if name == "webui-rules":
            shared.rules = table
        else:
            shared.channels = table


async def not_loaded(shared: State, wait: float = 3.0) -> Response | None:
    """None once the rules and channels tables have read their topics to the end (waiting up to `wait` seconds for
    tables just started), else 503 with Retry-After."""
    started_tables(shared)
    deadline = time.monotonic() + wait
    for table in (shared.rules, shared.channels):
        if table is None or not (table.ready.is_set() or await asyncio.to_thread(
                table.ready.wait, max(0.0, deadline - time.monotonic()))):
            return problem(503, "the alert rules are being read; try again in a moment", 2, "rules")
    return None


def offered_channels(shared: State, who: Principal) -> list[Channel]:
    """The channels this client's rules may name, by name: an account's own (an admin's: also the operator's);
    every channel in local mode."""
    assert shared.channels is not None, "the tables are loaded first (not_loaded)"
    return sorted((c for c in shared.channels.values.values() if who.sees(c.owner) and c.usable_by(who.user)),
                  key=lambda c: c.name)


@rules.get("/alerts/rules")
async def list_rules() -> Response:
    shared = state(current_app)
    refused = admitted(shared) or await not_loaded(shared)
    if refused is not None:
        return refused
    who = principal()
    found = sorted((r for r in shared.rules.values.values() if who.sees(r.owner)), key=lambda r: (r.created, r.id))
    channels = [{"name": c.name, "kind": c.kind} for c in offered_channels(shared, who)]
    return Response(encode({"rules": [rule_json(r) for r in found], "channels": channels,
                            "writable": writable(shared), "account": who.user}), content_type="application/json")


@rules.post("/alerts/rules")
async def add_rule() -> Response:
    shared = state(current_app)
    refused = refused_write(shared)
    if refused is not None:
        return refused
    if request.mimetype != "application/json":
        return problem(415, "send the rule as JSON, with Content-Type: application/json", metric="invalid")
    if (request.content_length or 0) > MAX_BODY:
        return problem(413, f"a rule is at most {MAX_BODY} bytes of JSON", metric="invalid")
    data = await read_body(MAX_BODY)  # a chunked body says no length: counted as it arrives
    if data is None:
        return problem(413, f"a rule is at most {MAX_BODY} bytes of JSON", metric="invalid")
    try:
        body = json.loads(data, parse_constant=lambda name: None)
    except (ValueError, RecursionError):
        return problem(400, "the body is not JSON", metric="invalid")
    who = principal()
    try:
        rule = replace(parse_rule(body), owner=who.user)
    except ConfigError as error:
        return problem(400, str(error), metric="invalid")
    refused = await not_loaded(shared)
    if refused is not None:
        return refused
    try:
        alert_rules.check_channels(rule, offered_channels(shared, who))
    except ConfigError as error:
        return problem(400, str(error), metric="invalid")
    try:
        await write(shared, rule.id, rule)
    except (CryptoPulseError, KafkaException, TimeoutError, OSError) as error:
        return unavailable(shared, error)
    log.info("alert rule %s added by %s from %s: %s", rule.id, who.user or "the local operator",
             client_address(request.scope), rule.describe())
    audit(shared, "rule_added", who.user, via=who.via, target=rule.id, detail=rule.describe())
    return Response(encode({"rule": rule_json(rule)}), status=201, content_type="application/json")


@rules.delete("/alerts/rules/<text>")
async def remove_rule(text: str) -> Response:
    shared = state(current_app)
    refused = refused_write(shared) or await not_loaded(shared)
    if refused is not None:
        return refused
    table, who = shared.rules, principal()
    key = alert_rules.key_of(Definitions(table.values, table.bad), text)
    rule = table.values.get(key) if key is not None else None
    # another account's rule is no rule of yours; a record no processor takes is an administrator's to remove
    mine = rule is not None and who.sees(rule.owner)
    if key is None or not (mine or (rule is None and (who.user is None or who.is_admin))):
        return problem(404, f"no rule {terminal_safe(text)!r} of yours (the page lists them)")
    try:
        await write(shared, key, None)
    except (CryptoPulseError, KafkaException, TimeoutError, OSError) as error:
        return unavailable(shared, error)
    said = f": {rule.describe()}" if rule else " (a record no processor took)"
    log.info("alert rule %s removed by %s from %s%s", terminal_safe(key), who.user or "the local operator",
             client_address(request.scope), said)
    audit(shared, "rule_removed", who.user, via=who.via, target=terminal_safe(key),
          detail=rule.describe() if rule else "a record no processor took")
    return Response(encode({"removed": rule_json(rule) if rule else {"id": terminal_safe(key)}}),
                    content_type="application/json")
