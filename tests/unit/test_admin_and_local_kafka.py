"""Topic declarations and the local broker starter, without a broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.errors import LocalKafkaError
from streams.cli import local_kafka
from streams.cli.admin import topic_specs
from streams.cli.commands import cli
from streams.settings import Settings


def test_every_topic_name_is_declared_once_with_the_configured_partitions() -> None:
    settings = Settings(_env_file=None, input_partitions=6, output_partitions=3)
    specs = topic_specs(settings)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    assert set(names) == set(settings.topic_names().values())
    by_role = {spec.role: spec for spec in specs}
    for role in ("clickstream", "purchases", "support", "erasure_requests"):
        assert by_role[role].partitions == 6
    assert by_role["segment_changes"].partitions == 3


def test_topic_prefix_applies_to_every_topic() -> None:
    settings = Settings(_env_file=None, topic_prefix="shop1.")
    assert all(name.startswith("shop1.") for name in settings.topic_names().values())


def test_missing_java_is_reported_in_a_plain_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: None)
    with pytest.raises(LocalKafkaError, match=r"Java was not found.*docker compose"):
        local_kafka.check_tools()


def test_missing_maven_is_reported_when_jars_are_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: None)
    with pytest.raises(LocalKafkaError, match=r"Maven .*docker compose"):
        local_kafka.ensure_jars()


def test_pinned_kafka_is_a_4x_release() -> None:
    assert local_kafka.kafka_version().startswith("4.")


def test_server_properties_template_fills_every_placeholder(tmp_path: Path) -> None:
    text = local_kafka.TEMPLATE.read_text().format(
        broker_port=1, controller_port=2, data_dir=tmp_path
    )
    assert "{" not in text
    assert "transaction.state.log.min.isr=1" in text
    assert "group.initial.rebalance.delay.ms=0" in text


# --- The broker keeps its data: start, reset, ports, jars and tools ------------


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """LocalKafka without a JVM: the commands it would run are recorded instead.

    Formatting writes ``meta.properties`` as Kafka's storage tool does, so a
    second start sees a formatted home.
    """
    commands: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        commands.append(list(argv))
        if "kafka.tools.StorageTool" in argv:
            config = Path(argv[argv.index("-c") + 1])
            meta = config.parent / local_kafka.LOG_DIR / local_kafka.META_FILE
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(f"cluster.id={argv[argv.index('-t') + 1]}\nnode.id=1\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def launch(self: local_kafka.LocalKafka, lib: Path) -> None:
        commands.append(["launch", str(self.home)])
        self.pid = 4242
        self._write_state()

    monkeypatch.setattr(local_kafka, "ensure_jars", lambda: tmp_path / "jars")
    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    monkeypatch.setattr(local_kafka.subprocess, "run", run)
    monkeypatch.setattr(local_kafka.LocalKafka, "_launch", launch)
    monkeypatch.setattr(local_kafka.LocalKafka, "_wait_started", lambda self, timeout_s: None)
    monkeypatch.setattr(local_kafka.LocalKafka, "running", lambda self: False)
    return commands


def _formats(commands: list[list[str]]) -> int:
    return sum("kafka.tools.StorageTool" in argv for argv in commands)


def test_a_fresh_home_is_formatted_once_and_later_starts_reuse_it(
    no_java: list[list[str]], tmp_path: Path
) -> None:
    home = tmp_path / "kafka"
    first = local_kafka.LocalKafka(home=home).start()
    cluster_id = first.cluster_id()
    assert _formats(no_java) == 1
    assert cluster_id
    (home / "logs" / "t-0").mkdir()
    (home / "logs" / "t-0" / "00000000000000000000.log").write_bytes(b"records")

    again = local_kafka.LocalKafka.for_home(home).start()

    assert _formats(no_java) == 1
    assert again.cluster_id() == cluster_id
    assert (home / "logs" / "t-0" / "00000000000000000000.log").read_bytes() == b"records"


def test_a_restart_reads_a_new_server_log_and_keeps_the_old_ones(
    no_java: list[list[str]], tmp_path: Path
) -> None:
    home = tmp_path / "kafka"
    local_kafka.LocalKafka(home=home).start()
    for run in range(local_kafka.KEPT_SERVER_LOGS + 2):
        # The old run's marker must not make the next start look finished.
        (home / "server.log").write_text(f"run {run}: Kafka Server started\n")
        local_kafka.LocalKafka.for_home(home).start()
        assert not (home / "server.log").exists()
    kept = sorted(home.glob("server.*.log"))
    assert len(kept) == local_kafka.KEPT_SERVER_LOGS
    assert kept[-1].read_text().startswith(f"run {local_kafka.KEPT_SERVER_LOGS + 1}:")


def test_start_refuses_a_broker_that_already_runs(
    no_java: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_kafka.LocalKafka, "running", lambda self: True)
    broker = local_kafka.LocalKafka(home=tmp_path / "kafka", pid=4242)
    with pytest.raises(LocalKafkaError, match="already runs"):
        broker.start()
    assert no_java == []


def test_for_home_keeps_the_recorded_ports_while_they_are_free(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    home.mkdir()
    broker_port, controller_port = local_kafka.free_port(), local_kafka.free_port()
    state = {"pid": 1, "broker_port": broker_port, "controller_port": controller_port}
    (home / local_kafka.STATE_FILE).write_text(json.dumps(state))

    same = local_kafka.LocalKafka.for_home(home)
    assert (same.broker_port, same.controller_port) == (broker_port, controller_port)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", broker_port))
        taken.listen()
        moved = local_kafka.LocalKafka.for_home(home)
    assert moved.broker_port not in (0, broker_port)
    assert moved.controller_port == controller_port


def test_for_home_of_a_new_broker_asks_for_9092(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_kafka, "port_open", lambda host, port: False)
    fresh = local_kafka.LocalKafka.for_home(tmp_path / "kafka")
    assert fresh.broker_port == local_kafka.DEFAULT_BROKER_PORT
    assert fresh.controller_port > 0
    assert local_kafka.LocalKafka.for_home(tmp_path / "kafka", 0).broker_port > 0


def test_a_live_process_that_is_no_broker_does_not_count_as_running(tmp_path: Path) -> None:
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc")
    # After a reboot the recorded PID may name an unrelated process (here: pytest).
    assert not local_kafka.LocalKafka(home=tmp_path, pid=os.getpid()).running()


def test_reset_deletes_a_stopped_broker(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "meta.properties").write_text("cluster.id=abc\n")
    local_kafka.LocalKafka(home=home).reset()
    assert not home.exists()


def test_reset_refuses_a_running_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "kafka"
    home.mkdir()
    (home / local_kafka.STATE_FILE).write_text("{}")
    monkeypatch.setattr(local_kafka.LocalKafka, "running", lambda self: True)
    with pytest.raises(LocalKafkaError, match="is running"):
        local_kafka.LocalKafka(home=home, pid=4242).reset()
    assert (home / local_kafka.STATE_FILE).exists()


def test_reset_refuses_a_directory_that_holds_no_broker(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not Kafka's")
    with pytest.raises(LocalKafkaError, match="holds no local Kafka broker"):
        local_kafka.LocalKafka(home=tmp_path).reset()
    assert (tmp_path / "precious.txt").read_text() == "not Kafka's"


def _formatted_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kafka"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "meta.properties").write_text("cluster.id=abc\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGSTREAM_KAFKA_HOME", str(home))
    return home


def test_cli_reset_asks_and_keeps_the_data_unless_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _formatted_home(tmp_path, monkeypatch)
    declined = CliRunner().invoke(cli, ["kafka", "reset"], input="n\n")
    assert declined.exit_code == 1
    assert "Delete every topic" in declined.output
    assert home.exists()

    confirmed = CliRunner().invoke(cli, ["kafka", "reset"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert not home.exists()


def test_cli_reset_yes_deletes_without_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _formatted_home(tmp_path, monkeypatch)
    result = CliRunner().invoke(cli, ["kafka", "reset", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Delete every topic" not in result.output
    assert not home.exists()


def test_cli_reset_refuses_while_the_broker_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _formatted_home(tmp_path, monkeypatch)
    (home / local_kafka.STATE_FILE).write_text(
        json.dumps({"pid": 4242, "broker_port": 1, "controller_port": 2})
    )
    monkeypatch.setattr(local_kafka.LocalKafka, "running", lambda self: True)
    result = CliRunner().invoke(cli, ["kafka", "reset", "--yes"])
    assert result.exit_code == 1
    assert "stop it first" in result.output
    assert (home / "logs" / "meta.properties").exists()


def test_cli_start_on_a_stopped_broker_starts_it_with_its_data(
    no_java: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _formatted_home(tmp_path, monkeypatch)
    port = local_kafka.free_port()
    # The PID of a broker killed with -9: nothing runs under it any more.
    (home / local_kafka.STATE_FILE).write_text(
        json.dumps({"pid": 999_999_999, "broker_port": port, "controller_port": 0})
    )
    result = CliRunner().invoke(cli, ["kafka", "start"])
    assert result.exit_code == 0, result.output
    assert "Started again with its data" in result.output
    assert "cluster id abc" in result.output
    assert f"SEGSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:{port}" in result.output
    assert _formats(no_java) == 0
    assert (home / "logs" / "meta.properties").read_text() == "cluster.id=abc\n"


def _fake_mvn(monkeypatch: pytest.MonkeyPatch, jars: dict[str, bytes]) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        out = Path(next(a for a in argv if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        for name, content in jars.items():
            (out / name).write_bytes(content)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(local_kafka.subprocess, "run", run)
    return calls


def test_a_jar_cache_fetched_before_the_tools_were_added_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = local_kafka.jar_dir()
    cache.mkdir(parents=True)
    # What the old ensure_jars left: broker jars, and the bare version as marker.
    (cache / "kafka_2.13-4.1.1.jar").write_bytes(b"in use by a running broker")
    (cache / ".complete").write_text(local_kafka.kafka_version())
    calls = _fake_mvn(
        monkeypatch, {"kafka_2.13-4.1.1.jar": b"fetched", "kafka-tools-4.1.1.jar": b"tools"}
    )

    assert local_kafka.ensure_jars() == cache
    assert len(calls) == 1
    assert (cache / "kafka-tools-4.1.1.jar").read_bytes() == b"tools"
    # A jar already there is never rewritten under a running broker.
    assert (cache / "kafka_2.13-4.1.1.jar").read_bytes() == b"in use by a running broker"
    assert (cache / ".complete").read_text() == local_kafka.jar_manifest()
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]

    local_kafka.ensure_jars()
    assert len(calls) == 1


def test_an_old_jar_cache_still_runs_the_broker_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = local_kafka.jar_dir()
    cache.mkdir(parents=True)
    (cache / ".complete").write_text(local_kafka.kafka_version())
    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: None)
    assert local_kafka.ensure_jars() == cache


def test_tool_command_runs_the_tools_main_class_against_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_kafka, "ensure_jars", lambda: tmp_path)
    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    with pytest.raises(LocalKafkaError, match="no kafka-tools jar"):
        local_kafka.tool_command("kafka-topics", ["--list"], "127.0.0.1:1234")
    (tmp_path / "kafka-tools-4.1.1.jar").write_bytes(b"")
    argv = local_kafka.tool_command("kafka-topics", ["--list"], "127.0.0.1:1234")
    assert argv[-4:] == [
        "org.apache.kafka.tools.TopicCommand",
        "--list",
        "--bootstrap-server",
        "127.0.0.1:1234",
    ]
    assert argv[argv.index("-cp") + 1] == f"{tmp_path}/*"
    given = local_kafka.tool_command(
        "kafka-consumer-groups.sh", ["--list", "--bootstrap-server=h:1"], "127.0.0.1:1234"
    )
    assert given[-3:] == [
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--list",
        "--bootstrap-server=h:1",
    ]
    offline = local_kafka.tool_command("kafka-dump-log", ["--files", "x.log"], "127.0.0.1:1")
    assert "--bootstrap-server" not in offline
    with pytest.raises(LocalKafkaError, match=r"unknown Kafka tool 'kafka-nope'.*kafka-topics"):
        local_kafka.tool_command("kafka-nope", [], None)


def test_every_tool_main_class_is_in_the_fetched_jars() -> None:
    classes: set[str] = set()
    for jar in local_kafka.ensure_jars().glob("*.jar"):
        with zipfile.ZipFile(jar) as archive:
            classes.update(archive.namelist())
    for tool, main_class in local_kafka.KAFKA_TOOLS.items():
        assert main_class.replace(".", "/") + ".class" in classes, tool
