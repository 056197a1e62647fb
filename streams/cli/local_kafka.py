"""A real single-node Apache Kafka broker on loopback, without Docker.

The jars come from Maven Central through ``ops/kafka/pom.xml`` and are cached
under ``~/.cache/segstream/kafka-<version>``. A broker keeps its KRaft data in
its home directory: the first start formats it, every later start (after a
stop, a crash or a kill -9) runs on the same data, and only :meth:`LocalKafka.reset`
deletes it. It listens on loopback with a small heap and is stopped with
SIGTERM, then SIGKILL after a timeout. The same jars run Kafka's own
command-line tools (:func:`tool_command`). The CLI
(``segstream kafka start|stop|status|reset|tool``), the test fixtures, the
demo and the benchmarks all use this module.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import LocalKafkaError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_OPS_DIR = REPO_ROOT / "ops" / "kafka"
POM = KAFKA_OPS_DIR / "pom.xml"
TEMPLATE = KAFKA_OPS_DIR / "server.properties.template"
LOG4J_CONFIG = KAFKA_OPS_DIR / "log4j2.yaml"
STATE_FILE = "broker.json"
# log.dirs in server.properties.template; formatting writes meta.properties there.
LOG_DIR = "logs"
META_FILE = "meta.properties"
DEFAULT_BROKER_PORT = 9092
# Server logs of earlier runs kept beside the current one (server.<ns>.log).
KEPT_SERVER_LOGS = 5

# Kafka's command-line tools in 4.1: the bin/<name>.sh scripts of the Kafka
# distribution each run one of these main classes (kafka-tools jar, or the
# broker jar for the kafka.* ones).
KAFKA_TOOLS: dict[str, str] = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-dump-log": "kafka.tools.DumpLogSegments",
}
# The tools above that read segments from disk instead of talking to a broker.
OFFLINE_TOOLS = frozenset({"kafka-dump-log"})

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


def jar_manifest() -> str:
    """What a complete jar cache was fetched from: the version and the POM's digest.

    The cache's ``.complete`` marker holds it, so a cache fetched from an
    older POM (one without kafka-tools, say) is completed on the next use.
    """
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    return f"{kafka_version()} pom-sha256:{digest}"


def ensure_jars() -> Path:
    """Fetch the broker's and the tools' jars with Maven unless they are cached.

    Maven copies them into a scratch directory first; each jar the cache
    lacks is then renamed into it, so a broker starting from the cache
    meanwhile never sees a half-written jar, and jars in use are never
    replaced.
    """
    target = jar_dir()
    marker = target / ".complete"
    manifest = jar_manifest()
    if marker.exists() and marker.read_text().strip() == manifest:
        return target
    check_tools()
    mvn = shutil.which("mvn")
    if mvn is None and marker.exists():
        # A complete cache from an older POM still runs the broker.
        log.warning("kafka jar cache predates %s and mvn is missing; using it as is", POM)
        return target
    if mvn is None:
        raise LocalKafkaError(MISSING_TOOLS_HINT.format(what="Maven (mvn)"))
    target.mkdir(parents=True, exist_ok=True)
    log.info("fetching kafka jars version=%s into=%s", kafka_version(), target)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-fetch-", dir=target.parent))
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={scratch}",
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
        for jar in sorted(scratch.glob("*.jar")):
            if not (target / jar.name).exists():
                os.replace(jar, target / jar.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    marker.write_text(manifest)
    return target


def tool_command(name: str, args: Sequence[str], bootstrap: str | None = None) -> list[str]:
    """The java command line that runs Kafka's tool ``name`` on the cached jars.

    ``name`` is the name of the script in Kafka's ``bin/`` (``kafka-topics``,
    with or without ``.sh``); ``args`` go to the tool unchanged. When the tool
    talks to a broker and ``args`` name none, ``--bootstrap-server bootstrap``
    is added.

    >>> argv = tool_command("kafka-topics", ["--list"], "127.0.0.1:9092")  # doctest: +SKIP
    >>> argv[-4:]  # doctest: +SKIP
    ['org.apache.kafka.tools.TopicCommand', '--list', '--bootstrap-server', '127.0.0.1:9092']
    """
    tool = name.removesuffix(".sh")
    main_class = KAFKA_TOOLS.get(tool)
    if main_class is None:
        raise LocalKafkaError(
            f"unknown Kafka tool {name!r}; known tools: {', '.join(sorted(KAFKA_TOOLS))}"
        )
    lib = ensure_jars()
    check_tools()
    if not any(lib.glob("kafka-tools-*.jar")):
        raise LocalKafkaError(
            f"{lib} has no kafka-tools jar; install Maven so that it can be fetched"
        )
    java = shutil.which("java") or "java"
    argv = [java, "-Xmx256m", "-cp", f"{lib}/*", main_class, *args]
    named = {arg.split("=", 1)[0] for arg in args}
    if (
        bootstrap
        and tool not in OFFLINE_TOOLS
        and not named & {"--bootstrap-server", "--bootstrap-controller"}
    ):
        argv += ["--bootstrap-server", bootstrap]
    return argv


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


def _usable_port(port: int) -> int:
    """``port`` when nothing listens on it; otherwise (or for 0) a free one."""
    if port and not port_open("127.0.0.1", port):
        return port
    return free_port()


def _is_broker_process(pid: int) -> bool:
    """Whether the live process ``pid`` is a Kafka broker.

    After a kill -9 or a reboot the recorded PID can belong to an unrelated
    process, or to a zombie nobody reaps (the CLI's broker is re-parented);
    its command line says which. Without /proc, a live PID counts as ours.
    """
    proc = Path("/proc")
    if not (proc / "self").exists():
        return True
    try:
        stat = (proc / str(pid) / "stat").read_text()
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    # Empty while the process is still being exec'ed: not a different program.
    return not cmdline or b"kafka.Kafka" in cmdline.split(b"\0")


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

    The data in ``home`` outlives the process: :meth:`start` formats a home
    only once, and only :meth:`reset` deletes it.

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

    @property
    def formatted(self) -> bool:
        """Whether ``home`` holds KRaft storage, i.e. a broker's data."""
        return (self.home / LOG_DIR / META_FILE).exists()

    def cluster_id(self) -> str | None:
        """The KRaft cluster id the storage in ``home`` was formatted with."""
        meta = self.home / LOG_DIR / META_FILE
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Start the broker on the data in ``home`` and wait until it serves.

        A home without KRaft storage is formatted first, with a new cluster
        id. A formatted one is started as it is, whatever stopped it: same
        cluster id, topics, records and committed offsets; only
        ``server.properties`` is written again, with this object's ports.
        """
        lib = ensure_jars()
        check_tools()
        if self.running():
            raise LocalKafkaError(f"the broker of {self.home} already runs (pid {self.pid})")
        self.home.mkdir(parents=True, exist_ok=True)
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
        if self.formatted:
            log.info("kafka resuming home=%s cluster_id=%s", self.home, self.cluster_id())
        else:
            self._format(lib, config)
        # The started marker is read from server.log: give this run a new one.
        self._rotate_server_log()
        self._launch(lib)
        self._wait_started(timeout_s)
        return self

    def _format(self, lib: Path, config: Path) -> None:
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

    def _rotate_server_log(self) -> None:
        server_log = self.home / "server.log"
        if server_log.exists():
            server_log.rename(self.home / f"server.{time.time_ns()}.log")
        earlier = sorted(self.home.glob("server.*.log"))
        for old in earlier[:-KEPT_SERVER_LOGS]:
            old.unlink()

    def _launch(self, lib: Path) -> None:
        java = shutil.which("java") or "java"
        with open(self.home / "stdout.log", "ab") as out:
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
        return _is_broker_process(self.pid)

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
        self.start(timeout_s)

    def is_broker_home(self) -> bool:
        """Whether ``home`` looks like a directory this module made."""
        return any(
            (self.home / name).exists()
            for name in (STATE_FILE, "server.properties", f"{LOG_DIR}/{META_FILE}")
        )

    def reset(self) -> None:
        """Delete the broker's data: every topic, record, committed offset and the cluster id.

        Refuses while the broker runs, and refuses a directory that holds no
        broker, so a mistyped ``SEGSTREAM_KAFKA_HOME`` cannot wipe anything
        else. The next :meth:`start` formats a new, empty broker.
        """
        if self.running():
            raise LocalKafkaError(
                f"the broker of {self.home} is running (pid {self.pid}); stop it first"
            )
        if not self.home.exists():
            return
        if not self.is_broker_home():
            raise LocalKafkaError(
                f"{self.home} holds no local Kafka broker (no {STATE_FILE}, "
                f"server.properties or {LOG_DIR}/{META_FILE}); not deleting it"
            )
        shutil.rmtree(self.home)
        log.info("kafka reset home=%s", self.home)

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

    @classmethod
    def for_home(cls, home: Path, broker_port: int | None = None) -> LocalKafka:
        """The stopped broker of ``home``, with the ports ``segstream kafka start`` gives it.

        Each port is the one the last run recorded, unless something else
        listens on it now; ``broker_port`` overrides the recorded broker port
        (0: any free one). A home never started gets ``broker_port``, or 9092,
        and a free controller port. A port in use is replaced by a free one.
        """
        previous = cls.from_state(home)
        if broker_port is None:
            broker_port = previous.broker_port if previous else DEFAULT_BROKER_PORT
        controller_port = previous.controller_port if previous else 0
        return cls(
            home=home,
            broker_port=_usable_port(broker_port),
            controller_port=_usable_port(controller_port),
        )
