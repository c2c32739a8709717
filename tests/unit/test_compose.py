"""docker-compose.yml and the Connect image recipe, checked as text: no Docker needed.

The compose file must run the same system as the native stack: official images, the same host
ports, the same two Connect plugins, and every `${env:NAME}` of the connector configs set on the
worker. Start order relies on healthchecks, so each dependency must have one.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from cryptopulse import topics
from cryptopulse.settings import SINK_SERVER_SELECTION_MS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CONNECT_DOCKERFILE = ROOT / "connectors" / "Dockerfile"
STACK_POM = ROOT / "control" / "stack" / "pom.xml"
NATIVE_WORKER_CONFIG = ROOT / "control" / "stack" / "connect-distributed.properties"
MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

PLUGIN_PATH = "/opt/connect-plugins"
PLUGIN_DIRS = ("mongo-kafka-connect", "apicurio-converter")
PYTHON_APPS = ("init", "producer", "webui")
WEBUI_PORT = 8000
# worker settings that must differ from the native (loopback) template
DOCKER_SPECIFIC = {"bootstrap.servers", "listeners", "plugin.path", "rest.advertised.host.name", "rest.advertised.port"}


# --- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def published_ports(service: dict) -> dict[int, int]:
    """host port -> container port, from short ("[ip:]host:container") or long port syntax."""
    result = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result[int(entry["published"])] = int(entry["target"])
        else:
            *_, host, container = str(entry).split("/")[0].split(":")
            result[int(host)] = int(container)
    return result


def depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    # the list form means "service_started": not good enough for anything here
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def advertised_listeners(kafka: dict) -> dict[str, str]:
    """listener name -> host:port, from KAFKA_ADVERTISED_LISTENERS."""
    value = environment(kafka)["KAFKA_ADVERTISED_LISTENERS"]
    return dict(item.strip().split("://", 1) for item in value.split(","))


def host_of(address: str) -> str:
    """The host of a URL (http://h:p/..., mongodb://h:p) or of a bare host:port."""
    return (urlsplit(address).hostname if "://" in address else address.rsplit(":", 1)[0]) or ""


def parse_dockerfile(text: str) -> list[dict]:
    """Instructions as {stage, op, args, body}: continuations joined, comments dropped, heredocs kept."""
    instructions: list[dict] = []
    stage = None
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        op, _, args = line.strip().partition(" ")
        op = op.upper()
        body = None
        heredoc = re.search(r"<<-?(['\"]?)(\w+)\1", args)
        if heredoc:
            terminator, body_lines = heredoc.group(2), []
            for body_line in lines:
                if body_line.strip() == terminator:
                    break
                body_lines.append(body_line)
            body = "\n".join(body_lines)
        if op == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
        instructions.append({"stage": stage, "op": op, "args": args.strip(), "body": body})
    return instructions


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture(scope="module")
def dockerfile() -> list[dict]:
    return parse_dockerfile(CONNECT_DOCKERFILE.read_text())


def final_stage(instructions: list[dict]) -> list[dict]:
    last = max(i for i, ins in enumerate(instructions) if ins["op"] == "FROM")
    return instructions[last:]


def copy_from(args: str) -> tuple[str | None, list[str]]:
    """--from=<stage> (or None) and the remaining words of a COPY."""
    words = shlex.split(args)
    source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
    return source_stage, [w for w in words if not w.startswith("--")]


def worker_config(instructions: list[dict]) -> tuple[str, dict[str, str]]:
    """The properties file the final stage writes inline, and its path."""
    for ins in final_stage(instructions):
        if ins["op"] == "COPY" and ins["body"] is not None:
            destination = copy_from(ins["args"])[1][-1]
            if destination.endswith(".properties"):
                return destination, parse_properties(ins["body"])
    raise AssertionError("the Connect image writes no worker .properties file")


# --- services and images -------------------------------------------------------


def test_all_services_are_defined(services: dict) -> None:
    expected = {"kafka", "schema-registry", "connect", "mongo", "init", "producer", "webui"}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"


def test_services_use_the_official_images(services: dict, dockerfile: list[dict]) -> None:
    assert re.fullmatch(r"apache/kafka:4\.[\w.-]+", services["kafka"]["image"])
    assert re.fullmatch(r"apicurio/apicurio-registry:3\.[\w.-]+", services["schema-registry"]["image"])
    assert re.fullmatch(r"mongo:[\w.-]+", services["mongo"]["image"]), "the Docker path uses real MongoDB"
    # the Connect worker is the broker's own image plus plugins, so the versions cannot drift apart
    base = final_stage(dockerfile)[0]["args"].split()[0]
    assert base == services["kafka"]["image"]


def test_host_ports_are_the_native_stack_ports(services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "MONGODB_URI"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()  # what host-side tools use unless told otherwise
    expected = {
        "kafka": int(defaults.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1]),
        "schema-registry": urlsplit(defaults.schema_registry_url).port,
        "connect": urlsplit(defaults.connect_url).port,
        "mongo": urlsplit(defaults.mongodb_uri).port,
        "webui": WEBUI_PORT,
    }
    assert sorted(expected.values()) == [8000, 8081, 8083, 9092, 27017]
    for service, port in expected.items():
        assert port in published_ports(services[service]), f"{service} does not publish host port {port}"


def test_kafka_listeners_serve_containers_and_host(services: dict) -> None:
    kafka = services["kafka"]
    listeners = advertised_listeners(kafka)
    assert "localhost:9092" in listeners.values(), "the host reaches Kafka at localhost:9092"
    assert published_ports(kafka)[9092] == 9092
    internal = [address for address in listeners.values() if host_of(address) == "kafka"]
    assert internal, "containers need a listener advertised as kafka:<port>"
    for listener in listeners:
        assert f"{listener}://" in environment(kafka)["KAFKA_LISTENERS"]


# --- start order ----------------------------------------------------------------


def test_dependencies_wait_for_health_or_completion(services: dict) -> None:
    allowed = {"service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dependency, spec in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = spec.get("condition")
            assert condition in allowed, f"{name} -> {dependency}: condition {condition!r}"
            target = services[dependency]
            if condition == "service_healthy":
                test = (target.get("healthcheck") or {}).get("test")
                assert test and test != ["NONE"] and not target["healthcheck"].get("disable"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )
            else:
                assert str(target.get("restart", "no")) == "no", f"{dependency} must run once and exit"


def test_start_order(services: dict) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in depends_on(services[name]).items()}

    assert conditions("schema-registry") == {"kafka": "service_healthy"}
    assert conditions("connect") == {
        "kafka": "service_healthy",
        "schema-registry": "service_healthy",
        "mongo": "service_healthy",
    }
    assert conditions("init") == {"connect": "service_healthy"}
    for app in ("producer", "webui"):
        assert conditions(app) == {"init": "service_completed_successfully"}


def test_healthchecks_probe_the_services(services: dict) -> None:
    def test_text(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "/opt/kafka/bin/kafka-" in test_text("kafka")
    assert "http://localhost:9000/health/ready" in test_text("schema-registry")
    assert "http://localhost:8083/connector-plugins" in test_text("connect")
    assert "mongosh" in test_text("mongo") and "ping" in test_text("mongo")


# --- the Connect image -----------------------------------------------------------


def test_connect_is_built_from_connectors_dockerfile(services: dict) -> None:
    build = services["connect"]["build"]
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT, "the Dockerfile copies control/stack/pom.xml"
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == CONNECT_DOCKERFILE
    assert CONNECT_DOCKERFILE.is_file()


def test_dockerfile_puts_both_plugins_in_their_own_folders(dockerfile: list[dict]) -> None:
    pom = ET.parse(STACK_POM).getroot()
    copies = {}
    for ins in final_stage(dockerfile):
        if ins["op"] == "COPY":
            source_stage, paths = copy_from(ins["args"])
            copies[paths[-1].rstrip("/")] = (source_stage, paths[:-1])

    for plugin in PLUGIN_DIRS:
        destination = f"{PLUGIN_PATH}/{plugin}"
        assert destination in copies, f"nothing is copied to {destination}"
        source_stage, sources = copies[destination]
        assert source_stage, f"{destination} must come from the Maven build stage"
        stage = [ins for ins in dockerfile if ins["stage"] == source_stage]
        assert stage, f"no build stage named {source_stage}"
        assert any(ins["op"] == "COPY" and "control/stack/pom.xml" in ins["args"] for ins in stage), (
            "the build stage must resolve plugins with the project's own pom"
        )
        runs = [ins["args"] for ins in stage if ins["op"] == "RUN" and "mvn" in ins["args"]]
        (source,) = sources
        assert any(produces(run, source.rstrip("/"), plugin, pom) for run in runs), (
            f"no mvn command of stage {source_stage} writes {source} ({plugin})"
        )


def produces(run: str, directory: str, plugin: str, pom: ET.Element) -> bool:
    """Whether this mvn command line writes `plugin` into `directory`, given the pom."""
    options = dict(re.findall(r"-D([\w.]+)=(\S+)", run))
    if plugin == "apicurio-converter":
        profile = pom.find("m:profiles/m:profile[m:id='converter']", MAVEN_NS)
        artifacts = {a.text for a in profile.iterfind(".//m:dependency/m:artifactId", MAVEN_NS)}
        return (
            "apicurio-registry-utils-converter" in artifacts
            and re.search(r"-P\s*converter\b", run) is not None
            and "dependency:copy-dependencies" in run
            and options.get("outputDirectory", "").rstrip("/") == directory
        )
    execution = pom.find(".//m:execution[m:id='plugins']", MAVEN_NS)
    item = execution.find(".//m:artifactItem", MAVEN_NS)
    assert item.findtext("m:artifactId", namespaces=MAVEN_NS) == "mongo-kafka-connect"
    assert item.findtext("m:classifier", namespaces=MAVEN_NS) == "all"
    output = item.findtext("m:outputDirectory", namespaces=MAVEN_NS)
    return (
        "dependency:copy@plugins" in run
        and "state.dir" in options
        and output.replace("${state.dir}", options["state.dir"].rstrip("/")) == directory
    )


def test_worker_config_matches_the_native_one(dockerfile: list[dict], services: dict) -> None:
    path, config = worker_config(dockerfile)
    (command,) = [ins["args"] for ins in final_stage(dockerfile) if ins["op"] in ("CMD", "ENTRYPOINT")]
    assert "/opt/kafka/bin/connect-distributed.sh" in command and path in command

    assert config["plugin.path"] == PLUGIN_PATH
    assert config["bootstrap.servers"] in advertised_listeners(services["kafka"]).values()
    assert host_of(config["bootstrap.servers"]) == "kafka"
    rest = urlsplit(config["listeners"])
    assert rest.hostname == "0.0.0.0", "the REST API must be reachable from other containers"
    assert rest.port == published_ports(services["connect"])[8083]
    assert "env" in config["config.providers"].split(",")
    assert config["config.providers.env.class"].endswith(".EnvVarConfigProvider")

    native = parse_properties(NATIVE_WORKER_CONFIG.read_text().replace("{{replicas}}", "1"))  # as one node
    assert set(native) <= set(config), f"missing worker settings: {sorted(set(native) - set(config))}"
    for key in set(native) - DOCKER_SPECIFIC:
        assert config[key] == native[key], f"{key}: {config[key]!r} differs from the native {native[key]!r}"


# --- environment --------------------------------------------------------------------


def test_connect_sets_every_env_placeholder_of_the_connectors(services: dict) -> None:
    names = set()
    for path in sorted((ROOT / "connectors").glob("*.json")):
        names |= set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    assert names, "the connector configs are expected to use ${env:...} placeholders"
    env = environment(services["connect"])
    missing = sorted(name for name in names if not env.get(name))
    assert not missing, f"the connect service does not set {missing}"
    assert env["SCHEMA_REGISTRY_V2_URL"].endswith("/apis/registry/v2")


def test_python_apps_reach_the_services_by_name(services: dict) -> None:
    internal = {a for a in advertised_listeners(services["kafka"]).values() if host_of(a) == "kafka"}
    for app in PYTHON_APPS:
        env = environment(services[app])
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") in internal, app
        assert env.get("SCHEMA_REGISTRY_URL", "").endswith("/apis/ccompat/v7"), app
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "MONGODB_URI"):
            assert host_of(env.get(name, "")) in services, f"{app}: {name}={env.get(name)!r}"
    for name, service in services.items():
        for key, value in environment(service).items():
            if re.match(r"(https?|mongodb)://", value):
                assert host_of(value) in services, f"{name}: {key} points at {value}, not a compose service"
    assert environment(services["webui"]).get("WEBUI_HOST") == "0.0.0.0"


def test_python_apps_run_the_project_commands(services: dict) -> None:
    def command(name: str) -> list[str]:
        cmd = services[name]["command"]
        return shlex.split(cmd) if isinstance(cmd, str) else cmd

    assert command("init")[-2:] == ["control", "deploy-connectors"]
    assert command("producer")[:2] == ["producer", "run"]
    assert command("webui")[0] == "webui"
    for app in PYTHON_APPS:
        assert services[app]["image"].startswith("python:3.11")
        assert any(str(v).split(":")[1:] == ["/app", "ro"] for v in services[app]["volumes"]), app


# --- self-healing (docs/operations.md) ------------------------------------------


def test_every_long_running_service_is_restarted_and_the_one_shot_init_is_not(services: dict) -> None:
    for name, service in services.items():
        expected = "no" if name == "init" else "unless-stopped"
        assert service.get("restart") == expected, f"{name}: restart {service.get('restart')!r}, want {expected}"


def test_a_supervisor_restarts_failed_connectors(services: dict) -> None:
    command = services["supervisor"]["command"]
    assert command == ["control", "supervise", "--connectors-only"]
    assert environment(services["supervisor"])["CONNECT_URL"] == "http://connect:8083"


def test_the_sink_driver_waits_for_a_restarting_store(services: dict) -> None:
    uri = environment(services["connect"])["MONGODB_URI"]
    assert f"serverSelectionTimeoutMS={SINK_SERVER_SELECTION_MS}" in urlsplit(uri).query, uri


# --- the ports' address, and the cluster file (issue 9, docs/scaling.md) ---------------------

CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"
PUBLISH = "${CRYPTOPULSE_PUBLISH_ADDRESS:-127.0.0.1}"  # one variable opens them all, loopback unless told
PROXY_PUBLISH = "${CRYPTOPULSE_PROXY_ADDRESS:-127.0.0.1}"  # the TLS proxy's, of its own (issue 21)
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
WORKERS = ("connect-1", "connect-2")
MEMBERS = ("mongo-1", "mongo-2", "mongo-3")
ONE_SHOTS = ("init", "mongo-init")
CONSOLES = ("kafka-ui", "registry-ui")  # the default file's only (docs/operations.md)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text())["services"]


@pytest.mark.parametrize("path", [COMPOSE_FILE, CLUSTER_FILE], ids=lambda p: p.name)
def test_every_port_is_published_on_loopback_unless_the_variable_says_otherwise(path: Path) -> None:
    services = yaml.safe_load(path.read_text())["services"]
    entries = [(name, entry) for name, service in services.items() for entry in service.get("ports") or []]
    assert entries
    for name, entry in entries:
        address = entry.get("host_ip") if isinstance(entry, dict) else str(entry).rsplit(":", 2)[0]
        wanted = PROXY_PUBLISH if name == "proxy" else PUBLISH  # the proxy alone may face a network
        assert address == wanted, f"{name}: {entry!r} is not published on {wanted}"
    hosts = [port for service in services.values() for port in published_ports(service)]
    assert len(hosts) == len(set(hosts)), f"a host port published twice: {sorted(hosts)}"
    assert "CRYPTOPULSE_PUBLISH_ADDRESS" in path.read_text().split("services:")[0], "documented in the header"


def test_the_cluster_has_every_service_of_the_default_file_grown(services: dict, cluster: dict) -> None:
    grown = {"kafka": BROKERS, "connect": WORKERS, "mongo": MEMBERS}
    expected = {name for service in services if service not in CONSOLES and service != "proxy"  # the default's option
                for name in grown.get(service, (service,))} | {"mongo-init"}
    assert expected <= set(cluster), f"missing: {sorted(expected - set(cluster))}"
    for name in BROKERS:
        assert cluster[name]["image"] == services["kafka"]["image"]
    for name in MEMBERS:
        assert cluster[name]["image"] == services["mongo"]["image"]
    assert cluster["schema-registry"]["image"] == services["schema-registry"]["image"]
    for name in WORKERS:
        assert cluster[name]["build"] == services["connect"]["build"], "the same Connect image"


def test_the_cluster_waits_for_health_or_completion_and_restarts_what_runs_long(cluster: dict) -> None:
    test_dependencies_wait_for_health_or_completion(cluster)
    for name, service in cluster.items():
        expected = "no" if name in ONE_SHOTS else "unless-stopped"
        assert service.get("restart") == expected, f"{name}: restart {service.get('restart')!r}, want {expected}"
    for name in WORKERS:
        assert set(depends_on(cluster[name])) == {*BROKERS, "schema-registry", "mongo-init"}
    assert set(depends_on(cluster["init"])) == set(WORKERS)


def test_three_brokers_make_one_kraft_quorum_with_three_replicas(cluster: dict) -> None:
    envs = {name: environment(cluster[name]) for name in BROKERS}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs.values()) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    (voters,) = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert sorted(voters.split(",")) == [f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in envs.items()]
    for name, env in envs.items():
        assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
        listeners = advertised_listeners(cluster[name])
        assert listeners["INTERNAL"] == f"{name}:29092"
        external = int(listeners["EXTERNAL"].rsplit(":", 1)[1])
        assert host_of(listeners["EXTERNAL"]) == "localhost" and published_ports(cluster[name])[external] == external
        assert f"EXTERNAL://:{external}" in env["KAFKA_LISTENERS"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert "/opt/kafka/bin/kafka-" in " ".join(cluster[name]["healthcheck"]["test"])


def test_two_connect_workers_form_one_group_on_the_whole_cluster(cluster: dict, dockerfile: list[dict]) -> None:
    _, config = worker_config(dockerfile)
    assert config["group.id"] and config["config.storage.replication.factor"] == "1"
    placeholders = set()
    for path in sorted((ROOT / "connectors").glob("*.json")):
        placeholders |= set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    for name in WORKERS:
        script = " ".join(cluster[name]["command"])
        env = environment(cluster[name])
        # the image's worker file, rewritten: every broker, replicated internal topics, its own REST address; the
        # group id is left as it is, so both workers are one group
        assert "connect-docker.properties" in script and "connect-distributed.sh" in script
        assert "group.id" not in script
        assert "s/storage.replication.factor=1/storage.replication.factor=3/" in script
        assert "bootstrap.servers=$$CONNECT_BOOTSTRAP_SERVERS" in script
        assert "rest.advertised.host.name=$$CONNECT_ADVERTISED_HOST" in script
        assert env["CONNECT_ADVERTISED_HOST"] == name
        assert {host_of(a) for a in env["CONNECT_BOOTSTRAP_SERVERS"].split(",")} == set(BROKERS)
        assert all(env.get(p) for p in placeholders), f"{name} does not set every ${{env:...}} of the connectors"
        uri = urlsplit(env["MONGODB_URI"])
        assert {host_of(h) for h in uri.netloc.split(",")} == set(MEMBERS)
        assert {"replicaSet=rs0", "w=majority", f"serverSelectionTimeoutMS={SINK_SERVER_SELECTION_MS}"} <= set(
            uri.query.split("&")), env["MONGODB_URI"]
        assert "http://localhost:8083/connector-plugins" in " ".join(cluster[name]["healthcheck"]["test"])


def test_the_mongodb_replica_set_is_made_once_from_its_three_members(cluster: dict) -> None:
    for name in MEMBERS:
        assert cluster[name]["command"][:3] == ["mongod", "--replSet", "rs0"]
        assert "ping" in " ".join(cluster[name]["healthcheck"]["test"])
    script = " ".join(cluster["mongo-init"]["command"])
    assert "rs.initiate" in script and 'rs0' in script and "try { rs.status() }" in script
    assert all(f"{name}:27017" in script for name in MEMBERS)
    assert set(depends_on(cluster["mongo-init"])) == set(MEMBERS)


def test_the_clusters_apps_create_replicated_partitioned_topics(cluster: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for app in ("init", "producer", "streams", "alerts", "notify", "webui", "supervisor"):
        env = environment(cluster[app])
        assert {host_of(a) for a in env["KAFKA_BOOTSTRAP_SERVERS"].split(",")} == set(BROKERS), app
        assert "replicaSet=rs0" in env["MONGODB_URI"], app
        assert host_of(env["CONNECT_URL"]) in WORKERS, app
    env = environment(cluster["init"])  # the settings `control deploy-connectors` creates the topics with
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.replication_factor == 3 <= len(BROKERS) and settings.min_insync_replicas == 2
    assert settings.sink_tasks_max <= min(settings.prices_partitions, settings.candles_partitions), "tasks idle"
    specs = {s.name: s for s in topics.project_topics(settings)}
    assert specs[settings.prices_topic].partitions >= 2 * 2, "room for two roll-up processes and more"
    assert {s.config.get("min.insync.replicas") for s in specs.values()} == {"2"}
    assert cluster["streams"]["deploy"]["replicas"] >= 2, "the roll-up as a group of processes"


# --- the consoles (issue 14, item 4; docs/operations.md) ---------------------------------------------------------

KAFKA_UI_PORT, REGISTRY_UI_PORT = 8080, 8888


def default_of(value: str) -> str:
    """The default of a `${NAME:-default}` value (the value itself when it is not one)."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_the_consoles_are_the_ecosystems_own_images(services: dict) -> None:
    assert re.fullmatch(r"ghcr\.io/kafbat/kafka-ui:v[\d.]+", services["kafka-ui"]["image"])
    registry_version = services["schema-registry"]["image"].split(":", 1)[1]
    assert services["registry-ui"]["image"] == f"apicurio/apicurio-registry-ui:{registry_version}", \
        "the registry's UI of the registry's own version"


def test_the_consoles_are_published_on_documented_loopback_ports(services: dict) -> None:
    assert services["kafka-ui"]["ports"] == [f"{PUBLISH}:{KAFKA_UI_PORT}:8080"]
    assert services["registry-ui"]["ports"] == [f"{PUBLISH}:{REGISTRY_UI_PORT}:8080"]  # nginx in the image: 8080
    documented = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "README.md").read_text()
    for port in (KAFKA_UI_PORT, REGISTRY_UI_PORT):
        assert f"localhost:{port}" in documented and f"localhost:{port}" in COMPOSE_FILE.read_text()


def test_the_kafka_ui_is_wired_to_the_brokers_the_registry_and_connect(services: dict) -> None:
    env = environment(services["kafka-ui"])
    apps = environment(services["webui"])
    internal = {a for a in advertised_listeners(services["kafka"]).values() if host_of(a) == "kafka"}
    assert env["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] in internal
    # the registry's Confluent-compatible API, as the Python side reads it; Connect's REST API
    assert env["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"] == apps["SCHEMA_REGISTRY_URL"]
    assert urlsplit(env["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"]).path == "/apis/ccompat/v7"
    assert env["KAFKA_CLUSTERS_0_KAFKACONNECT_0_ADDRESS"] == apps["CONNECT_URL"] == "http://connect:8083"
    assert env["KAFKA_CLUSTERS_0_KAFKACONNECT_0_NAME"] and env["KAFKA_CLUSTERS_0_NAME"]
    assert default_of(env["KAFKA_CLUSTERS_0_READONLY"]) == "true" and env["DYNAMIC_CONFIG_ENABLED"] == "false"
    assert {name: spec["condition"] for name, spec in depends_on(services["kafka-ui"]).items()} == {
        "kafka": "service_healthy", "schema-registry": "service_healthy", "connect": "service_healthy"}


def test_the_registry_ui_calls_the_registry_from_the_browser_and_only_it_may(services: dict) -> None:
    env = environment(services["registry-ui"])
    api = urlsplit(default_of(env["REGISTRY_API_URL"]))
    # the page runs in the host's browser: the registry's published port on the host, its core v3 API
    assert api.hostname == "localhost" and api.port in published_ports(services["schema-registry"])
    assert published_ports(services["schema-registry"])[api.port] == 8081 and api.path == "/apis/registry/v3"
    assert default_of(env["REGISTRY_FEATURE_READ_ONLY"]) == "true"
    origins = default_of(environment(services["schema-registry"])["QUARKUS_HTTP_CORS_ORIGINS"]).split(",")
    assert "*" not in origins and set(origins) == {f"http://localhost:{REGISTRY_UI_PORT}",
                                                   f"http://127.0.0.1:{REGISTRY_UI_PORT}"}
    assert {name: spec["condition"] for name, spec in depends_on(services["registry-ui"]).items()} == {
        "schema-registry": "service_healthy"}


def test_the_hosts_browser_may_write_alert_rules_through_the_loopback_port(services: dict) -> None:
    # Docker's port forwarding is never the container's loopback: the page's rule form would refuse the host's
    # own browser, so the compose file opens it, while the port is on the host's loopback (docs/security.md)
    assert default_of(environment(services["webui"])["WEBUI_ALERT_RULES_REMOTE"]) == "1"
    assert services["webui"]["ports"] == [f"{PUBLISH}:8000:8000"]


def test_the_clusters_page_may_write_alert_rules_too(cluster: dict) -> None:
    # the cluster file lacked it: its page listed the rules without the form (issue 22, item 6)
    webui = cluster["webui"]
    assert default_of(environment(webui)["WEBUI_ALERT_RULES_REMOTE"]) == "1"


# --- the notifier (issue 20; docs/alerts.md) ------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, ROOT / "docker-compose.cluster.yml"], ids=["default", "cluster"])
def test_the_notifier_runs_beside_the_alert_processor_with_its_secrets_file_only(path: Path) -> None:
    services = yaml.safe_load(path.read_text())["services"]
    notify = services["notify"]
    assert notify["command"] == ["streams", "notify"] and notify["restart"] == "unless-stopped"
    assert notify["env_file"] == [{"path": "notify.env", "required": False}]
    assert not any("env_file" in service for name, service in services.items() if name != "notify"), \
        "the channels' secrets go to the notifier only"
    script = " ".join(notify["entrypoint"])
    assert "--exclude=notify.env" in script, "the secrets file is never copied into the container's source"
    assert "notify.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_demo_runs_the_notifier_and_keeps_it_running() -> None:
    commands = (ROOT / "run").read_text()
    assert "keep streams alerts &" in commands and "keep streams notify &" in commands


# --- accounts and the TLS proxy (issue 21; docs/security.md) ---------------------------------------------------


def test_the_tls_proxy_is_optional_and_the_dashboard_trusts_it_alone(services: dict) -> None:
    proxy = services["proxy"]
    assert proxy["profiles"] == ["proxy"], "only with `docker compose --profile proxy up`"
    assert re.fullmatch(r"caddy:2[\w.-]*", proxy["image"])
    assert sorted(proxy["ports"]) == [f"{PROXY_PUBLISH}:443:443", f"{PROXY_PUBLISH}:80:80"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    address = proxy["networks"]["edge"]["ipv4_address"]
    webui = environment(services["webui"])
    assert default_of(webui["WEBUI_TRUSTED_PROXIES"]) == address, "the proxy, and nobody else"
    assert "edge" in services["webui"]["networks"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy webui:8000" in caddyfile and "{$CRYPTOPULSE_DOMAIN:localhost}" in caddyfile


def test_the_dashboard_keeps_its_session_secret_and_serves_its_loopback_port_without_accounts(services: dict) -> None:
    webui = environment(services["webui"])
    assert webui["WEBUI_SECRET_FILE"].startswith("/var/lib/cryptopulse/")
    assert "webui-state:/var/lib/cryptopulse" in services["webui"]["volumes"]
    # bound to 0.0.0.0 in its container, published on the host's loopback: allowed without accounts, by default
    assert webui["WEBUI_HOST"] == "0.0.0.0" and default_of(webui["WEBUI_ALLOW_OPEN"]) == "1"
    assert services["webui"]["ports"] == [f"{PUBLISH}:8000:8000"]
