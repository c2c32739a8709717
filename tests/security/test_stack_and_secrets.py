"""Issue 12: the stack's secrets and the native stack's hygiene.

Before: every stack process got the operator's whole environment, and the Connect worker's EnvVarConfigProvider
resolved any variable for anyone who reached its REST API; `control status` printed MONGODB_URI with its
password; `stack down` sent killpg to whatever process had the pid in a pid file; the state folder was
world-readable; the FerretDB rebuild check ignored lookupindex.go; Maven ran without strict checksums; Python
dependencies floated with no lock.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control.stack import components, installation, processes
from cryptopulse.settings import Settings
from tests import children

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"COINMARKETCAP_API_KEY": "cmc-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret", "GITHUB_TOKEN": "gh-secret"}


def probe(state: Path, env: dict[str, str] | None = None, inherit: tuple[str, ...] = ()) -> components.Component:
    """A component that writes its environment to <state>/env.json, then sleeps."""
    out = state / "env.json"
    code = f"import json, os, time; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ))); time.sleep(600)"
    return components.Component(name="probe", port=None, command=lambda s: [sys.executable, "-c", code],
                           ready=out.exists, startup_timeout=10, env=(lambda s: env) if env else None,
                           inherit=inherit)


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    running: list[components.Component] = []

    def start(component: components.Component) -> dict[str, str]:
        processes.start(component, tmp_path, say=lambda line: None)
        running.append(component)
        return json.loads((tmp_path / "env.json").read_text())

    yield start
    for component in running:
        processes.stop(component, tmp_path, say=lambda line: None, timeout=5)


# --- secrets ---------------------------------------------------------------------------------------------------


def test_a_stack_process_gets_only_the_environment_it_needs(tmp_path, started):
    env = started(probe(tmp_path, env={"NEEDED": "yes"}))
    assert env["NEEDED"] == "yes" and env.get("PATH") == os.environ["PATH"]
    leaked = sorted(set(SECRETS) & set(env))
    assert not leaked, f"the operator's secrets reached the process: {leaked}"
    assert set(env) <= {*components.BASE_ENV, "NEEDED", "LC_CTYPE"}, sorted(env)


def test_connect_gets_the_store_and_the_registry_and_nothing_else():
    connect = next(c for c in components.components(Settings()) if c.name == "connect")
    env = components.process_env(connect, Settings().state_dir)
    assert {"MONGODB_URI", "SCHEMA_REGISTRY_V2_URL"} <= set(env)
    assert set(env) - {"MONGODB_URI", "SCHEMA_REGISTRY_V2_URL"} <= set(components.BASE_ENV)


def test_the_supervisor_inherits_every_setting_it_rebuilds_the_others_from():
    """It starts Connect again with MONGODB_URI, Kafka with the state folder, ...: every variable Settings reads."""
    read = set(re.findall(r'env\("([A-Z0-9_]+)"', (ROOT / "cryptopulse" / "settings.py").read_text()))
    supervisor = next(c for c in components.components(Settings()) if c.name == "supervisor")
    assert read and read <= set(supervisor.inherit), sorted(read - set(supervisor.inherit))
    assert not set(SECRETS) & set(supervisor.inherit)


def worker_configs() -> dict[str, dict[str, str]]:
    def properties(text: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))

    dockerfile = (ROOT / "connectors" / "Dockerfile").read_text()
    heredoc = re.search(r"<<'EOF' /opt/kafka/config/connect-docker.properties\n(.*?)\nEOF", dockerfile, re.DOTALL)
    assert heredoc, "the compose worker's configuration"
    return {"native": properties((ROOT / "control" / "stack" / "connect-distributed.properties").read_text()),
            "compose": properties(heredoc.group(1))}


@pytest.mark.parametrize("where", ["native", "compose"])
def test_the_connect_worker_resolves_only_the_variables_the_connectors_use(where):
    config = worker_configs()[where]
    pattern = config.get("config.providers.env.param.allowlist.pattern")
    assert pattern, "no allowlist: ${env:ANY_VARIABLE} resolves for anyone who reaches the REST API"
    used = set()
    for path in (ROOT / "connectors").glob("*.json"):
        used |= set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    assert used and all(re.fullmatch(pattern, name) for name in used)  # Java's Matcher.matches(): a whole name
    for name in [*SECRETS, "HOME", "PATH", "MONGODB_URI_OTHER", "X_MONGODB_URI", "JAVA_HOME"]:
        assert not re.fullmatch(pattern, name), f"{name} would resolve"


@pytest.mark.integration
def test_the_running_connect_worker_does_not_echo_an_environment_variable():
    """Connect's validate endpoint resolves config providers and echoes the values: `${env:HOME}` came back as
    /root for anyone who could reach port 8083."""
    import requests

    settings = Settings()
    body = {"connector.class": "com.mongodb.kafka.connect.MongoSinkConnector", "name": "security-probe",
            "topics": "security-probe", "connection.uri": "mongodb://127.0.0.1:27017", "database": "d",
            "errors.deadletterqueue.topic.name": "${env:HOME}"}
    answer = requests.put(f"{settings.connect_url}/connector-plugins/MongoSinkConnector/config/validate",
                          json=body, timeout=30).json()
    values = {c["value"]["name"]: c["value"]["value"] for c in answer["configs"]}
    assert values["errors.deadletterqueue.topic.name"] == "${env:HOME}"


def test_control_status_never_prints_a_password(tmp_path):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CONNECT_URL": "http://127.0.0.1:1",
           "SCHEMA_REGISTRY_URL": "http://registry:reg-secret@127.0.0.1:1/apis/ccompat/v7",
           "MONGODB_URI": "mongodb://app:db-secret@127.0.0.1:1/?serverSelectionTimeoutMS=300&authSource=admin",
           "CRYPTOPULSE_STATE_DIR": str(tmp_path)}
    out = children.run([sys.executable, "-m", "control.cli", "status"], env=env, timeout=120, cwd=ROOT)
    printed = out.stdout + out.stderr
    assert "mongodb://app:***@127.0.0.1:1" in printed  # shown, without its password
    assert "db-secret" not in printed and "reg-secret" not in printed


def test_redact_hides_passwords_and_secret_parameters_only():
    from cryptopulse.redact import redact

    assert redact("mongodb://127.0.0.1:27017") == "mongodb://127.0.0.1:27017"
    assert redact("mongodb+srv://u:p%40ss@c.example.net/db?retryWrites=true") == \
        "mongodb+srv://u:***@c.example.net/db?retryWrites=true"
    assert redact("https://TOKEN@api.example/x?api_key=k&symbol=BTC") == "https://***@api.example/x?api_key=***&symbol=BTC"
    assert redact("127.0.0.1:9092") == "127.0.0.1:9092"


# --- the native stack ------------------------------------------------------------------------------------------


def sleeper(state: Path) -> subprocess.Popen:
    """A process of someone else's, in a session of its own (as a reused pid would be)."""
    return children.start(["sleep", "600"], start_new_session=True)


@pytest.mark.parametrize("pid_file", ["new", "legacy"])
def test_stop_never_signals_a_process_that_is_not_the_components(tmp_path, pid_file):
    """After a reboot or a crash the pid in a pid file may belong to anything; `stop` checked only that some
    process had it, and sent its whole group SIGTERM, then SIGKILL."""
    component = components.Component(name="worker", port=None, command=lambda s: ["sleep", "601"], ready=lambda: True,
                                startup_timeout=5)
    other = sleeper(tmp_path)
    try:
        path = component.pid_file(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"pid": other.pid, "cmdline": ["sleep", "601"]}) if pid_file == "new" else str(other.pid)
        path.write_text(text)
        assert component.pid(tmp_path) is None  # not ours: `sleep 600` is not `sleep 601`
        processes.stop(component, tmp_path, say=lambda line: None, timeout=2)
        time.sleep(0.3)
        assert other.poll() is None, "stop killed a process that was not the component's"
        assert not path.exists()
    finally:
        other.kill()
        other.wait()


def test_stop_still_stops_the_components_own_process(tmp_path):
    component = components.Component(name="worker", port=None, command=lambda s: ["sleep", "602"], ready=lambda: True,
                                startup_timeout=5)
    processes.start(component, tmp_path, say=lambda line: None)
    pid = component.pid(tmp_path)
    assert pid is not None
    processes.stop(component, tmp_path, say=lambda line: None, timeout=5)
    assert component.pid(tmp_path) is None
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_the_stack_writes_is_readable_by_its_owner_only(tmp_path, started):
    state = tmp_path
    started(probe(state))
    assert mode(components.Component("probe", None, lambda s: [], lambda: True, 1).pid_file(state)) == 0o600
    assert mode(state / "logs" / "probe.log") == 0o600
    assert mode(state / "env.json") == 0o600  # written by the process itself: it inherits the private umask
    assert mode(state / "run") == 0o700 and mode(state / "logs") == 0o700


def test_the_state_folder_is_made_private_with_everything_in_it(tmp_path):
    state = tmp_path / "state"
    (state / "kafka" / "data").mkdir(parents=True)
    (state / "kafka" / "data" / "meta.properties").write_text("x")
    (state / "bin").mkdir()
    (state / "bin" / "ferretdb").write_text("#!/bin/sh\n")
    os.chmod(state, 0o755)
    os.chmod(state / "kafka" / "data" / "meta.properties", 0o644)
    os.chmod(state / "bin" / "ferretdb", 0o755)
    umask = os.umask(0o022)
    try:
        processes.make_private(state)
    finally:
        os.umask(umask)
    assert mode(state) == 0o700 and mode(state / "kafka" / "data") == 0o700
    assert mode(state / "kafka" / "data" / "meta.properties") == 0o600
    assert mode(state / "bin" / "ferretdb") == 0o700  # still executable, by its owner


def captured_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, list[Path]], list[list[str]]]:
    """The install steps' inputs and the commands they would run, without running anything."""
    inputs: dict[str, list[Path]] = {}
    commands: list[list[str]] = []
    monkeypatch.setattr(installation, "_require", lambda tool, hint: tool)
    monkeypatch.setattr(installation, "run_logged", lambda cmd, *args, **kwargs: commands.append(list(cmd)))

    def step(state, name, step_inputs, outputs, run, say):  # noqa: ANN001 - installation._step's signature
        inputs[name] = list(step_inputs)
        run()

    monkeypatch.setattr(installation, "_step", step)
    installation.install(tmp_path, say=lambda line: None)
    return inputs, commands


def test_every_source_of_the_ferretdb_build_is_in_its_rebuild_check(tmp_path, monkeypatch):
    inputs, _ = captured_install(tmp_path, monkeypatch)
    sources = {p.name for p in (ROOT / "control" / "ferretdb").iterdir() if p.suffix == ".go" or
               p.name in ("go.mod", "go.sum")}
    assert "lookupindex.go" in sources
    assert {p.name for p in inputs["ferretdb"]} == sources


def test_maven_checks_every_checksum(tmp_path, monkeypatch):
    _, commands = captured_install(tmp_path, monkeypatch)
    maven = [c for c in commands if c[0] == "mvn"]
    assert maven and all("-C" in c or "--strict-checksums" in c for c in maven)
    dockerfile = (ROOT / "connectors" / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (mvn .*)$", dockerfile, re.MULTILINE)
    assert runs and all(re.search(r"\s(-C|--strict-checksums)\s", f" {run} ") for run in runs)


def test_python_dependencies_are_installed_from_a_lock_with_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 1)[1])
    for block in blocks:
        if re.match(r"[A-Za-z0-9_.-]+==", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"],
              *project["build-system"]["requires"]]
    locked = {norm(name) for name in pinned}
    missing = [w for w in wanted if norm(re.split(r"[\[<>=!~ ;]", w, maxsplit=1)[0]) not in locked]
    assert not missing, f"not in requirements.lock: {missing}"
    run = (ROOT / "run").read_text()
    assert re.search(r"pip install .*--require-hashes -r requirements\.lock", run)
    assert re.search(r"pip install .*--no-deps .*-e \.", run)
    assert not re.search(r"pip install [^\n]*-e '?\.\[", run), "the project installed with its dependencies again"
