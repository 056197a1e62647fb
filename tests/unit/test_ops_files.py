"""The operations files agree with the code: alerts, dashboard, Kubernetes, docs.

No Prometheus, Grafana or Kubernetes runs where the tests run, so each file
is read the way its tool would read it and compared with what a worker
really exposes and reads: every metric a PromQL expression names must be in
the worker's registry (or Faust's sensor, or Prometheus's own ``up``), every
``SEGSTREAM_*`` variable must be a field of :class:`Settings`. When
``promtool`` is on ``PATH`` (or named by ``$PROMTOOL``) the rules and the
Prometheus configuration are also checked by Prometheus's own parser, and
``ops/prometheus/alerts_test.yml`` is run against the rules.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streams import metrics as worker_metrics
from streams.cli import config_reference
from streams.settings import Settings
from tests.unit.test_deployment_files import ENV_PREFIX, load_yaml, settings_field

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST_FILE = ROOT / "ops" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
DASHBOARD_DIR = ROOT / "ops" / "grafana" / "dashboards"
K8S_DIR = ROOT / "ops" / "k8s"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
BENCH_100K = ROOT / "bench" / "results" / "pipeline_100k.json"
BENCH_MODELS_100K = ROOT / "bench" / "results" / "million.json"  # full pipeline, 100k customers
BENCH_MODELS_1M = ROOT / "bench" / "results" / "million_1m.json"  # full pipeline, 1M customers
SCRAPE_JOB = "segstream"
SEVERITIES = {"critical", "warning", "info"}
PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


# --- What a worker exposes --------------------------------------------------


def sample_names(family: Any) -> set[str]:
    """The series names a metric family is scraped as, labelled children or not."""
    name = family.name
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }.get(family.type, ("",))
    return {name + suffix for suffix in suffixes}


def exposed_metric_names() -> set[str]:
    """Every series name a worker's ``/metrics`` can hold, plus Prometheus's ``up``."""
    faust_registry = CollectorRegistry()
    # The same call streams.app makes, in a fresh registry.
    FaustMetrics.create(faust_registry, "segstream_faust")
    names = {"up"}
    for registry in (worker_metrics.registry, faust_registry):
        for family in registry.collect():
            names |= sample_names(family)
    return names


# --- Reading PromQL ---------------------------------------------------------

PROMQL_FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv double_exponential_smoothing exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase info irate label_join label_replace
    last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin
    sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year start end
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio
    """.split()
)
PROMQL_KEYWORDS = frozenset(
    "and or unless atan2 bool offset by without on ignoring group_left group_right "
    "inf nan Inf NaN".split()
)
# Grafana's template-variable query functions, valid only in `templating`.
GRAFANA_FUNCTIONS = frozenset({"label_values", "label_names", "metrics", "query_result"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NUMBER_OR_DURATION = re.compile(r"(?<![\w:])\d[\w.]*")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def without_strings(expr: str) -> str:
    """The expression with every string literal emptied (``"a{b"`` -> ``""``)."""
    stripped = _STRING.sub('""', expr)
    assert not re.search(r"[\"'`]", stripped.replace('""', "")), f"unterminated string: {expr}"
    return stripped


def brackets_balanced(expr: str) -> bool:
    """Whether ``()``, ``[]`` and ``{}`` nest properly outside strings.

    >>> brackets_balanced('sum(rate(x{a="(("}[5m]))'), brackets_balanced("sum(rate(x[5m])")
    (True, False)
    """
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in without_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


def promql_names(
    expr: str, functions: frozenset[str] = PROMQL_FUNCTIONS
) -> tuple[set[str], set[str]]:
    """``(metric names, unknown functions)`` an expression refers to.

    Label names and values, ranges, grouping label lists, numbers, durations
    and Grafana variables are dropped first; an identifier followed by ``(``
    is a function call, a keyword is skipped, anything else is a metric.
    (``start``/``end`` are functions only after ``@``; as metric names they
    would be read as unknown functions, which no segstream metric is.)

    >>> promql_names('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y"}[$i])))')
    ({'a_bucket'}, set())
    >>> names, unknown = promql_names("sum(rat(b[5m])) by (job) > 0 and on (job) up == 0")
    >>> sorted(names), sorted(unknown)
    (['b', 'up'], ['rat'])
    """
    text = _GRAFANA_VARIABLE.sub(" ", without_strings(expr))
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER_OR_DURATION.sub(" ", text)
    names: set[str] = set()
    unknown: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group()
        if token in PROMQL_KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            if token not in functions:
                unknown.add(token)
        else:
            names.add(token)
    return names, unknown


def check_expression(
    expr: str, where: str, exposed: set[str], functions: frozenset[str]
) -> set[str]:
    """Assert the expression is well formed and names only exposed metrics."""
    assert isinstance(expr, str) and expr.strip(), f"{where}: empty expression"
    assert brackets_balanced(expr), f"{where}: unbalanced brackets in {expr!r}"
    names, unknown = promql_names(expr, functions)
    assert not unknown, f"{where}: unknown functions {sorted(unknown)} in {expr!r}"
    assert names, f"{where}: names no metric: {expr!r}"
    missing = names - exposed
    assert not missing, f"{where}: metrics no worker exposes: {sorted(missing)}"
    return names


# --- Alert rules ------------------------------------------------------------

RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return exposed_metric_names()


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    loaded = load_yaml(ALERTS_FILE)
    assert isinstance(loaded, dict) and set(loaded) == {"groups"}, "alerts.yml: groups only"
    groups = loaded["groups"]
    assert isinstance(groups, list) and groups, "alerts.yml defines no groups"
    group_names = [group.get("name") for group in groups]
    assert all(isinstance(name, str) and name for name in group_names), group_names
    assert len(group_names) == len(set(group_names)), f"duplicate groups: {group_names}"
    rules: list[dict[str, Any]] = []
    for group in groups:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group["name"]
        assert isinstance(group.get("rules"), list) and group["rules"], group["name"]
        rules.extend(group["rules"])
    return rules


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not (match := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            continue
        text = re.sub(r"[`*_]", "", match.group(1)).strip().lower()
        anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_alert_rules_are_well_formed(alert_rules: list[dict[str, Any]]) -> None:
    names = [rule.get("alert") for rule in alert_rules]
    assert all(isinstance(name, str) and re.match(r"^[A-Z][A-Za-z0-9]*$", name) for name in names)
    assert len(names) == len(set(names)), f"duplicate alerts: {names}"
    for rule in alert_rules:
        name = rule["alert"]
        assert set(rule) <= RULE_KEYS, f"{name}: unknown keys {set(rule) - RULE_KEYS}"
        assert "for" not in rule or DURATION.match(str(rule["for"])), f"{name}: for {rule['for']}"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"
        for key, text in annotations.items():
            # Alertmanager templates: every {{ has its }}.
            assert str(text).count("{{") == str(text).count("}}"), f"{name}: {key} template"


def test_alert_expressions_name_only_exposed_metrics(
    alert_rules: list[dict[str, Any]], exposed: set[str]
) -> None:
    for rule in alert_rules:
        check_expression(rule["expr"], rule["alert"], exposed, PROMQL_FUNCTIONS)


def test_alerts_cover_the_failure_modes_operators_page_on(
    alert_rules: list[dict[str, Any]],
) -> None:
    referenced = set().union(*(promql_names(rule["expr"])[0] for rule in alert_rules))
    for metric in (
        "up",
        "segstream_consumer_lag_messages",
        "segstream_dead_letters_total",
        "segstream_events_consumed_total",
        "segstream_churn_roc_auc",
        "segstream_model_snapshots_rejected_total",
    ):
        assert metric in referenced, f"no alert watches {metric}"


def test_alerts_select_the_scrape_job_prometheus_uses(alert_rules: list[dict[str, Any]]) -> None:
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert SCRAPE_JOB in jobs, jobs
    for rule in alert_rules:
        selected = set(re.findall(r'job\s*=\s*"([^"]*)"', rule["expr"]))
        assert selected <= {SCRAPE_JOB}, f"{rule['alert']}: selects jobs {selected}"


def test_every_alert_links_to_its_runbook_section(alert_rules: list[dict[str, Any]]) -> None:
    anchors = github_anchors(OPERATIONS_DOC.read_text(encoding="utf-8"))
    for rule in alert_rules:
        url = str(rule["annotations"]["runbook_url"])
        path, _, anchor = url.partition("#")
        assert path.endswith("docs/operations.md"), f"{rule['alert']}: {url}"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/operations.md"


def test_every_alert_has_a_promtool_unit_test(
    alert_rules: list[dict[str, Any]], exposed: set[str]
) -> None:
    # alerts_test.yml runs only where promtool is installed; keep it in step
    # with the rules everywhere else.
    tests = load_yaml(ALERTS_TEST_FILE)
    assert tests["rule_files"] == [ALERTS_FILE.name]
    tested = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
    }
    defined = {rule["alert"] for rule in alert_rules}
    assert tested == defined, f"untested: {defined - tested}; unknown: {tested - defined}"
    for test in tests["tests"]:
        for series in test.get("input_series", []):
            metric = series["series"].split("{")[0]
            assert metric in exposed, f"alerts_test.yml: {metric} is not exposed"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_prometheus_config() -> None:
    # Also loads the rule files it names, relative to the config.
    result = _promtool("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_as_their_unit_tests_expect() -> None:
    result = _promtool("test", "rules", str(ALERTS_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana dashboards -----------------------------------------------------


def dashboards() -> list[Path]:
    found = sorted(DASHBOARD_DIR.glob("*.json"))
    assert found, f"no dashboards in {DASHBOARD_DIR}"
    return found


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # A collapsed row keeps its panels inside it.
        yield from all_panels(panel.get("panels", []))


@pytest.mark.parametrize("path", dashboards(), ids=lambda path: path.name)
def test_dashboard_panels_query_only_exposed_metrics(path: Path, exposed: set[str]) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    panels = list(all_panels(dashboard.get("panels", [])))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    referenced: set[str] = set()
    for panel in panels:
        where = f"{path.name}: panel {panel.get('title')!r}"
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{where}: off the grid"
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"{where}: no queries"
        for target in panel["targets"]:
            referenced |= check_expression(target["expr"], where, exposed, PROMQL_FUNCTIONS)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(selector, label): the last argument is a label name.
            text = re.sub(r"^(label_values\(.*),\s*\w+\s*\)\s*$", r"\1)", text)
            functions = PROMQL_FUNCTIONS | GRAFANA_FUNCTIONS
            check_expression(text, f"{path.name}: variable {variable['name']}", exposed, functions)
    assert referenced, f"{path.name}: no panel queries a metric"


def test_dashboard_shows_every_part_of_the_pipeline() -> None:
    referenced: set[str] = set()
    for path in dashboards():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in all_panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                referenced |= promql_names(target["expr"])[0]
    for metric in (
        "segstream_events_consumed_total",
        "segstream_consumer_lag_messages",
        "segstream_event_lag_seconds_bucket",
        "segstream_segment_change_lag_seconds_bucket",
        "segstream_segment_population",
        "segstream_segment_changes_total",
        "segstream_triggers_total",
        "segstream_churn_roc_auc",
        "segstream_churn_log_loss",
        "segstream_model_version",
        "segstream_cluster_size",
        "segstream_churn_labels",
        "segstream_dead_letters_total",
        "segstream_faust_total_rebalances",
    ):
        assert metric in referenced, f"no dashboard panel shows {metric}"


# --- Kubernetes manifests ---------------------------------------------------

POD_NAME = "segstream-worker-0"
POD_NAMESPACE = "segstream"


@pytest.fixture(autouse=True)
def _no_host_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pods do not inherit the developer's SEGSTREAM_* variables.
    for variable in list(os.environ):
        if variable.startswith(ENV_PREFIX):
            monkeypatch.delenv(variable)


@pytest.fixture(scope="module")
def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with path.open(encoding="utf-8") as handle:
            for document in yaml.safe_load_all(handle):
                if document is None:
                    continue
                assert {"apiVersion", "kind", "metadata"} <= set(document), path.name
                key = (document["kind"], document["metadata"]["name"])
                assert key not in objects, f"{path.name}: {key} defined twice"
                objects[key] = document
    assert objects, f"no manifests in {K8S_DIR}"
    return objects


def only(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for (found_kind, _), obj in objects.items() if found_kind == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def config_maps(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        name: dict(obj.get("data") or {})
        for (kind, name), obj in objects.items()
        if kind == "ConfigMap"
    }


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def worker_container(workload: dict[str, Any]) -> dict[str, Any]:
    main = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    assert len(main) == 1, "the StatefulSet has no container named worker"
    return main[0]


def container_env(
    container: dict[str, Any], maps: dict[str, dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """``{variable: env entry}`` as the container sees it: envFrom, then env on top."""
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"{container['name']}: no ConfigMap {name}"
        env.update({key: {"name": key, "value": value} for key, value in maps[name].items()})
    for entry in container.get("env", []):
        env[entry["name"]] = entry
    return env


def resolved_value(entry: dict[str, Any], env: dict[str, dict[str, Any]]) -> str:
    """The value a process sees, with ``$(VAR)`` and the downward API resolved for one pod."""
    if "value" in entry:
        return re.sub(
            r"\$\((\w+)\)", lambda match: resolved_value(env[match.group(1)], env), entry["value"]
        )
    field_path = entry["valueFrom"].get("fieldRef", {}).get("fieldPath")
    if field_path == "metadata.name":
        return POD_NAME
    if field_path == "metadata.namespace":
        return POD_NAMESPACE
    return "from-a-secret"


def pod_settings(container: dict[str, Any], maps: dict[str, dict[str, str]]) -> Settings:
    env = container_env(container, maps)
    fields = {
        field: resolved_value(entry, env)
        for variable, entry in env.items()
        if (field := settings_field(variable)) is not None
    }
    return Settings(_env_file=None, **fields)


def test_kustomization_lists_existing_manifests() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S_DIR / resource).is_file(), f"kustomization.yaml: no {resource}"


def test_every_segstream_variable_in_the_manifests_is_a_settings_field(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    maps = config_maps(k8s_objects)
    unknown: list[str] = []
    for name, data in maps.items():
        for variable, value in data.items():
            field = settings_field(variable)
            if field is None:
                continue
            if field not in Settings.model_fields:
                unknown.append(f"ConfigMap {name}: {variable}")
                continue
            # ConfigMap data must be strings; YAML would turn `true` into a bool.
            assert isinstance(value, str), f"ConfigMap {name}: quote {variable}"
            Settings(_env_file=None, **{field: value})
    workload = only(k8s_objects, "StatefulSet")
    for container in containers(workload):
        env = container_env(container, maps)
        for entry in container.get("env", []):
            field = settings_field(entry["name"])
            if field is None:
                continue
            if field not in Settings.model_fields:
                unknown.append(f"{container['name']}: {entry['name']}")
                continue
            assert "value" not in entry or isinstance(entry["value"], str), entry["name"]
            Settings(_env_file=None, **{field: resolved_value(entry, env)})
        pod_settings(container, maps)  # the whole environment loads together
    assert not unknown, f"not fields of Settings: {unknown}"


def test_secrets_come_from_a_secret_never_from_the_manifests(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    secret_fields = {
        name
        for name, info in Settings.model_fields.items()
        if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))
    }
    maps = config_maps(k8s_objects)
    for data in maps.values():
        leaked = {settings_field(variable) for variable in data} & secret_fields
        assert not leaked, f"secrets in a ConfigMap: {leaked}"
    worker = worker_container(only(k8s_objects, "StatefulSet"))
    env = container_env(worker, maps)
    for field in secret_fields:
        entry = env.get(ENV_PREFIX + field.upper())
        if entry is not None:
            assert "secretKeyRef" in entry.get("valueFrom", {}), f"{field} must come from a Secret"
    # The placeholders of these keys must never reach a deployment.
    for field in ("web_token", "model_snapshot_key", "audit_hash_key"):
        entry = env.get(ENV_PREFIX + field.upper())
        assert entry is not None, f"the worker does not set {ENV_PREFIX}{field.upper()}"


def test_workers_advertise_their_stable_name_in_the_headless_service(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    workload = only(k8s_objects, "StatefulSet")
    service_name = workload["spec"]["serviceName"]
    headless = k8s_objects[("Service", service_name)]
    assert headless["spec"].get("clusterIP") == "None", "the StatefulSet's service is not headless"
    # Workers forward to each other also while not ready (every rebalance).
    assert headless["spec"].get("publishNotReadyAddresses") is True
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    worker = worker_container(workload)
    env = container_env(worker, config_maps(k8s_objects))
    # `$(POD_NAME)` expands only if POD_NAME is defined before it.
    order = [entry["name"] for entry in worker.get("env", [])]
    advertised = f"{ENV_PREFIX}WEB_ADVERTISED_HOST"
    for dependency in re.findall(r"\$\((\w+)\)", env[advertised]["value"]):
        assert order.index(dependency) < order.index(advertised), dependency
    settings = pod_settings(worker, config_maps(k8s_objects))
    assert settings.web_advertised_host == f"{POD_NAME}.{service_name}.{POD_NAMESPACE}.svc"
    assert settings.web_host == "0.0.0.0"  # noqa: S104 - must accept other pods
    assert settings.web_auth
    assert settings.web_token is not None


def test_workers_serve_probes_metrics_and_api_on_their_web_port(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    maps = config_maps(k8s_objects)
    workload = only(k8s_objects, "StatefulSet")
    worker = worker_container(workload)
    settings = pod_settings(worker, maps)
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert ports.get("web") == settings.web_port, ports

    def probe_target(probe: str) -> tuple[str, int]:
        http = worker[probe]["httpGet"]
        port = http["port"]
        return http["path"], ports[port] if isinstance(port, str) else int(port)

    assert probe_target("readinessProbe") == ("/readyz", settings.web_port)
    assert probe_target("livenessProbe") == ("/healthz", settings.web_port)
    if "startupProbe" in worker:
        assert probe_target("startupProbe") == ("/healthz", settings.web_port)
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.web_port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    for (kind, name), obj in k8s_objects.items():
        if kind == "Service":
            assert obj["spec"]["selector"].items() <= pod_labels.items(), name
            for port in obj["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                assert (ports[target] if isinstance(target, str) else target) == settings.web_port
        if kind == "PodMonitor":
            assert obj["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
            for endpoint in obj["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports and endpoint.get("path") == "/metrics"
                jobs = [
                    relabel.get("replacement")
                    for relabel in endpoint.get("relabelings", [])
                    if relabel.get("targetLabel") == "job"
                ]
                assert jobs == [SCRAPE_JOB], f"PodMonitor {name} must set job={SCRAPE_JOB}"
        if kind == "PodDisruptionBudget":
            assert obj["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_workers_keep_their_tables_on_their_own_persistent_volume(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    workload = only(k8s_objects, "StatefulSet")
    worker = worker_container(workload)
    settings = pod_settings(worker, config_maps(k8s_objects))
    assert settings.store == "rocksdb"
    claims = {claim["metadata"]["name"] for claim in workload["spec"]["volumeClaimTemplates"]}
    mounted = {
        m["name"] for m in worker["volumeMounts"] if m["mountPath"] == str(settings.data_dir)
    }
    assert mounted and mounted <= claims, f"{settings.data_dir} is not on a volumeClaimTemplate"


QUANTITY = re.compile(r"^(?P<number>[0-9.]+)(?P<unit>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
UNITS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number (``768Mi`` -> bytes, ``100m`` -> 0.1)."""
    match = QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match["number"]) * UNITS[match["unit"]]


def test_worker_resources_cover_the_measured_peak_memory(
    k8s_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    workload = only(k8s_objects, "StatefulSet")
    for container in containers(workload):
        resources = container["resources"]
        for resource, request in resources["requests"].items():
            limit = resources.get("limits", {}).get(resource)
            assert limit is None or quantity(request) <= quantity(limit), container["name"]
    # Every result is committed: state alone, and the full pipeline with
    # models at 100,000 and 1,000,000 customers.
    state_only = json.loads(BENCH_100K.read_text(encoding="utf-8"))
    full_runs = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in (BENCH_MODELS_100K, BENCH_MODELS_1M)
    ]
    peak_mb = max(
        *(mode["peak_rss_mb"] for mode in state_only["modes"].values()),
        *(
            phase["peak_rss_mb"]
            for full in full_runs
            for phase in full.values()
            if isinstance(phase, dict) and phase.get("peak_rss_mb") is not None
        ),
    )
    limit = quantity(worker_container(workload)["resources"]["limits"]["memory"])
    assert limit >= 1.25 * peak_mb * 1e6, f"memory limit {limit / 1e6:.0f} MB < 1.25 × {peak_mb}"


# --- Documentation ----------------------------------------------------------


def test_configuration_reference_is_up_to_date() -> None:
    assert CONFIGURATION_DOC.read_text(encoding="utf-8") == config_reference.render(), (
        f"docs/configuration.md is stale: run `{config_reference.GENERATOR}`"
    )


def test_configuration_reference_documents_every_setting() -> None:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    for field in Settings.model_fields:
        assert text.count(f"| `{config_reference.env_var(field)}` |") == 1, field


def test_configuration_reference_examples() -> None:
    # streams/ is outside pytest's doctest paths; run this module's examples here.
    failed, attempted = doctest.testmod(config_reference)
    assert attempted and not failed


def test_operations_guide_links_and_anchors_resolve() -> None:
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (OPERATIONS_DOC.parent / target).resolve().exists(), f"broken link: {target}"
    anchors = github_anchors(text)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"no section #{anchor} in docs/operations.md"
    assert "configuration.md" in text
