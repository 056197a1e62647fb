"""The Docker, Compose, Prometheus and Grafana files agree with what the app reads.

No Docker engine runs where the tests run, so each file is read the way
Docker, Compose, Prometheus or Grafana would read it, and compared with
:class:`streams.settings.Settings` and with the other files.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG_TARGET = "/etc/prometheus/prometheus.yml"
GRAFANA_PROVISIONING_TARGET = "/etc/grafana/provisioning"
ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))

Service = dict[str, Any]


# --- Reading the files ----------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        # Docker drops comment lines even inside a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_last(instructions: list[tuple[str, str]], keyword: str) -> str | None:
    found = [arguments for name, arguments in instructions if name == keyword]
    return found[-1] if found else None


def exec_form(arguments: str | None) -> list[str] | None:
    if arguments is None or not arguments.startswith("["):
        return None
    parsed = json.loads(arguments)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in instructions:
        if name != "ENV":
            continue
        tokens = shlex.split(arguments)
        if all("=" in token for token in tokens):
            env.update(token.split("=", 1) for token in tokens)
        else:  # legacy `ENV KEY value with spaces`
            key, _, value = arguments.partition(" ")
            env[key] = value.strip()
    return env


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(part) for part in value]


def build_context(service: Service) -> Path:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    return (COMPOSE_FILE.parent / context).resolve()


def service_dockerfile(service: Service) -> Path:
    build = service["build"]
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return build_context(service) / name


def effective_argv(service: Service) -> list[str]:
    """The process a container of ``service`` starts, as Docker combines it."""
    if "build" in service:
        instructions = dockerfile_instructions(service_dockerfile(service))
        image_entrypoint = exec_form(dockerfile_last(instructions, "ENTRYPOINT")) or []
        image_cmd = exec_form(dockerfile_last(instructions, "CMD")) or []
    else:
        image_entrypoint, image_cmd = [], []
    if "entrypoint" in service:
        # Overriding the entrypoint also clears the image's CMD.
        entrypoint, default_cmd = as_argv(service["entrypoint"]), []
    else:
        entrypoint, default_cmd = image_entrypoint, image_cmd
    command = as_argv(service["command"]) if "command" in service else default_cmd
    return entrypoint + command


def service_env(service: Service) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(str(item).partition("=")[::2] for item in environment)
    return dict(environment)


def container_env(service: Service) -> dict[str, str]:
    """Image ``ENV`` overlaid with the service's ``environment``, as the process sees it."""
    env: dict[str, str] = {}
    if "build" in service:
        env.update(dockerfile_env(dockerfile_instructions(service_dockerfile(service))))
    env.update({key: str(value) for key, value in service_env(service).items()})
    return env


def settings_field(variable: str) -> str | None:
    if not variable.startswith(ENV_PREFIX):
        return None
    return variable[len(ENV_PREFIX) :].lower()


def container_settings(service: Service) -> Settings:
    """The Settings a segstream process in this container would load."""
    fields = {
        field: value
        for variable, value in container_env(service).items()
        if (field := settings_field(variable)) is not None
    }
    return Settings(_env_file=None, **fields)


def port_mappings(service: Service) -> list[tuple[int | None, int]]:
    """``(published, target)`` per ``ports`` entry."""
    mappings: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            mappings.append((int(published) if published else None, int(entry["target"])))
            continue
        # Unquoted `6066:6066` is a base-60 integer to YAML 1.1, not a mapping.
        assert isinstance(entry, str), f"quote the port mapping {entry!r}"
        parts = entry.split("/")[0].split(":")
        published_part = parts[-2] if len(parts) >= 2 else ""
        mappings.append((int(published_part) if published_part else None, int(parts[-1])))
    return mappings


def volume_mounts(service: Service) -> list[tuple[str, str]]:
    """``(source, target)`` per ``volumes`` entry; bind sources resolved to absolute paths."""
    mounts: list[tuple[str, str]] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry["target"])
        else:
            source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/", "~")):
            source = str((COMPOSE_FILE.parent / source).resolve())
        mounts.append((source, target))
    return mounts


def host_path_mounted_at(service: Service, target: str) -> Path:
    sources = [source for source, mounted in volume_mounts(service) if mounted == target]
    assert sources, f"nothing is mounted at {target}"
    return Path(sources[0])


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``{listener name: (host, port)}`` from a Kafka listeners string."""
    listeners: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


# --- Fixtures -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_host_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Containers do not inherit the developer's SEGSTREAM_* variables.
    for variable in list(os.environ):
        if variable.startswith(ENV_PREFIX):
            monkeypatch.delenv(variable)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = load_yaml(COMPOSE_FILE)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml defines no services"
    return found


@pytest.fixture(scope="module")
def segstream_services(services: dict[str, Service]) -> dict[str, Service]:
    """Services whose container runs the ``segstream`` command."""
    found = {
        name: service
        for name, service in services.items()
        if effective_argv(service)[:1] == ["segstream"]
    }
    assert found, "no service runs segstream"
    return found


@pytest.fixture(scope="module")
def workers(segstream_services: dict[str, Service]) -> dict[str, Service]:
    found = {
        name: service
        for name, service in segstream_services.items()
        if effective_argv(service) == ["segstream", "worker"]
    }
    # Table routing between workers is only exercised with more than one.
    assert len(found) >= 2, f"expected at least two workers, found {sorted(found)}"
    return found


@pytest.fixture(scope="module")
def brokers(services: dict[str, Service]) -> dict[str, Service]:
    found = {
        name: service
        for name, service in services.items()
        if "broker" in str(service_env(service).get("KAFKA_PROCESS_ROLES", "")).split(",")
    }
    assert found, "no Kafka broker service"
    return found


# --- Settings -------------------------------------------------------------


def test_every_segstream_variable_is_a_settings_field_with_a_valid_value(
    services: dict[str, Service],
) -> None:
    unknown: list[str] = []
    for name, service in services.items():
        for variable, value in service_env(service).items():
            field = settings_field(variable)
            if field is None:
                continue
            if field not in Settings.model_fields:
                unknown.append(f"{name}: {variable}")
                continue
            # YAML 1.1 reads `no`/`off` as booleans and a bare key as null.
            assert isinstance(value, str | int) and not isinstance(value, bool), (
                f"{name}: {variable} must be a string or number, got {value!r}"
            )
            Settings(_env_file=None, **{field: value})
    assert not unknown, f"not fields of Settings: {unknown}"


def test_the_image_sets_only_settings_fields() -> None:
    env = dockerfile_env(dockerfile_instructions(ROOT / "Dockerfile"))
    fields = {settings_field(variable) for variable in env} - {None}
    assert fields, "the Dockerfile sets no SEGSTREAM_* variable"
    assert fields <= set(Settings.model_fields), fields - set(Settings.model_fields)


def test_segstream_services_agree_on_everything_that_names_or_shapes_topics(
    segstream_services: dict[str, Service], brokers: dict[str, Service]
) -> None:
    shared = (
        "kafka_bootstrap",
        "app_id",
        "topic_prefix",
        "input_partitions",
        "output_partitions",
        "replication_factor",
    )
    seen = {
        name: {field: getattr(container_settings(service), field) for field in shared}
        for name, service in segstream_services.items()
    }
    first = next(iter(seen.values()))
    assert all(values == first for values in seen.values()), seen
    assert first["replication_factor"] <= len(brokers)


# --- Kafka ----------------------------------------------------------------


def test_segstream_services_bootstrap_from_a_brokers_internal_listener(
    services: dict[str, Service], segstream_services: dict[str, Service]
) -> None:
    for name, service in segstream_services.items():
        # The default bootstrap, 127.0.0.1, is the container itself.
        assert f"{ENV_PREFIX}KAFKA_BOOTSTRAP" in container_env(service), name
        for address in container_settings(service).kafka_bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            assert host in services, f"{name}: bootstrap host {host!r} is not a service"
            broker_env = {k: str(v) for k, v in service_env(services[host]).items()}
            listeners = kafka_listeners(broker_env["KAFKA_LISTENERS"])
            controllers = set(broker_env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(","))
            matching = [
                listener
                for listener, (_, listener_port) in listeners.items()
                if listener_port == int(port) and listener not in controllers
            ]
            assert matching, f"{name}: {host} has no broker listener on port {port}"
            # Clients reconnect to the advertised address, so it too must be
            # the service name rather than localhost.
            advertised = kafka_listeners(broker_env["KAFKA_ADVERTISED_LISTENERS"])
            assert advertised.get(matching[0]) == (host, int(port)), (
                f"{name}: listener {matching[0]} is advertised as {advertised.get(matching[0])}"
            )


def test_topics_are_created_before_any_worker_starts(
    services: dict[str, Service],
    segstream_services: dict[str, Service],
    workers: dict[str, Service],
    brokers: dict[str, Service],
) -> None:
    creators = [
        name
        for name, service in segstream_services.items()
        if effective_argv(service) == ["segstream", "topics", "create"]
    ]
    assert len(creators) == 1, creators
    creator = creators[0]
    for broker_name, broker in brokers.items():
        # Workers would otherwise race the creator and fail on missing topics.
        assert str(service_env(broker).get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")).lower() == "false"
        assert "healthcheck" in broker, broker_name
        assert services[creator]["depends_on"][broker_name]["condition"] == "service_healthy"
    for name, worker in workers.items():
        condition = worker["depends_on"][creator]["condition"]
        assert condition == "service_completed_successfully", name


# --- Workers --------------------------------------------------------------


def test_each_worker_serves_its_web_port_on_all_interfaces_and_publishes_it(
    workers: dict[str, Service],
) -> None:
    for name, worker in workers.items():
        settings = container_settings(worker)
        assert settings.web_host == "0.0.0.0", name  # noqa: S104 - must accept other containers
        assert settings.web_port in {target for _, target in port_mappings(worker)}, name
        healthcheck = " ".join(as_argv(worker.get("healthcheck", {}).get("test")))
        assert f":{settings.web_port}/" in healthcheck, f"{name}: {healthcheck!r}"


def test_published_host_ports_do_not_collide(services: dict[str, Service]) -> None:
    published = [
        port for service in services.values() for port, _ in port_mappings(service) if port
    ]
    assert published, "no service publishes a port"
    assert len(published) == len(set(published)), sorted(published)


def test_each_worker_advertises_its_own_service_name(workers: dict[str, Service]) -> None:
    for name, worker in workers.items():
        assert container_settings(worker).web_advertised_host == name


def test_each_worker_requires_a_bearer_token_taken_from_the_host(
    workers: dict[str, Service],
) -> None:
    for name, worker in workers.items():
        assert container_settings(worker).web_auth, name
        token = str(container_env(worker).get(f"{ENV_PREFIX}WEB_TOKEN", ""))
        # `${VAR:?message}`: Compose refuses to start without it, and the
        # secret itself never sits in the file.
        assert token.startswith(f"${{{ENV_PREFIX}WEB_TOKEN:?"), f"{name}: {token!r}"


def test_each_worker_keeps_its_tables_on_its_own_named_volume(
    compose: dict[str, Any], workers: dict[str, Service]
) -> None:
    declared = set(compose.get("volumes") or {})
    sources: list[str] = []
    for name, worker in workers.items():
        data_dir = str(container_settings(worker).data_dir)
        mounted = [source for source, target in volume_mounts(worker) if target == data_dir]
        assert len(mounted) == 1, f"{name}: {data_dir} is not a mounted volume"
        assert mounted[0] in declared, f"{name}: {mounted[0]} is not a declared named volume"
        sources.append(mounted[0])
    # Two workers opening one RocksDB directory fail on its lock.
    assert len(sources) == len(set(sources)), sources


# --- Image ----------------------------------------------------------------


def test_every_built_image_starts_segstream_once(services: dict[str, Service]) -> None:
    built = {name: service for name, service in services.items() if "build" in service}
    assert built, "no service is built from the repository"
    for name, service in built.items():
        dockerfile = service_dockerfile(service)
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        instructions = dockerfile_instructions(dockerfile)
        for keyword in ("CMD", "ENTRYPOINT"):
            arguments = dockerfile_last(instructions, keyword)
            # Shell form puts /bin/sh in front, which does not pass SIGTERM on,
            # so the worker would be killed without committing its offsets.
            assert arguments is None or exec_form(arguments) is not None, (
                f"{keyword} {arguments} is in shell form"
            )
        argv = effective_argv(service)
        assert argv[:1] == ["segstream"] and argv.count("segstream") == 1, f"{name}: {argv}"


def test_dockerfile_copies_existing_files_and_drops_root() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    copied: list[str] = []
    for name, arguments in instructions:
        if name not in ("COPY", "ADD"):
            continue
        tokens = [token for token in shlex.split(arguments) if not token.startswith("--")]
        copied.extend(tokens[:-1])
    missing = [source for source in copied if not list(ROOT.glob(source.rstrip("/")))]
    assert not missing, f"COPY sources missing from the build context: {missing}"
    assert {"pyproject.toml", "streams/"} <= set(copied), copied
    user = dockerfile_last(instructions, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0"), user


def test_image_declares_the_web_port_and_the_data_volume() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    env = dockerfile_env(instructions)
    fields = {settings_field(key): value for key, value in env.items()}
    settings = Settings(_env_file=None, **{k: v for k, v in fields.items() if k})
    exposed = {
        int(port.split("/")[0])
        for name, arguments in instructions
        if name == "EXPOSE"
        for port in arguments.split()
    }
    assert settings.web_port in exposed, exposed
    volumes: set[str] = set()
    for name, arguments in instructions:
        if name == "VOLUME":
            volumes.update(exec_form(arguments) or arguments.split())
    assert str(settings.data_dir) in volumes, volumes


# --- Prometheus -----------------------------------------------------------


def test_prometheus_scrapes_every_worker_on_its_web_port(
    services: dict[str, Service], workers: dict[str, Service]
) -> None:
    prometheus = services["prometheus"]
    config_path = host_path_mounted_at(prometheus, PROMETHEUS_CONFIG_TARGET)
    config = load_yaml(config_path)
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host in workers, f"scrape target {target} is not a worker service"
                assert int(port) == container_settings(workers[host]).web_port, target
                scraped.add(host)
    assert scraped == set(workers), f"workers not scraped: {set(workers) - scraped}"


def test_prometheus_finds_its_rule_files_inside_the_container(
    services: dict[str, Service],
) -> None:
    prometheus = services["prometheus"]
    config_path = host_path_mounted_at(prometheus, PROMETHEUS_CONFIG_TARGET)
    rule_files = load_yaml(config_path).get("rule_files") or []
    assert rule_files, "prometheus.yml loads no rule files"
    for rule_file in rule_files:
        # Relative rule paths resolve against the config file's directory.
        target = posixpath.join(posixpath.dirname(PROMETHEUS_CONFIG_TARGET), rule_file)
        rules = load_yaml(host_path_mounted_at(prometheus, target))
        assert isinstance(rules, dict) and isinstance(rules.get("groups"), list), rule_file


# --- Grafana --------------------------------------------------------------


def test_grafana_reads_prometheus_from_its_service(services: dict[str, Service]) -> None:
    provisioning = host_path_mounted_at(services["grafana"], GRAFANA_PROVISIONING_TARGET)
    files = sorted((provisioning / "datasources").glob("*.y*ml"))
    assert files, f"no data source files in {provisioning / 'datasources'}"
    datasources = [ds for path in files for ds in load_yaml(path)["datasources"]]
    prometheus_sources = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert prometheus_sources, datasources
    prometheus_ports = {target for _, target in port_mappings(services["prometheus"])}
    for datasource in prometheus_sources:
        address = datasource["url"].split("://", 1)[1].rstrip("/")
        host, _, port = address.rpartition(":")
        assert host == "prometheus" and int(port) in prometheus_ports, datasource["url"]


def test_grafana_dashboards_are_mounted_where_the_provider_looks_and_parse(
    services: dict[str, Service],
) -> None:
    grafana = services["grafana"]
    provisioning = host_path_mounted_at(grafana, GRAFANA_PROVISIONING_TARGET)
    files = sorted((provisioning / "dashboards").glob("*.y*ml"))
    assert files, f"no dashboard provider files in {provisioning / 'dashboards'}"
    datasource_uids = {
        ds.get("uid")
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in load_yaml(path)["datasources"]
    }
    providers = [provider for path in files for provider in load_yaml(path)["providers"]]
    assert providers
    dashboards_seen = 0
    for provider in providers:
        folder = host_path_mounted_at(grafana, provider["options"]["path"])
        for path in sorted(folder.glob("*.json")):
            dashboard = json.loads(path.read_text(encoding="utf-8"))
            assert str(dashboard.get("title", "")).strip(), f"{path.name} has no title"
            for panel in dashboard.get("panels", []):
                uid = (panel.get("datasource") or {}).get("uid")
                assert uid is None or uid in datasource_uids, f"{path.name}: {uid}"
            dashboards_seen += 1
    assert dashboards_seen, "no dashboard JSON where the providers look"
