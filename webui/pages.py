"""HTTP blueprint: the dashboard page, /healthz for probes and /metrics for Prometheus."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, current_app, render_template

from webui.app import state

pages = Blueprint("pages", __name__)


@pages.get("/")
async def index() -> str:
    config = state(current_app).config
    return await render_template("index.html", symbols=config.symbols)


@pages.get("/healthz")
async def healthz() -> tuple[dict, int]:
    """200 when both the Kafka consumer and MongoDB answer; 503 (same JSON) names the part that does not."""
    shared = state(current_app)
    if shared.history is None:
        mongo = {"ok": False, "error": "not started"}
    else:
        try:
            mongo = await asyncio.wait_for(shared.history.ping(), 5)
        except TimeoutError:
            mongo = {"ok": False, "error": "MongoDB did not answer ping within 5 s; is FerretDB up?"}
    if shared.consumer is None:
        kafka = {"ok": not shared.config.start_consumer, "error": "consumer disabled"}
    else:
        kafka = shared.consumer.status()
    ok = bool(mongo["ok"] and kafka["ok"])
    body = {"status": "ok" if ok else "degraded", "kafka": kafka, "mongo": mongo,
            "clients": shared.metrics.clients}
    if shared.views:  # not part of ok: without them, charts read MongoDB (slower, still right)
        body["views"] = {name: view.status() for name, view in shared.views.items()}
    return body, 200 if ok else 503


@pages.get("/metrics")
async def metrics() -> Response:
    text = state(current_app).metrics.render()
    return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")
