"""The one Settings object: environment, secrets and wiring into both Kafka clients."""

from __future__ import annotations

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from streams.app import broker_credentials, faust_config
from streams.settings import Settings


def test_settings_read_only_segstream_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("SEGSTREAM_INPUT_PARTITIONS", "12")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "wrong:1")
    settings = Settings(_env_file=None)
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.input_partitions == 12
    assert faust_config(settings)["broker"] == "kafka://k1:9092;kafka://k2:9092"


def test_faust_environment_variables_are_not_a_second_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_PORT", "1234")
    monkeypatch.setenv("APP_DATADIR", "/elsewhere")
    settings = Settings(_env_file=None, web_port=7000)
    from streams.app import create_app

    app = create_app(settings)
    assert app.conf.web_port == 7000
    assert str(app.conf.datadir) == str(settings.data_dir)
    assert app.conf.web_tables_enabled is False


def test_invalid_setting_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match="input_partitions"):
        Settings(_env_file=None, input_partitions=0)


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings(_env_file=None, kafka_sasl_password="hunter2", web_token="tok-secret")
    assert "hunter2" not in repr(settings)
    assert "tok-secret" not in repr(settings)


def test_sasl_ssl_settings_reach_kafka_python_and_faust(tmp_path: object) -> None:
    settings = Settings(
        _env_file=None,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    config = settings.kafka_python_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "svc"
    assert config["sasl_plain_password"] == "pw"
    credentials = broker_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.username == "svc"
    assert credentials.password == "pw"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context is not None
    assert credentials.protocol.value == "SASL_SSL"


def test_ssl_settings_reach_faust_as_ssl_credentials() -> None:
    settings = Settings(_env_file=None, kafka_security_protocol="SSL")
    assert isinstance(broker_credentials(settings), SSLCredentials)
    assert settings.kafka_python_config()["security_protocol"] == "SSL"


def test_plaintext_has_no_credentials() -> None:
    settings = Settings(_env_file=None)
    assert broker_credentials(settings) is None
    assert "sasl_mechanism" not in settings.kafka_python_config()


def test_every_table_store_gets_bounded_rocksdb_memory(tmp_path: object) -> None:
    from faust.stores.rocksdb import RocksDBOptions

    from streams import tables

    settings = Settings(_env_file=None, rocksdb_write_buffer_mb=4, rocksdb_block_cache_mb=8)
    options = RocksDBOptions(**settings.rocksdb_options())
    assert options.write_buffer_size == 4 * 1024 * 1024
    assert options.max_write_buffer_number == 2
    assert options.block_cache_size == 8 * 1024 * 1024
    # Far below Faust's defaults (3 × 64 MiB memtables, 2 GiB + 500 MiB caches).
    assert options.block_cache_size + options.block_cache_compressed_size < 500 * 1024 * 1024
    app_settings = tables.settings
    for table in (
        tables.profiles_table,
        tables.identities_table,
        tables.population_table,
        tables.held_table,
        tables.deadlines_table,
    ):
        assert table.options == app_settings.rocksdb_options(), table.name
