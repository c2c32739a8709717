"""The stack's components: Kafka, the schema registry, FerretDB, Kafka Connect and the supervisor, in start order:
one Kafka node and one Connect worker, or as many as the state folder's layout says (`StackLayout`).

Each `Component` says how it is started (command line, environment, working folder, a first-start preparation),
where its pid file and log are, and which probe tells that it is ready. Config files are rendered from the
templates beside this module (control/stack/*.properties) into `<state>/conf/`.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from control.stack import probes
from control.stack.installation import STACK_DIR, java_home, run_logged
from control.stack.supervision import supervisor_reporting
from cryptopulse.errors import StackError
from cryptopulse.settings import (
    PROJECT_DIR,
    SINK_SERVER_SELECTION_MS,
    Settings,
    StackLayout,
    min_insync_for,
    with_driver_option,
)

JVM_COMMON = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]

# What a stack process sees of the operator's environment: where programs are, the home folder, the locale and
# the time zone. API keys, cloud tokens and the rest of a shell's environment stay out of every JVM and FerretDB;
# each component adds its own variables (`Component.env`) and may inherit a few more (`Component.inherit`).
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# The supervisor starts the others again, so it needs what they are built from: the project's settings (the
# variables cryptopulse/settings.py reads) and the JDKs.
SETTINGS_ENV = (*Settings.variables(), "SYMBOLS", "JAVA_HOME", "JAVA17_HOME", "JAVA21_HOME")


def process_env(component: Component, state: Path) -> dict[str, str]:
    """The whole environment `component` is started with: BASE_ENV and its `inherit` from ours, then its own."""
    allowed = set(BASE_ENV) | set(component.inherit)
    return {**{k: v for k, v in os.environ.items() if k in allowed}, **(component.env(state) if component.env else {})}


@dataclass
class Component:
    """One process of the stack: how to start it and how to tell that it is ready."""

    name: str
    port: int | None  # None: no port of its own (the supervisor)
    command: Callable[[Path], list[str]]
    ready: Callable[[], bool]
    startup_timeout: float
    role: str = ""  # broker, registry, store, connect, supervisor: what `control stack status` says it is
    env: Callable[[Path], dict[str, str]] | None = None
    prepare: Callable[[Path], None] | None = None
    workdir: Callable[[Path], Path] | None = None
    # Variables of the operator's environment it may see besides BASE_ENV (each process gets only what it needs)
    inherit: tuple[str, ...] = ()

    def pid_file(self, state: Path) -> Path:
        return state / "run" / f"{self.name}.pid"

    def log_file(self, state: Path) -> Path:
        return state / "logs" / f"{self.name}.log"

    def pid(self, state: Path) -> int | None:
        """The pid of our running process, or None when it is not running.

        The pid file holds the pid and the command line it was started with; a process with that pid counts
        only if it runs that command line (after a reboot or a crash the pid may belong to anything else, and
        `stop` would signal its whole group)."""
        try:
            text = self.pid_file(state).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            pid = int(record["pid"]) if isinstance(record, dict) else int(record)
            recorded = [str(a) for a in record["cmdline"]] if isinstance(record, dict) else None
        except (ValueError, KeyError, TypeError):
            return None
        running = probes.cmdline(pid)
        if running is None or not probes.alive(pid):
            return None
        if recorded is not None:
            return pid if running == recorded else None
        # a pid file of an earlier version (the pid alone): the arguments must be ours (the interpreter's path
        # may differ); every component's arguments name the state folder or the control module
        return pid if running[1:] == self.command(state)[1:] else None




def _render(template: str, state: Path, target: str | None = None, **values: object) -> Path:
    """Fill a config template of control/stack/ into <state>/conf/ (as `target`, by default the template's name)."""
    text = (STACK_DIR / template).read_text().replace("{{state_dir}}", str(state))
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    path = state / "conf" / (target or template)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _java(state: Path, heap: str, classpath: str, main: list[str], version: int = 17) -> list[str]:
    return [
        str(java_home(version) / "bin" / "java"),
        f"-Xms{heap}", f"-Xmx{heap}", *JVM_COMMON,
        f"-Dlog4j2.configurationFile={_render('log4j2.properties', state)}",
        "-cp", classpath, *main,
    ]


def _broker(layout: StackLayout, node: int) -> Component:
    """Kafka node `node` (1, 2, ...): broker and controller in one JVM. One node is `kafka`, with its data in
    <state>/kafka/data and a quorum of itself; in a cluster node n is `kafka-n`, in <state>/kafka-n/data, and
    the quorum's voters are all the nodes (a static quorum)."""
    name = "kafka" if layout.brokers == 1 else f"kafka-{node}"
    port = layout.broker_port(node)
    if layout.brokers == 1:
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{layout.controller_port(1)}"
    else:
        voters = ",".join(f"{n}@127.0.0.1:{layout.controller_port(n)}" for n in range(1, layout.brokers + 1))
        quorum = f"controller.quorum.voters={voters}"

    def config(state: Path) -> Path:
        return _render("server.properties", state, f"{name}.properties", node_id=node, quorum=quorum,
                       kafka_port=port, kafka_controller_port=layout.controller_port(node),
                       data_dir=state / name / "data", replicas=layout.replication_factor,
                       min_isr=min_insync_for(layout.replication_factor))

    def format_storage(state: Path) -> None:
        """Format the node's KRaft storage on first start only; the cluster id is kept beside the data."""
        if (state / name / "data" / "meta.properties").exists():
            return
        id_file = state / "kafka" / "cluster.id"
        if not id_file.exists():
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))
        standalone = ["--standalone"] if layout.brokers == 1 else []  # a cluster's voters are in its config
        cmd = [str(java_home(17) / "bin" / "java"), "-Xmx256m", "-cp", f"{state}/lib/broker/*",
               "kafka.tools.StorageTool", "format", "-t", id_file.read_text().strip(), "-c", str(config(state)),
               *standalone, "--ignore-formatted"]
        run_logged(cmd, state, state / "logs" / f"{name}.log", f"formatting the storage of {name}")

    return Component(
        name=name,
        role="broker",
        port=port,
        prepare=format_storage,
        command=lambda s: _java(s, "512m", f"{s}/lib/broker/*", ["kafka.Kafka", str(config(s))]),
        ready=partial(probes.kafka_ready, port),
        startup_timeout=120,
    )


def _connect_worker(layout: StackLayout, settings: Settings, worker: int) -> Component:
    """Kafka Connect worker `worker`: `connect` alone, or `connect-n` of a group that shares the connectors."""
    name = "connect" if layout.connect_workers == 1 else f"connect-{worker}"
    port = layout.connect_port(worker)
    return Component(
        name=name,
        role="connect",
        port=port,
        command=lambda s: _java(s, "512m", f"{s}/lib/connect/*", [
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(_render("connect-distributed.properties", s, f"{name}.properties", bootstrap=layout.bootstrap,
                        connect_port=port, replicas=layout.replication_factor))]),
        env=lambda s: {
            "MONGODB_URI": with_driver_option(settings.mongodb_uri, "serverSelectionTimeoutMS",
                                              SINK_SERVER_SELECTION_MS),
            "SCHEMA_REGISTRY_V2_URL": f"http://127.0.0.1:{layout.registry_port}/apis/registry/v2",
        },
        ready=partial(probes.connect_ready, port),
        startup_timeout=240,
    )


def components(settings: Settings) -> list[Component]:
    """The stack in start order (stop order is the reverse): Connect last, after what it writes to. The layout
    of the state folder (cryptopulse.settings.StackLayout) says how many brokers and Connect workers."""
    layout = StackLayout.of(settings.state_dir)
    return [
        *(_broker(layout, node) for node in range(1, layout.brokers + 1)),
        Component(
            name="registry",
            role="registry",
            port=layout.registry_port,
            # Apicurio 3.3 is built for Java 21+; its storage is a journal topic on our Kafka,
            # so schemas and their ids survive restarts.
            command=lambda s: [
                str(java_home(21) / "bin" / "java"), "-Xms128m", "-Xmx384m", *JVM_COMMON,
                "-jar", str(s / "apicurio" / "quarkus-run.jar"),
            ],
            env=lambda s: {
                "QUARKUS_HTTP_HOST": "127.0.0.1",
                "QUARKUS_HTTP_PORT": str(layout.registry_port),
                "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
                "QUARKUS_MANAGEMENT_PORT": str(layout.registry_management_port),
                "APICURIO_STORAGE_KIND": "kafkasql",
                "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS": layout.bootstrap,
                "APICURIO_RULES_GLOBAL_COMPATIBILITY": "BACKWARD",
                # tests and benchmarks remove the subjects they register
                "APICURIO_REST_DELETION_ARTIFACT_ENABLED": "true",
                "APICURIO_REST_DELETION_ARTIFACT_VERSION_ENABLED": "true",
            },
            workdir=lambda s: s / "apicurio",
            ready=partial(probes.registry_ready, layout.registry_port),
            startup_timeout=180,
        ),
        Component(
            name="ferretdb",
            role="store",
            port=layout.ferretdb_port,
            command=lambda s: [str(s / "bin" / "ferretdb"), f"--listen-addr=127.0.0.1:{layout.ferretdb_port}",
                               f"--sqlite-dir={s / 'ferretdb'}", "--log-level=warn"],
            ready=partial(probes.ferretdb_ready, layout.ferretdb_port),
            startup_timeout=60,
        ),
        *(_connect_worker(layout, settings, worker) for worker in range(1, layout.connect_workers + 1)),
        Component(
            name="supervisor",
            role="supervisor",
            port=None,
            # restarts what dies and restarts FAILED connectors (control/supervisor.py)
            command=lambda s: [sys.executable, "-m", "control.cli", "supervise"],
            env=lambda s: {"CRYPTOPULSE_STATE_DIR": str(s), "PYTHONUNBUFFERED": "1"},
            inherit=SETTINGS_ENV,  # it starts the others again: the settings they are built from
            workdir=lambda s: PROJECT_DIR,
            ready=partial(supervisor_reporting, settings.state_dir),
            startup_timeout=30,
        ),
    ]


def named(settings: Settings, name: str) -> Component:
    """The component called `name`; an unknown name is a StackError that lists the known ones."""
    by_name = {c.name: c for c in components(settings)}
    if name not in by_name:
        raise StackError(f"unknown component {name!r}; choose one of {', '.join(by_name)}")
    return by_name[name]
