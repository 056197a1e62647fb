"""A real single-node Apache Kafka broker on loopback, without Docker.

The jars come from Maven Central through ``ops/kafka/pom.xml`` and are cached
under ``~/.cache/segstream/kafka-<version>``. A broker gets a fresh KRaft data
directory, free ports and a small heap; it is stopped with SIGTERM, then
SIGKILL after a timeout. The CLI (``segstream kafka start|stop|status``), the
test fixtures, the demo and the benchmarks all use this module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import LocalKafkaError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_OPS_DIR = REPO_ROOT / "ops" / "kafka"
POM = KAFKA_OPS_DIR / "pom.xml"
TEMPLATE = KAFKA_OPS_DIR / "server.properties.template"
LOG4J_CONFIG = KAFKA_OPS_DIR / "log4j2.yaml"
STATE_FILE = "broker.json"

MISSING_TOOLS_HINT = (
    "{what} was not found; the local Kafka broker needs Java 17+ and Maven "
    "(or run everything in containers with `docker compose up`)."
)


def kafka_version() -> str:
    """The Kafka version ``ops/kafka/pom.xml`` pins."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:
        raise LocalKafkaError(f"no <kafka.version> property in {POM}")
    return match.group(1)


def jar_dir() -> Path:
    """Where the broker's jars are cached between runs (and clones)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "segstream" / f"kafka-{kafka_version()}"


def check_tools() -> None:
    """Raise a plain-sentence error when Java 17+ or Maven is missing."""
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(MISSING_TOOLS_HINT.format(what="Java"))
    out = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [java, "-version"], capture_output=True, text=True, check=False
    )
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if match is None or int(match.group(1)) < 17:
        raise LocalKafkaError(
            MISSING_TOOLS_HINT.format(what="Java 17 or newer")
            + f" Found: {(out.stderr or out.stdout).splitlines()[:1]}"
        )


def ensure_jars() -> Path:
    """Fetch the broker jars with Maven unless they are cached already."""
    target = jar_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    check_tools()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(MISSING_TOOLS_HINT.format(what="Maven (mvn)"))
    target.mkdir(parents=True, exist_ok=True)
    log.info("fetching kafka jars version=%s into=%s", kafka_version(), target)
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LocalKafkaError(
            f"mvn could not fetch the Kafka jars (exit {result.returncode}): "
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    marker.write_text(kafka_version())
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def _cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's ``Uuid.randomUuid`` makes them.

    One in 64 url-safe encodings starts with ``-``, which the storage tool's
    argument parser takes for an option; Kafka redraws those, and so do we.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class LocalKafka:
    """One local KRaft broker+controller process.

    Parameters
    ----------
    home
        Data directory of this broker: KRaft logs, server.log, broker.json.
    broker_port, controller_port
        Ports on 127.0.0.1; 0 picks free ones.
    heap
        Java heap size for ``-Xmx``.
    """

    home: Path
    broker_port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def version(self) -> str:
        return kafka_version()

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Format a fresh data dir, start the broker and wait for its port."""
        lib = ensure_jars()
        check_tools()
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        self.broker_port = self.broker_port or free_port()
        self.controller_port = self.controller_port or free_port()
        config = self.home / "server.properties"
        config.write_text(
            TEMPLATE.read_text().format(
                broker_port=self.broker_port,
                controller_port=self.controller_port,
                data_dir=self.home,
            )
        )
        java = shutil.which("java") or "java"
        fmt = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                java,
                "-cp",
                f"{lib}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _cluster_id(),
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(f"formatting the KRaft storage failed: {fmt.stderr}")
        self._launch(lib, mode="wb")
        self._wait_started(timeout_s)
        return self

    def _launch(self, lib: Path, mode: str) -> None:
        java = shutil.which("java") or "java"
        with open(self.home / "stdout.log", mode) as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [
                    java,
                    f"-Xmx{self.heap}",
                    "-Xms128m",
                    "-XX:+UseG1GC",
                    f"-Dkafka.logs.dir={self.home}",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    f"{lib}/*",
                    "kafka.Kafka",
                    str(self.home / "server.properties"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc
        self.pid = proc.pid
        self._write_state()

    def _wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise LocalKafkaError(
                    f"the broker exited; see {self.home}/stdout.log:\n"
                    + (self.home / "stdout.log").read_text()[-2000:]
                )
            if port_open("127.0.0.1", self.broker_port) and self._started():
                log.info("kafka started version=%s bootstrap=%s", self.version, self.bootstrap)
                return
            time.sleep(0.25)
        self.stop()
        raise LocalKafkaError(f"the broker did not start within {timeout_s:.0f}s")

    def _started(self) -> bool:
        server_log = self.home / "server.log"
        return server_log.exists() and "Kafka Server started" in server_log.read_text(
            errors="replace"
        )

    def _write_state(self) -> None:
        state = {
            "pid": self.pid,
            "broker_port": self.broker_port,
            "controller_port": self.controller_port,
            "version": self.version,
        }
        (self.home / STATE_FILE).write_text(json.dumps(state))

    def running(self) -> bool:
        """Whether the broker process is alive."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child still answers kill(0); reap it if it is ours.
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return False
        return True

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the broker, SIGKILL it if it has not exited in time."""
        if self.pid is None or not self.running():
            return
        os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running():
            time.sleep(0.2)
        if self.running():
            log.warning("kafka did not stop in %.0fs, killing pid=%s", timeout_s, self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            while self.running():
                time.sleep(0.1)
        self.pid = None

    def restart(self, timeout_s: float = 90.0) -> None:
        """Stop and start the same broker, keeping its data and ports."""
        self.stop()
        # The started marker is read from server.log; start the new one afresh.
        (self.home / "server.log").rename(self.home / f"server.{time.time_ns()}.log")
        self._launch(ensure_jars(), mode="ab")
        self._wait_started(timeout_s)

    @classmethod
    def from_state(cls, home: Path) -> LocalKafka | None:
        """The broker a previous ``segstream kafka start`` left in ``home``."""
        path = home / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return cls(
            home=home,
            broker_port=state["broker_port"],
            controller_port=state["controller_port"],
            pid=state["pid"],
        )
