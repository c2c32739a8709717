"""HTTP blueprint: the dashboard pages, the recent alerts, /healthz for probes and /metrics for Prometheus."""

from __future__ import annotations

import os

from quart import Blueprint, Response, current_app, render_template, request

from webui.auth import principal
from webui.guard import is_local
from webui.health import Monitor, health_report
from webui.state import state
from webui.timeframes import TIMEFRAMES, timeframes_by_range

pages = Blueprint("pages", __name__)


@pages.get("/")
@pages.get("/markets")
async def markets() -> str:
    """The landing view: every coin in one table, live (webui/static/markets.js)."""
    return await render_template("markets.html", symbols=state(current_app).config.symbols)


@pages.get("/chart")
async def chart() -> str:
    """One coin's chart (`?symbol=ETH`; the first coin by default)."""
    return await render_template("index.html", symbols=state(current_app).config.symbols,
                                 timeframes=timeframes_by_range(), frames=TIMEFRAMES)


@pages.get("/favicon.ico")
async def favicon() -> Response:
    """The pages name their icon (<link rel="icon">), but a browser still asks for /favicon.ico where nothing names
    one (the JSON endpoints, /healthz): the same SVG, so that no console reports a 404."""
    return await current_app.send_static_file("favicon.svg")


@pages.get("/alerts/recent")
async def recent_alerts() -> dict:
    """The newest price alerts its account may see (an admin: all), newest first: what a page lists when it opens,
    each with `deliveries`: the latest outcome on each of its channels (webui/alerts.py)."""
    shared = state(current_app)
    who = principal()
    alerts = shared.alerts.newest_first(lambda alert: who.sees(alert.get("owner"))) if shared.alerts is not None \
        else []
    ids = [a["id"] for a in alerts if a.get("channels")]
    outcomes = await shared.deliveries.of(shared.history.db, ids) if ids and shared.history is not None else {}
    for alert in alerts:
        alert["deliveries"] = outcomes.get(alert["id"], {})
    return {"alerts": alerts}


@pages.get("/healthz")
async def healthz() -> tuple[dict, int]:
    """200 when Kafka, MongoDB and the registry are reachable and the live consumer consumes; 503 (same JSON)
    names in `down` what is not, and each one's entry says for how long and why (docs/webui.md). The detail
    goes to clients on this machine (no proxy between) or everyone with WEBUI_HEALTH_DETAIL=1; others get
    `status` and `down`."""
    shared = state(current_app)
    monitor = shared.monitor
    if monitor is None:  # the background probe is off (or not started): probe now, without it
        history = shared.history
        monitor = Monitor(shared.deps, history.ping if history is not None else None,
                          shared.config.settings.schema_registry_url)
    await monitor.fresh(max_age=1.0, timeout=2.0)
    if shared.consumer is not None:
        kafka = shared.consumer.status()
    elif shared.config.start_consumer:
        kafka = {"ok": False, "error": "not started"}
    else:
        kafka = {"ok": True, "consumer": "disabled"}
    views = {name: view.status() for name, view in shared.views.items()}
    body, code = health_report(shared.deps, kafka, monitor.mongo, monitor.registry, shared.metrics.clients,
                               live={k: v for k, v in shared.hub.status.items() if k != "type"}, views=views)
    body["pid"] = os.getpid()  # which process answered: with `--processes N`, one of N workers (webui/workers.py)
    if not (shared.config.health_detail or is_local(request.scope, request.headers)):
        # host names, pids, group ids and raw driver errors are for the operator, not for whoever can reach the port
        body = {"status": body["status"], "down": body["down"]}
    return body, code


@pages.get("/metrics")
async def metrics() -> Response:
    shared = state(current_app)
    shared.metrics.sockets = shared.connections.total
    text = shared.metrics.render()
    return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")
