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
(an admin's, every rule), removes only those (404 for another's: it does not exist for this account), and a viewer,
or a token of scope read, writes nothing (403); every write of a session carries its CSRF token (checked by
webui/auth.py before this runs). Without accounts (local mode) nobody is authenticated, so writing is limited:
- only clients on this machine that no proxy forwarded (`is_local`, as /healthz's detail), unless
  WEBUI_ALERT_RULES_REMOTE=1 — 403 otherwise;
- CSRF: a browser's Origin must pass the WebSocket's rule (the page's own host, or WEBUI_ALLOWED_ORIGINS), and
  a POST must carry Content-Type application/json (415 otherwise) — a cross-site page can send neither that
  nor a DELETE without a CORS preflight, which this app never grants; the Host allowlist ran before (421);
- every request draws on its address's budget (webui/guard.py, shared with the history API and the
  WebSocket's subscribes: 429 past it), and one Kafka read or write runs at a time (`State.rules_lock`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaException
from quart import Blueprint, Response, current_app, request

from cryptopulse import alert_channels, alert_rules
from cryptopulse.alert import Rule, new_rule, rule_id, rule_kind, rule_minutes, rule_source, rule_symbol, rule_value
from cryptopulse.channel import channel_names
from cryptopulse.errors import ConfigError, CryptoPulseError
from cryptopulse.outage import RateLimitFilter
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from webui.api import admitted, problem
from webui.auth import audit, principal, read_body
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


def rules_and_channels(settings: Settings) -> tuple[list[Rule], list[dict[str, str]]]:
    """The rules in force and the channels a rule may notify (name and kind only: a channel's address is the
    operator's business)."""
    return (alert_rules.rules(settings),
            [{"name": c.name, "kind": c.kind} for c in alert_channels.channels(settings)])


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


async def in_kafka(shared: State, work: Any, *args: Any) -> Any:
    """Run one blocking read or write of the rules topic in a thread, one at a time."""
    async with shared.rules_lock:
        return await asyncio.to_thread(work, shared.config.settings, *args)


def unavailable(shared: State, error: Exception) -> Response:
    """A 503 that says what did not answer, never how to reach it: the error's text (a registry URL, a broker's
    address) goes to the operator's log only."""
    log.warning("alert rules: Kafka or the registry did not answer: %s", plain(error))
    return problem(503, "Kafka or the schema registry did not answer; try again in a few seconds", 5, "rules")


def remove_visible(settings: Settings, wanted: str, sees: Callable[[str | None], bool]) -> Rule:
    """Remove a rule the account may see (its own; any, for an admin); another's is "no such rule" (ConfigError)."""
    live = {r.id: r for r in alert_rules.rules(settings) if sees(r.owner)}
    if wanted not in live:
        raise ConfigError(f"no rule {wanted!r} of yours")
    return alert_rules.remove(settings, wanted, KAFKA_TIMEOUT)


@rules.get("/alerts/rules")
async def list_rules() -> Response:
    shared = state(current_app)
    refused = admitted(shared)
    if refused is not None:
        return refused
    try:
        found, channels = await in_kafka(shared, rules_and_channels)
    except (CryptoPulseError, KafkaException, TimeoutError, OSError) as error:
        return unavailable(shared, error)
    who = principal()
    return Response(encode({"rules": [rule_json(r) for r in found if who.sees(r.owner)], "channels": channels,
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
    try:
        await in_kafka(shared, alert_rules.add, rule, KAFKA_TIMEOUT)
    except ConfigError as error:  # a channel it names does not exist
        return problem(400, str(error), metric="invalid")
    except (CryptoPulseError, KafkaException, TimeoutError, OSError) as error:
        return unavailable(shared, error)
    log.info("alert rule %s added by %s from %s: %s", rule.id, who.user or "the local operator",
             client_address(request.scope), rule.describe())
    audit(shared, "rule_added", who.user, via=who.via, target=rule.id, detail=rule.describe())
    return Response(encode({"rule": rule_json(rule)}), status=201, content_type="application/json")


@rules.delete("/alerts/rules/<text>")
async def remove_rule(text: str) -> Response:
    shared = state(current_app)
    refused = refused_write(shared)
    if refused is not None:
        return refused
    try:
        wanted = rule_id(text)
    except ConfigError as error:
        return problem(400, str(error), metric="invalid")
    who = principal()
    try:
        rule = await in_kafka(shared, remove_visible, wanted, who.sees)
    except ConfigError as error:
        return problem(404, str(error))
    except (CryptoPulseError, KafkaException, TimeoutError, OSError) as error:
        return unavailable(shared, error)
    log.info("alert rule %s removed by %s from %s: %s", rule.id, who.user or "the local operator",
             client_address(request.scope), rule.describe())
    audit(shared, "rule_removed", who.user, via=who.via, target=rule.id, detail=rule.describe())
    return Response(encode({"removed": rule_json(rule)}), content_type="application/json")
