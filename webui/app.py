"""The app factory: everything (consumer, Mongo client, metrics) is created per app, at startup, never at import."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from quart import Quart

from cryptopulse.settings import Settings
from webui.config import WebConfig
from webui.health import Dependencies, Monitor
from webui.history import HistoryStore
from webui.live import Hub, LiveConsumer
from webui.metrics import Metrics
from webui.views import WindowView, candle_spec, tick_spec

log = logging.getLogger(__name__)


@dataclass
class State:
    """What the blueprints share, stored on the app (app.extensions["webui"])."""

    config: WebConfig
    metrics: Metrics
    hub: Hub
    deps: Dependencies = field(default_factory=Dependencies)  # Kafka, registry, MongoDB: up or riding out an outage
    monitor: Monitor | None = None  # probes MongoDB and the registry (webui/health.py)
    history: HistoryStore | None = None
    consumer: LiveConsumer | None = None
    views: dict[str, WindowView] = field(default_factory=dict)  # "candles", "ticks": history held in memory


def state(app: Quart) -> State:
    return app.extensions["webui"]


def create_app(settings: Settings | None = None, **overrides: Any) -> Quart:
    """Build the dashboard app. `settings` are the pipeline's addresses; `overrides` set WebConfig fields."""
    config = WebConfig(**({"settings": settings} if settings else {})).with_overrides(**overrides)
    app = Quart(__name__, static_folder="static", template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    deps = Dependencies()
    metrics = Metrics(deps=deps)
    shared = State(config=config, metrics=metrics, hub=Hub(metrics, config.recent_ticks), deps=deps)
    app.extensions["webui"] = shared

    from webui.pages import pages
    from webui.ws import ws

    app.register_blueprint(pages)
    app.register_blueprint(ws)

    @app.before_serving
    async def start() -> None:
        if config.views:
            for spec in (candle_spec(config.settings), tick_spec(config.settings)):
                shared.views[spec.name] = WindowView(config.settings, spec, deps=deps)
                shared.views[spec.name].start()
        shared.history = HistoryStore(config.settings.mongodb_uri, config.settings.database, config.mongo_pool,
                                      config.max_points, config.snapshot_cache_seconds, shared.hub.recent_ticks,
                                      shared.views.get("candles"), shared.views.get("ticks"))
        if config.probe_seconds > 0:
            shared.monitor = Monitor(deps, shared.history.ping, config.settings.schema_registry_url,
                                     config.probe_seconds)
            shared.monitor.start()
        if config.start_consumer:
            shared.consumer = LiveConsumer(config.settings, config.consumer_group_prefix,
                                           asyncio.get_running_loop(), shared.hub.publish, metrics, deps,
                                           shared.hub.set_status)
            shared.consumer.start()
            log.info("consuming %s as group %s", config.settings.prices_topic, shared.consumer.group_id)

    @app.after_serving
    async def stop() -> None:
        if shared.monitor is not None:
            await shared.monitor.stop()
        if shared.consumer is not None:
            await asyncio.to_thread(shared.consumer.stop)
        for view in shared.views.values():
            await asyncio.to_thread(view.stop)
        if shared.history is not None:
            await shared.history.close()

    return app
