"""The native stack: Kafka, Apicurio Registry, Kafka Connect and FerretDB as local processes.

Nothing is installed by hand. `install()` resolves the Java artifacts with the
project's own pom (control/stack/pom.xml) and builds the FerretDB embedding
program (control/ferretdb/) with the Go module proxy; both steps are skipped
when their inputs have not changed. Everything they produce, and every data
directory, log and pid file, lives under one state folder (`.state/`, ignored).

Each component is started on loopback, in its own session, with its output in
`<state>/logs/<name>.log`, and is ready when it answers its own protocol.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cryptopulse.errors import StackError
from cryptopulse.settings import PROJECT_DIR, SINK_SERVER_SELECTION_MS, Settings, with_driver_option

STACK_DIR = PROJECT_DIR / "control" / "stack"
FERRETDB_DIR = PROJECT_DIR / "control" / "ferretdb"

KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
REGISTRY_PORT = 8081
REGISTRY_MANAGEMENT_PORT = 9000
CONNECT_PORT = 8083
FERRETDB_PORT = 27017

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
SETTINGS_ENV = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "MONGODB_URI", "MONGODB_DATABASE",
                "PRICES_TOPIC", "PRICES_DLQ_TOPIC", "CANDLES_TOPIC", "CANDLES_DLQ_TOPIC", "STREAMS_GROUP",
                "WEBUI_GROUP_PREFIX", "CONNECTOR_PREFIX", "CRYPTOPULSE_STATE_DIR", "SCHEMAS_DIR", "CONNECTORS_DIR",
                "SYMBOLS", "JAVA_HOME", "JAVA17_HOME", "JAVA21_HOME")
PRIVATE = 0o077  # the umask of everything the stack writes: files 0600, folders 0700


def process_env(component: Component, state: Path) -> dict[str, str]:
    """The whole environment `component` is started with: BASE_ENV and its `inherit` from ours, then its own."""
    allowed = set(BASE_ENV) | set(component.inherit)
    return {**{k: v for k, v in os.environ.items() if k in allowed}, **(component.env(state) if component.env else {})}


def make_private(state: Path) -> None:
    """The state folder and everything in it readable by its owner only (0700 folders, 0600 files): it holds
    the store's data, logs that may quote connection strings, and the pid files the stack signals by."""
    os.umask(PRIVATE)
    state.mkdir(parents=True, exist_ok=True)
    for folder, _folders, files in os.walk(state):
        os.chmod(folder, 0o700)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                mode = path.stat().st_mode & 0o777
                os.chmod(path, (mode & 0o700) | (0o100 if mode & 0o111 else 0))


@dataclass
class Component:
    """One process of the stack: how to start it and how to tell that it is ready."""

    name: str
    port: int | None  # None: no port of its own (the supervisor)
    command: Callable[[Path], list[str]]
    ready: Callable[[], bool]
    startup_timeout: float
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
        running = _cmdline(pid)
        if running is None or not _alive(pid):
            return None
        if recorded is not None:
            return pid if running == recorded else None
        # a pid file of an earlier version (the pid alone): the arguments must be ours (the interpreter's path
        # may differ); every component's arguments name the state folder or the control module
        return pid if running[1:] == self.command(state)[1:] else None


# --- probes -----------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _cmdline(pid: int) -> list[str] | None:
    """The process's command line (argv), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]] if raw else None


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str, check: Callable[[requests.Response], bool] = lambda r: True) -> bool:
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return response.ok and check(response)


def kafka_ready() -> bool:
    """The broker answers a metadata request."""
    if not _port_open(KAFKA_PORT):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{KAFKA_PORT}", "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return bool(metadata.brokers)


def registry_ready() -> bool:
    """The registry answers its Confluent-compatible API."""
    return _http_ok(f"http://127.0.0.1:{REGISTRY_PORT}/apis/ccompat/v7/subjects")


REQUIRED_PLUGINS = (
    "com.mongodb.kafka.connect.MongoSinkConnector",
    "io.apicurio.registry.utils.converter.AvroConverter",
)


def connect_ready() -> bool:
    """Connect lists both plugins the pipeline needs."""

    def has_plugins(response: requests.Response) -> bool:
        classes = {p["class"] for p in response.json()}
        return all(c in classes for c in REQUIRED_PLUGINS)

    return _http_ok(f"http://127.0.0.1:{CONNECT_PORT}/connector-plugins?connectorsOnly=false", has_plugins)


def ferretdb_ready() -> bool:
    """FerretDB answers `ping` through pymongo."""
    if not _port_open(FERRETDB_PORT):
        return False
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client = MongoClient(f"mongodb://127.0.0.1:{FERRETDB_PORT}", serverSelectionTimeoutMS=2000)
    try:
        return client.admin.command("ping").get("ok") == 1
    except PyMongoError:
        return False
    finally:
        client.close()


# --- installation -----------------------------------------------------------


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def ferretdb_inputs() -> list[Path]:
    """Every file the FerretDB build reads from control/ferretdb/: the module files and all Go sources."""
    return sorted([FERRETDB_DIR / "go.mod", FERRETDB_DIR / "go.sum", *FERRETDB_DIR.glob("*.go")])


def _step(state: Path, name: str, inputs: list[Path], outputs: list[Path], run: Callable[[], None], say) -> None:
    """Run an install step unless its outputs exist and its inputs are unchanged since last time."""
    marker = state / "installed" / name
    digest = _digest(*inputs)
    if marker.exists() and marker.read_text() == digest and all(p.exists() for p in outputs):
        return
    say(f"installing {name} (first use; cached afterwards)")
    started = time.monotonic()
    run()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)
    say(f"installed {name} in {time.monotonic() - started:.0f}s")


def _run(cmd: list[str], cwd: Path, log: Path, what: str, env: dict[str, str] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}); see {log}")


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise StackError(f"`{tool}` is not on PATH; {hint}")
    return path


def java_home(min_version: int) -> Path:
    """The JDK to run with: $JAVA<N>_HOME, else the oldest JDK of at least `min_version` among
    $JAVA_HOME and /usr/lib/jvm/* (Kafka and Connect are tested most on 17; the registry needs 21+)."""
    explicit = os.environ.get(f"JAVA{min_version}_HOME")
    if explicit:
        return Path(explicit)
    candidates = [os.environ.get("JAVA_HOME")]
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += [str(p) for p in jvm.iterdir() if not p.is_symlink()]
    found: dict[int, Path] = {}
    for candidate in filter(None, candidates):
        release = Path(candidate) / "release"
        if not release.is_file():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split("=", 1)[1].strip('"').split(".")[0])
                if major >= min_version:
                    found.setdefault(major, Path(candidate))
    if not found:
        raise StackError(f"no JDK {min_version}+ found; install one or set JAVA{min_version}_HOME")
    return found[min(found)]


def install(state: Path, say=print) -> None:
    """Fetch the Java artifacts and build FerretDB, each only when missing or out of date."""
    pom = STACK_DIR / "pom.xml"
    # -C (--strict-checksums): an artifact whose checksum does not match the repository's fails the step
    mvn = [_require("mvn", "install Maven (apt-get install maven)"), "-B", "-q", "-C", "-f", str(pom),
           f"-Dstate.dir={state}"]
    log = state / "logs" / "install.log"
    # (step, output folder, Maven arguments): each step of control/stack/pom.xml fills one folder.
    maven_steps = [
        ("broker-libs", state / "lib" / "broker", ["-P", "broker", "dependency:copy-dependencies"]),
        ("connect-libs", state / "lib" / "connect", ["-P", "connect", "dependency:copy-dependencies"]),
        ("apicurio-converter", state / "connect-plugins" / "apicurio-converter",
         ["-P", "converter", "dependency:copy-dependencies"]),
        ("mongo-kafka-connect", state / "connect-plugins" / "mongo-kafka-connect", ["dependency:copy@plugins"]),
        ("registry", state / "apicurio", ["dependency:unpack@registry"]),
    ]
    for name, folder, args in maven_steps:

        def fetch(folder: Path = folder, args: list[str] = args, name: str = name) -> None:
            shutil.rmtree(folder, ignore_errors=True)
            _run([*mvn, *args, f"-DoutputDirectory={folder}"], STACK_DIR, log, f"Maven ({name})")

        _step(state, name, [pom], [folder], fetch, say)

    binary = state / "bin" / "ferretdb"
    go = [_require("go", "install Go 1.24+"), "build", "-trimpath", "-o", str(binary), "."]
    _step(state, "ferretdb", ferretdb_inputs(), [binary], lambda: _run(go, FERRETDB_DIR, log, "go build of FerretDB"),
          say)


# --- components -------------------------------------------------------------


def _render(template: str, state: Path) -> Path:
    """Fill a config template of control/stack/ into <state>/conf/."""
    values = {
        "state_dir": str(state),
        "kafka_port": KAFKA_PORT,
        "kafka_controller_port": KAFKA_CONTROLLER_PORT,
        "connect_port": CONNECT_PORT,
    }
    text = (STACK_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    target = state / "conf" / template
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def _java(state: Path, heap: str, classpath: str, main: list[str], version: int = 17) -> list[str]:
    return [
        str(java_home(version) / "bin" / "java"),
        f"-Xms{heap}", f"-Xmx{heap}", *JVM_COMMON,
        f"-Dlog4j2.configurationFile={_render('log4j2.properties', state)}",
        "-cp", classpath, *main,
    ]


def _format_kafka(state: Path) -> None:
    """Format the KRaft storage on first start only; the cluster id is kept beside the data."""
    data = state / "kafka" / "data"
    config = _render("server.properties", state)
    if (data / "meta.properties").exists():
        return
    id_file = state / "kafka" / "cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))
    cmd = [str(java_home(17) / "bin" / "java"), "-Xmx256m", "-cp", f"{state}/lib/broker/*",
           "kafka.tools.StorageTool", "format", "-t", id_file.read_text().strip(), "-c", str(config),
           "--standalone", "--ignore-formatted"]
    _run(cmd, state, state / "logs" / "kafka.log", "formatting the Kafka storage")


def components(settings: Settings) -> list[Component]:
    """The stack in start order (stop order is the reverse): Connect last, after what it writes to."""
    return [
        Component(
            name="kafka",
            port=KAFKA_PORT,
            prepare=_format_kafka,
            command=lambda s: _java(s, "512m", f"{s}/lib/broker/*",
                                    ["kafka.Kafka", str(_render("server.properties", s))]),
            ready=kafka_ready,
            startup_timeout=120,
        ),
        Component(
            name="registry",
            port=REGISTRY_PORT,
            # Apicurio 3.3 is built for Java 21+; its storage is a journal topic on our Kafka,
            # so schemas and their ids survive restarts.
            command=lambda s: [
                str(java_home(21) / "bin" / "java"), "-Xms128m", "-Xmx384m", *JVM_COMMON,
                "-jar", str(s / "apicurio" / "quarkus-run.jar"),
            ],
            env=lambda s: {
                "QUARKUS_HTTP_HOST": "127.0.0.1",
                "QUARKUS_HTTP_PORT": str(REGISTRY_PORT),
                "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
                "QUARKUS_MANAGEMENT_PORT": str(REGISTRY_MANAGEMENT_PORT),
                "APICURIO_STORAGE_KIND": "kafkasql",
                "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS": f"127.0.0.1:{KAFKA_PORT}",
                "APICURIO_RULES_GLOBAL_COMPATIBILITY": "BACKWARD",
                # tests and benchmarks remove the subjects they register
                "APICURIO_REST_DELETION_ARTIFACT_ENABLED": "true",
                "APICURIO_REST_DELETION_ARTIFACT_VERSION_ENABLED": "true",
            },
            workdir=lambda s: s / "apicurio",
            ready=registry_ready,
            startup_timeout=180,
        ),
        Component(
            name="ferretdb",
            port=FERRETDB_PORT,
            command=lambda s: [str(s / "bin" / "ferretdb"), f"--listen-addr=127.0.0.1:{FERRETDB_PORT}",
                               f"--sqlite-dir={s / 'ferretdb'}", "--log-level=warn"],
            ready=ferretdb_ready,
            startup_timeout=60,
        ),
        Component(
            name="connect",
            port=CONNECT_PORT,
            command=lambda s: _java(s, "512m", f"{s}/lib/connect/*",
                                    ["org.apache.kafka.connect.cli.ConnectDistributed",
                                     str(_render("connect-distributed.properties", s))]),
            env=lambda s: {
                "MONGODB_URI": with_driver_option(settings.mongodb_uri, "serverSelectionTimeoutMS",
                                                  SINK_SERVER_SELECTION_MS),
                "SCHEMA_REGISTRY_V2_URL": f"http://127.0.0.1:{REGISTRY_PORT}/apis/registry/v2",
            },
            ready=connect_ready,
            startup_timeout=240,
        ),
        Component(
            name="supervisor",
            port=None,
            # restarts what dies and restarts FAILED connectors (control/supervisor.py)
            command=lambda s: [sys.executable, "-m", "control.cli", "supervise"],
            env=lambda s: {"CRYPTOPULSE_STATE_DIR": str(s), "PYTHONUNBUFFERED": "1"},
            inherit=SETTINGS_ENV,  # it starts the others again: the settings they are built from
            workdir=lambda s: PROJECT_DIR,
            ready=lambda: _supervisor_reporting(settings.state_dir),
            startup_timeout=30,
        ),
    ]


def _supervisor_reporting(state: Path) -> bool:
    """The supervisor has written its report within the last 10 s."""
    report = state / "run" / "supervisor.json"
    try:
        return time.time() - report.stat().st_mtime < 10
    except FileNotFoundError:
        return False


# --- supervision (control/supervisor.py writes the report, these read it) ---

def supervision_file(state_dir: Path) -> Path:
    return state_dir / "run" / "supervisor.json"


def supervision_report(state_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The supervisor's last report: {"components": {name: record}, "connectors": {name: record}}."""
    try:
        data = json.loads(supervision_file(state_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"components": {}, "connectors": {}}
    return {"components": data.get("components", {}), "connectors": data.get("connectors", {}),
            "updated": data.get("updated")}


def hold_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.hold"


def reset_supervision(state_dir: Path) -> None:
    """Forget flapping states (on `control stack up`): the operator asked to try again."""
    path = supervision_file(state_dir)
    data = supervision_report(state_dir)
    if not path.exists():
        return
    for record in data["components"].values():
        if record.get("state") == "flapping":
            record.update(state="down", recent=[], delay=0.0, next_try=0.0)
    path.write_text(json.dumps(data, indent=1))


# --- lifecycle --------------------------------------------------------------


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"


def _where(component: Component) -> str:
    return f" on 127.0.0.1:{component.port}" if component.port is not None else ""


def start(component: Component, state: Path, say=print) -> None:
    """Start one component unless it already runs, and wait until it is ready."""
    os.umask(PRIVATE)
    if component.pid(state) is not None and component.ready():
        say(f"{component.name}: already running{_where(component)}")
        return
    if component.pid(state) is None and component.port is not None and _port_open(component.port):
        raise StackError(
            f"{component.name}: port {component.port} is taken by a process the stack did not start; "
            "stop it or run `control stack down` first"
        )
    if component.pid(state) is None:
        if component.prepare:
            component.prepare(state)
        log = component.log_file(state)
        log.parent.mkdir(parents=True, exist_ok=True)
        component.pid_file(state).parent.mkdir(parents=True, exist_ok=True)
        command = component.command(state)
        with log.open("ab") as out:
            out.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            out.flush()
            proc = subprocess.Popen(
                command,
                cwd=component.workdir(state) if component.workdir else state,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=process_env(component, state), start_new_session=True, umask=PRIVATE,
            )
        # what `pid` checks before anyone signals it: this pid running this command line
        component.pid_file(state).write_text(json.dumps({"pid": proc.pid, "cmdline": command}))  # argv, as exec'd
        deadline = time.monotonic() + 2
        while _cmdline(proc.pid) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the kernel shows the new program's arguments a moment after exec returns
        say(f"{component.name}: starting (pid {proc.pid}, log {log})")
    started = time.monotonic()
    while time.monotonic() - started < component.startup_timeout:
        if component.pid(state) is None:
            raise StackError(
                f"{component.name} exited during start-up; see {component.log_file(state)}\n"
                f"{_tail(component.log_file(state))}"
            )
        if component.ready():
            say(f"{component.name}: ready{_where(component)} after {time.monotonic() - started:.1f}s")
            return
        time.sleep(0.5)
    raise StackError(
        f"{component.name} did not become ready within {component.startup_timeout:.0f}s; "
        f"see {component.log_file(state)}\n{_tail(component.log_file(state))}"
    )


def stop(component: Component, state: Path, say=print, timeout: float = 60) -> None:
    """SIGTERM the component's process group, SIGKILL it if it does not exit in time."""
    pid = component.pid(state)
    # the pid file goes first: a component without one is stopped on purpose, and the supervisor leaves it so
    component.pid_file(state).unlink(missing_ok=True)
    if pid is None:
        return
    say(f"{component.name}: stopping (pid {pid})")
    # `pid` checked the command line; the group is signalled only if the process still leads it (it was started
    # in a session of its own), so nothing outside the component is ever hit
    command = _cmdline(pid)
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid) and _cmdline(pid) == command:
        say(f"{component.name}: did not stop in {timeout:.0f}s, killing it")
        _signal(pid, signal.SIGKILL)
    component.pid_file(state).unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process's group when it leads one, else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def up(settings: Settings, say=print) -> None:
    """Install what is missing and start every component that is not running; an operator's holds and the
    supervisor's "flapping" verdicts are cleared (being asked to start is being asked to try again)."""
    state = settings.state_dir
    make_private(state)
    install(state, say)
    reset_supervision(state)
    for component in components(settings):
        hold_file(state, component.name).unlink(missing_ok=True)
        start(component, state, say)


def hold(settings: Settings, name: str) -> None:
    """Keep a component down on purpose: the supervisor does not restart it until `release`."""
    _component(settings, name)
    path = hold_file(settings.state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def release(settings: Settings, name: str) -> None:
    """Let the supervisor start a held component again (it does so within a few seconds)."""
    _component(settings, name)
    hold_file(settings.state_dir, name).unlink(missing_ok=True)


def _component(settings: Settings, name: str) -> Component:
    by_name = {c.name: c for c in components(settings)}
    if name not in by_name:
        raise StackError(f"unknown component {name!r}; choose one of {', '.join(by_name)}")
    return by_name[name]


def down(settings: Settings, say=print) -> None:
    for component in reversed(components(settings)):
        stop(component, settings.state_dir, say)


def rss_mib(pid: int, others: frozenset[int] = frozenset()) -> float:
    """Resident memory of a process and its children, in MiB; `others` (components the supervisor started, so
    its children) are counted on their own rows."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        if current != pid and current in others:
            continue
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        pids.extend(int(c) for c in children)
    return total / 1024


def status(settings: Settings) -> list[dict]:
    """One row per component; `restarts` and `supervision` (running, down, restarting, held, flapping)
    come from the supervisor's report."""
    report = supervision_report(settings.state_dir)["components"]
    running = frozenset(filter(None, (c.pid(settings.state_dir) for c in components(settings))))
    rows = []
    for component in components(settings):
        pid = component.pid(settings.state_dir)
        seen = report.get(component.name, {})
        state = "ready" if pid and component.ready() else ("starting" if pid else "stopped")
        if seen.get("state") in ("down", "restarting", "flapping", "held") and state != "ready":
            state = seen["state"]
        rows.append({
            "name": component.name,
            "address": f"127.0.0.1:{component.port}" if component.port is not None else "-",
            "pid": pid,
            "state": state,
            "restarts": seen.get("restarts", 0),
            "last_error": seen.get("last_error") if state != "ready" else None,
            "rss_mib": round(rss_mib(pid, running), 1) if pid else None,
            "log": str(component.log_file(settings.state_dir)),
        })
    return rows


def logs(settings: Settings, name: str, lines: int, follow: bool) -> None:
    log = _component(settings, name).log_file(settings.state_dir)
    if not log.exists():
        raise StackError(f"{name} has no log yet ({log}); start it with `control stack up`")
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", str(log)])
    sys.stdout.write(_tail(log, lines) + "\n")
