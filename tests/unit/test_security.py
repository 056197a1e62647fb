"""Issue 8, security: Kafka TLS/SASL wiring into both clients, the web bind
address, and no personal data in metric labels or log lines."""

from __future__ import annotations

import ast
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.net.transport import KafkaSSLTransport
from prometheus_client.metrics import MetricWrapperBase

from streams import metrics
from streams.app import broker_credentials, create_app, faust_config, ssl_context
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CA_NAME = "segstream-test-ca"
CLIENT_NAME = "segstream-test-client"


# --- Throwaway PKI --------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(cwd: Path, name: str, extensions: str) -> None:
    """A key and a certificate signed by the test CA."""
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + extensions
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    cwd = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", f"/CN={CA_NAME}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip
    _leaf(cwd, "server", "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n")
    _leaf(cwd, CLIENT_NAME, "extendedKeyUsage=clientAuth\n")
    return cwd


def tls_settings(pki: Path, protocol: str) -> Settings:
    return Settings(
        _env_file=None,
        kafka_bootstrap="broker-1:9093,broker-2:9093",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-segstream",
        kafka_sasl_password="pw-not-logged",
        kafka_ssl_cafile=pki / "ca.pem",
        kafka_ssl_certfile=pki / f"{CLIENT_NAME}.pem",
        kafka_ssl_keyfile=pki / f"{CLIENT_NAME}.key",
    )


def mutual_tls_peer(pki: Path, client: ssl.SSLContext) -> str:
    """Handshake with a server that demands a client certificate from our CA;
    the common name of the client certificate it saw."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki / "server.pem", pki / "server.key")
    server.load_verify_locations(pki / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED
    seen: dict[str, Any] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    seen["cert"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                seen["error"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        port = listener.getsockname()[1]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(10)
    assert "error" not in seen, seen.get("error")
    subject = dict(item for rdn in seen["cert"]["subject"] for item in rdn)
    return str(subject["commonName"])


# --- Kafka security reaches Faust (aiokafka) and kafka-python ---------------


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_faust_gets_the_tls_context_and_sasl_credentials(pki: Path, protocol: str) -> None:
    settings = tls_settings(pki, protocol)
    credentials = faust_config(settings)["broker_credentials"]
    # What Faust's aiokafka consumer and producer are built with.
    auth = credentials_to_aiokafka_auth(create_app(settings).conf.broker_credentials)
    assert auth["security_protocol"] == protocol
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(i for rdn in c["subject"] for i in rdn) for c in context.get_ca_certs()] == [
        {"commonName": CA_NAME}
    ]
    if protocol == "SSL":
        assert isinstance(credentials, SSLCredentials)
        assert "sasl_mechanism" not in auth
    else:
        assert isinstance(credentials, SASLCredentials)
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "svc-segstream"
        assert auth["sasl_plain_password"] == "pw-not-logged"
    assert mutual_tls_peer(pki, context) == CLIENT_NAME


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_kafka_python_gets_the_same_tls_files_and_sasl_credentials(
    pki: Path, protocol: str
) -> None:
    settings = tls_settings(pki, protocol)
    config = settings.kafka_python_config()
    assert config["bootstrap_servers"] == ["broker-1:9093", "broker-2:9093"]
    assert config["security_protocol"] == protocol
    assert config["ssl_cafile"] == str(pki / "ca.pem")
    assert config["ssl_certfile"] == str(pki / f"{CLIENT_NAME}.pem")
    assert config["ssl_keyfile"] == str(pki / f"{CLIENT_NAME}.key")
    if protocol == "SASL_SSL":
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "svc-segstream"
        assert config["sasl_plain_password"] == "pw-not-logged"
    else:
        assert "sasl_mechanism" not in config
    # kafka-python rejects unknown keys; every client must accept every one.
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(config) <= set(client.DEFAULT_CONFIG), client.__name__
    # The context kafka-python builds from them (kafka-python 3.0 internals)
    # completes the same mutual-TLS handshake as Faust's.
    ssl_config = dict(KafkaSSLTransport.DEFAULT_CONFIG)
    ssl_config.update({k: v for k, v in config.items() if k in ssl_config})
    context = KafkaSSLTransport._build_ssl_context(ssl_config)
    assert mutual_tls_peer(pki, context) == CLIENT_NAME


def test_sasl_plaintext_carries_credentials_without_tls() -> None:
    settings = Settings(
        _env_file=None,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    assert ssl_context(settings) is None
    auth = credentials_to_aiokafka_auth(broker_credentials(settings))
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", "pw")
    config = settings.kafka_python_config()
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_cafile" not in config


class Recorder:
    """Stands in for a kafka-python client class; records its keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Recorder:
        self.calls.append(kwargs)
        return self

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None:
        pass


def test_every_kafka_python_client_is_built_from_kafka_python_config(
    pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka

    from streams import producer
    from streams.cli import admin
    from tests.conftest import read_topic

    settings = tls_settings(pki, "SASL_SSL")
    expected = settings.kafka_python_config()
    recorders = {"producer": Recorder(), "admin": Recorder(), "consumer": Recorder()}
    monkeypatch.setattr(producer, "KafkaProducer", recorders["producer"])
    monkeypatch.setattr(admin, "KafkaAdminClient", recorders["admin"])
    monkeypatch.setattr(kafka, "KafkaConsumer", recorders["consumer"])
    producer.make_producer(settings, linger_ms=20)
    admin.admin_client(settings)
    read_topic(settings, "any-topic", expected=0, timeout_s=0.1)
    for name, recorder in recorders.items():
        (kwargs,) = recorder.calls
        assert {k: kwargs.get(k) for k in expected} == expected, name


def test_no_other_module_builds_a_kafka_python_client() -> None:
    # A client built anywhere else could miss the security settings above.
    constructor = re.compile(r"\bKafka(Producer|Consumer|AdminClient)\(")
    builders = {
        str(path.relative_to(ROOT))
        for package in ("streams", "models", "schemas", "bench", "tests")
        for path in (ROOT / package).rglob("*.py")
        if constructor.search(path.read_text(encoding="utf-8"))
    }
    # These tests talk to the plaintext loopback broker the test session
    # starts, below any segstream setting (the local broker itself; raw
    # changelog records of an old worker), so they build bare clients on purpose.
    assert builders == {
        "streams/producer.py",
        "streams/cli/admin.py",
        "tests/conftest.py",
        "tests/integration/test_local_broker.py",
        "tests/integration/test_upgrade.py",
        "tests/fixtures/capture_changelog.py",
    }


# --- Web server bind address --------------------------------------------


def test_the_web_server_binds_to_loopback_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGSTREAM_WEB_HOST", raising=False)
    settings = Settings(_env_file=None)
    assert settings.web_host == "127.0.0.1"
    assert faust_config(settings)["web_bind"] == "127.0.0.1"
    assert create_app(settings).conf.web_bind == "127.0.0.1"
    monkeypatch.setenv("SEGSTREAM_WEB_HOST", "0.0.0.0")  # noqa: S104 - the test of it
    everywhere = Settings(_env_file=None)
    assert faust_config(everywhere)["web_bind"] == "0.0.0.0"  # noqa: S104
    # Other workers still reach it by its advertised name, not the bind address.
    assert (
        faust_config(everywhere.model_copy(update={"web_advertised_host": "w1"}))["web_host"]
        == "w1"
    )


# --- No personal data in metric labels or log lines -------------------------

PERSONAL = re.compile(r"customer|anonymous|user|email|(^|_)ids?$", re.I)


def test_metric_labels_name_no_customer_or_other_personal_identifier() -> None:
    import streams.worker  # noqa: F401 - registers every worker module's metrics

    collectors = [
        c for c in metrics.registry._collector_to_names if isinstance(c, MetricWrapperBase)
    ]
    assert len(collectors) >= len(
        [c for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)]
    )
    for collector in collectors:
        labels = collector._labelnames
        assert not [label for label in labels if PERSONAL.search(label)], (
            f"{collector._name}: {labels}"
        )


LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
LOGGERS = {"log", "logger", "logging"}


def _mentions_personal_data(node: ast.AST) -> list[str]:
    found = []
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            name = part.id
        elif isinstance(part, ast.Attribute):
            name = part.attr
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            name = part.value
        else:
            continue
        if re.search(r"customer|anonymous|email", name, re.I):
            found.append(name)
    return found


def test_log_calls_carry_no_customer_or_anonymous_ids() -> None:
    offenders = []
    for package in ("streams", "models", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for call in ast.walk(tree):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in LOG_METHODS
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id in LOGGERS
                ):
                    continue
                for argument in [*call.args, *(k.value for k in call.keywords)]:
                    for name in _mentions_personal_data(argument):
                        offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert not offenders, offenders


def test_the_snapshot_follower_gets_the_same_kafka_security_settings() -> None:
    from pydantic import SecretStr

    from streams.app import aiokafka_security

    plain = Settings(_env_file=None)
    assert aiokafka_security(plain) == {"security_protocol": "PLAINTEXT"}
    sasl = Settings(
        _env_file=None,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("pw"),
    )
    assert aiokafka_security(sasl) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }


# --- No code from the wire: model snapshots and secret keys -----------------

SNAPSHOT_KEY = b"the-deployment-key"


class Calls:
    """Pickles as ``fn(*args)``: an attacker's ``__reduce__``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self, *args: Any) -> Any:
        # Only so the pickler accepts a Calls as the callable of another.
        raise NotImplementedError


def attribute(obj: Any, name: str) -> Calls:
    return Calls(getattr, obj, name)


def exploits(marker_dir: Path) -> dict[str, Any]:
    """Objects whose unpickling writes the file ``marker_dir / name``, one per route to code."""
    from models.training import ModelBundle

    def marker(name: str) -> str:
        return str(marker_dir / name)

    # No forbidden name at all: getattr from a class we do allow, through a
    # function's globals to the builtins and exec.
    builtins_of_models = Calls(
        attribute(attribute(attribute(ModelBundle, "__init__"), "__globals__"), "get"),
        "__builtins__",
    )
    exec_via_getattr = Calls(attribute(builtins_of_models, "get"), "exec")
    return {
        "os.system": Calls(os.system, f"id > {marker('os.system')}"),
        "subprocess": Calls(subprocess.check_call, ["touch", marker("subprocess")]),
        "exec": Calls(exec, f"open({marker('exec')!r}, 'w').close()"),
        "eval": Calls(eval, f"__import__('os').system('touch {marker('eval')}')"),
        "getattr": Calls(exec_via_getattr, f"open({marker('getattr')!r}, 'w').close()"),
    }


def malicious_snapshot(payload: Any, key: bytes, version: int = 7) -> bytes:
    """A genuine-looking bundle, correctly signed with ``key``, carrying ``payload``."""
    from models.training import ModelBundle, ModelConfig, encode_snapshot

    bundle = ModelBundle(ModelConfig())
    bundle.version = version
    bundle.created_ms = payload
    return encode_snapshot(bundle, key)


@pytest.mark.parametrize("route", ["os.system", "subprocess", "exec", "eval", "getattr"])
def test_a_correctly_signed_snapshot_that_runs_code_is_refused_and_nothing_runs(
    tmp_path: Path, route: str
) -> None:
    import pickle

    from models.training import SNAPSHOT_MAGIC, SnapshotError, decode_snapshot

    data = malicious_snapshot(exploits(tmp_path)[route], SNAPSHOT_KEY)
    with pytest.raises(SnapshotError, match="model snapshot"):
        decode_snapshot(data, SNAPSHOT_KEY)
    assert not (tmp_path / route).exists()
    # The same bytes through a plain unpickler do run the command: the
    # exploit is real, and the test would catch the old loader.
    pickle.loads(data[len(SNAPSHOT_MAGIC) + 32 :])  # noqa: S301 - proving the exploit
    assert (tmp_path / route).exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("posix", "system"),
        ("os", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "__import__"),
        ("builtins", "open"),
        ("importlib", "import_module"),
        ("sys", "modules"),
        ("pickle", "loads"),
        # Functions and imported names of allowed modules.
        ("models.simulator", "write_outputs"),  # a function that writes files
        ("models.simulator", "Path"),  # pathlib.Path, imported there
        ("river.cluster.k_means", "functools"),  # a module, imported there
        ("river.utils.pandas", "importlib"),
        # Dotted and dunder paths from an allowed class.
        ("models.training", "ModelBundle.__init__"),
        ("models.training", "__builtins__"),
        # River outside the model packages: Cache reads and writes pickles.
        ("river.stream.cache", "Cache"),
        ("river.datasets.base", "RemoteDataset"),
        ("no.such.module", "Thing"),
    ],
)
def test_the_snapshot_loader_resolves_no_name_outside_the_bundle_allow_list(
    module: str, name: str
) -> None:
    from models.training import SnapshotError, allowed_global

    with pytest.raises(SnapshotError, match="not part of a model bundle"):
        allowed_global(module, name)


def test_a_snapshot_cannot_change_a_class_for_the_whole_worker() -> None:
    """BUILD on a class would set its attributes (``Counter.update = float``)."""
    from collections import Counter

    from models.training import SnapshotError, decode_snapshot

    update = Counter.update
    payload = (
        b"\x80\x04"
        b"ccollections\nCounter\n"  # the class itself
        b"N}X\x06\x00\x00\x00updatecbuiltins\nfloat\ns\x86"  # (None, {"update": float})
        b"b."  # BUILD: setattr(Counter, "update", float)
    )
    data = signed(payload)
    with pytest.raises(SnapshotError, match="attributes of a class"):
        decode_snapshot(data, SNAPSHOT_KEY)
    assert Counter.update is update


def signed(payload: bytes) -> bytes:
    """``payload`` framed and signed as a snapshot, whatever it holds."""
    import hashlib
    import hmac

    from models.training import SNAPSHOT_MAGIC

    return SNAPSHOT_MAGIC + hmac.new(SNAPSHOT_KEY, payload, hashlib.sha256).digest() + payload


def test_a_trained_bundle_round_trips_through_the_restricted_loader() -> None:
    import random

    from models.training import decode_snapshot, encode_snapshot
    from tests.unit.test_model_contracts import label, train_bundle, vectors

    bundle = train_bundle(vectors(21, 600))
    rng = random.Random(4)
    for i, x in enumerate(vectors(22, 1500)):  # fills the rolling quality windows
        y = label(x) if rng.random() < 0.8 else 1 - label(x)
        bundle.learn(
            {"example_id": f"q{i}", "kind": "churn", "x": x, "y": y, "p": rng.random(),
             "source": rng.choice(["prior", "model"])}
        )  # fmt: skip
    description = bundle.describe()
    assert description["clusters_ready"] and description["churn"]["source"] in ("model", "bgnbd")
    assert description["churn"]["quality"]["roc_auc"] is not None

    loaded = decode_snapshot(encode_snapshot(bundle, SNAPSHOT_KEY), SNAPSHOT_KEY)

    assert loaded.describe() == description
    probes = vectors(23, 50)
    assert [loaded.score(x) for x in probes] == [bundle.score(x) for x in probes]
    # It keeps learning exactly as the original, River internals included
    # (KMeans draws new coordinates from its pickled random generator).
    for model in (bundle, loaded):
        for i, x in enumerate(vectors(24, 200)):
            model.learn({"example_id": f"n{i}", "kind": "cluster", "x": x})
            model.learn(
                {"example_id": f"m{i}", "kind": "churn", "x": x, "y": label(x), "p": 0.5,
                 "source": "model"}
            )  # fmt: skip
    assert loaded.describe() == bundle.describe()
    assert [loaded.score(x) for x in probes] == [bundle.score(x) for x in probes]


def test_a_signed_snapshot_of_something_else_than_a_bundle_is_refused() -> None:
    import pickle

    from models.training import SnapshotError, decode_snapshot

    with pytest.raises(SnapshotError, match="not a ModelBundle"):
        decode_snapshot(signed(pickle.dumps({"version": 99})), SNAPSHOT_KEY)
    with pytest.raises(SnapshotError, match="unloadable"):
        decode_snapshot(signed(b"\x80\x04\x95"), SNAPSHOT_KEY)  # truncated


def test_a_worker_refuses_placeholder_secret_keys_and_names_each() -> None:
    from schemas.errors import ConfigError
    from streams.settings import check_secrets, placeholder_secrets, throwaway_secrets

    real = {field.lower(): value for field, value in throwaway_secrets().items()}
    defaults = Settings(_env_file=None, model_snapshot_key="change-me", audit_hash_key="change-me")
    with pytest.raises(ConfigError) as raised:
        check_secrets(defaults)
    message = str(raised.value)
    assert "SEGSTREAM_MODEL_SNAPSHOT_KEY" in message and "SEGSTREAM_AUDIT_HASH_KEY" in message
    assert "token_urlsafe" in message  # says how to make one

    for field in ("model_snapshot_key", "audit_hash_key"):
        for placeholder in ("change-me", "", "   "):
            settings = Settings(_env_file=None, **{**real, field: placeholder})
            assert placeholder_secrets(settings) == [f"SEGSTREAM_{field.upper()}"]
            with pytest.raises(ConfigError, match=f"SEGSTREAM_{field.upper()}"):
                check_secrets(settings)

    check_secrets(Settings(_env_file=None, **real))
    assert throwaway_secrets() != throwaway_secrets()


def test_compose_takes_every_secret_key_from_the_host() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if service.get("command") != ["segstream", "worker"]:
            continue
        env = service["environment"]
        for variable in ("SEGSTREAM_MODEL_SNAPSHOT_KEY", "SEGSTREAM_AUDIT_HASH_KEY"):
            # `${VAR:?message}`: Compose refuses to start without it.
            assert str(env.get(variable, "")).startswith(f"${{{variable}:?"), (name, variable)
