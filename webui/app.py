"""The app factory: everything (consumer, Mongo client, metrics) is created per app, at startup, never at import."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quart import Quart, Response, abort, request, websocket

from cryptopulse.audit import Trail
from cryptopulse.settings import Settings
from webui.accounts import AccountFeed
from webui.config import WebConfig
from webui.guard import SECURITY_HEADERS, GuardedWebsocketConnection, ProxyHeaders, release_free_memory
from webui.health import Dependencies, Monitor
from webui.history import HistoryStore
from webui.live import Hub, LiveConsumer
from webui.metrics import Metrics
from webui.protocol import host_allowed, host_name, origin_hosts
from webui.sessions import Sessions, load_secret
from webui.state import State
from webui.views import LoadTurns, WindowView, all_specs

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, **overrides: Any) -> Quart:
    """Build the dashboard app. `settings` are the pipeline's addresses; `overrides` set WebConfig fields."""
    config = WebConfig(**({"settings": settings} if settings else {})).with_overrides(**overrides)
    app = Quart(__name__, static_folder="static", template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.asgi_websocket_class = GuardedWebsocketConnection  # a bounded receive queue, counted per address
    deps = Dependencies()
    metrics = Metrics(deps=deps)
    bound = host_name(config.host)
    hosts = {*config.allowed_hosts, *origin_hosts(config.allowed_origins)}
    if bound and bound not in ("0.0.0.0", "::"):
        hosts.add(bound)
    hub = Hub(metrics, config.recent_ticks, config.push_interval_ms / 1000, symbols=frozenset(config.symbols))
    secret_file = Path(config.secret_file) if config.secret_file else config.settings.state_dir / "webui" / \
        "session-secret"
    shared = State(config=config, metrics=metrics, hub=hub, deps=deps, allowed_hosts=frozenset(hosts),
                   sessions=Sessions(load_secret(secret_file), config.session_idle_minutes * 60,
                                     config.session_absolute_hours * 3600),
                   trail=Trail(config.settings))
    app.extensions["webui"] = shared
    # the request head's size, and who the client is behind a trusted proxy (WEBUI_TRUSTED_PROXIES): in front of all
    app.asgi_app = ProxyHeaders(app.asgi_app, config.trusted_proxies, config.max_head_bytes)  # type: ignore[method-assign]

    def check_host(host: str | None) -> None:
        if not host_allowed(host, shared.allowed_hosts):
            metrics.refused["host"] += 1
            abort(Response(f"Host {host_name(host) or '(none)'} is not served here: add it to WEBUI_ALLOWED_HOSTS\n",
                           status=421, content_type="text/plain; charset=utf-8"))

    @app.before_request
    async def host_first() -> None:  # before anything else, the Origin rule included: DNS rebinding
        check_host(request.headers.get("Host"))

    @app.before_websocket
    async def host_first_ws() -> None:
        check_host(websocket.headers.get("Host"))

    from webui.auth import install

    install(app)  # who is asking: after the Host check, before every route (webui/auth.py)

    @app.after_request
    async def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    from webui.alerts import AlertFeed
    from webui.api import api
    from webui.pages import pages
    from webui.rules import rules
    from webui.ws import ws

    app.register_blueprint(pages)
    app.register_blueprint(ws)
    app.register_blueprint(api)
    app.register_blueprint(rules)

    @app.before_serving
    async def start() -> None:
        if config.views:
            specs = all_specs(config.settings)
            turns = LoadTurns([spec.name for spec in specs])
            for spec in specs:
                shared.views[spec.name] = WindowView(config.settings, spec, deps=deps, turns=turns)
                shared.views[spec.name].start()
        shared.history = HistoryStore(config.settings.mongodb_uri, config.settings.database, config.mongo_pool,
                                      config.max_points, config.snapshot_cache_seconds, shared.hub.recent_ticks,
                                      shared.views, cache_bytes=config.snapshot_cache_bytes,
                                      past_rate=config.history_rate, deadline=config.history_deadline)
        if config.probe_seconds > 0:
            shared.monitor = Monitor(deps, shared.history.ping, config.settings.schema_registry_url,
                                     config.probe_seconds)
            shared.monitor.start()
        shared.lag_task = asyncio.create_task(watch_loop_lag(
            metrics, housekeeping=lambda: shared.history.prune() if shared.history is not None else None))
        if config.start_consumer:
            shared.consumer = LiveConsumer(config.settings, config.consumer_group_prefix,
                                           asyncio.get_running_loop(), shared.hub.publish, metrics, deps,
                                           shared.hub.set_status)
            shared.consumer.start()
            log.info("consuming %s as group %s", config.settings.prices_topic, shared.consumer.group_id)
            shared.alerts = AlertFeed(config.settings, config.consumer_group_prefix, asyncio.get_running_loop(), deps)
            shared.alerts.start()
            shared.accounts = AccountFeed(config.settings, shared.book, deps)
            shared.accounts.start()

    @app.after_serving
    async def stop() -> None:
        if shared.lag_task is not None:
            shared.lag_task.cancel()
        if shared.monitor is not None:
            await shared.monitor.stop()
        if shared.consumer is not None:
            await asyncio.to_thread(shared.consumer.stop)
        if shared.alerts is not None:
            await asyncio.to_thread(shared.alerts.stop)
        for table in (shared.rules, shared.channels):  # nothing to commit: told to stop, not waited for long
            if table is not None:
                await asyncio.to_thread(table.stop, 1.0)
        if shared.accounts is not None:
            await asyncio.to_thread(shared.accounts.stop)
        if shared.trail is not None:
            await asyncio.to_thread(shared.trail.close)
        for view in shared.views.values():
            await asyncio.to_thread(view.stop)
        if shared.history is not None:
            await shared.history.close()

    return app


async def watch_loop_lag(metrics: Metrics, every: float = 0.1, trim_every: float = 15.0,
                         housekeeping: Callable[[], None] = lambda: None) -> None:
    """How late the event loop wakes a sleeper: what every client waits on top of its own work. Every
    `trim_every` seconds it also runs `housekeeping` (stale answers out) and hands freed memory back to the
    system (`release_free_memory`), so the process returns near its size after a burst."""
    loop = asyncio.get_running_loop()
    trimmed = collected = loop.time()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        metrics.observe_lag(max(0.0, loop.time() - due))
        if loop.time() - trimmed > trim_every:
            trimmed = loop.time()
            housekeeping()
            if loop.time() - collected > 4 * trim_every:  # a quiet process allocates too little to collect: the
                collected = loop.time()                   # cycles closed sockets leave (tasks, tracebacks) wait
                gc.collect()
            release_free_memory()
