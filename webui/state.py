"""What the dashboard's blueprints share: one `State` per app, stored on it by the factory (webui/app.py).

Blueprints import this module, never the factory, so no import runs in a circle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from quart import Quart

from cryptopulse.alert import Rule
from cryptopulse.audit import Trail
from cryptopulse.channel import Channel
from cryptopulse.kafka import Table
from webui.accounts import AccountBook, AccountFeed
from webui.alerts import AlertFeed, Deliveries
from webui.config import WebConfig
from webui.guard import Connections
from webui.health import Dependencies, Monitor
from webui.history import HistoryStore
from webui.live import Hub, LiveConsumer
from webui.metrics import Metrics
from webui.sessions import LoginThrottle, Sessions
from webui.views import WindowView


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
    views: dict[str, WindowView] = field(default_factory=dict)  # "ticks", "1m" ... "1w": history held in memory
    connections: Connections = field(default_factory=Connections)  # open WebSockets per address (webui/guard.py)
    allowed_hosts: frozenset[str] = frozenset()  # besides loopback: what the Host header may name
    alerts: AlertFeed | None = None  # new price alerts, pushed to every open page (webui/alerts.py)
    deliveries: Deliveries = field(default_factory=Deliveries)  # what became of them on their channels
    # the alert rules and channels, tables the dashboard follows (webui/rules.py lists them from memory)
    rules: Table[Rule] | None = None
    channels: Table[Channel] | None = None
    rules_writes: asyncio.Lock = field(default_factory=asyncio.Lock)  # one write of a rule at a time
    lag_task: asyncio.Task[None] | None = None  # measures the event loop's lag (webui_event_loop_lag_seconds)
    # accounts (webui/auth.py, docs/security.md): what the accounts topics say, the thread following them (None: not
    # started, as in tests), the session cookies' signer, failed logins, the audit trail, argon2 checks at a time
    sessions: Sessions | None = None  # set by the factory (it reads the secret file)
    trail: Trail | None = None  # set by the factory
    book: AccountBook = field(default_factory=AccountBook)
    accounts: AccountFeed | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    password_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


def state(app: Quart) -> State:
    return app.extensions["webui"]
