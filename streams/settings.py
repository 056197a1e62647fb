"""The one Settings object of segstream.

Every configurable value — Kafka connection, topic names, stores, web server,
security and the domain thresholds — is read here, from ``SEGSTREAM_*``
environment variables (or a ``.env`` file), and passed down explicitly.
Faust's own environment lookups are switched off (see :mod:`streams.app`),
so this class is the single source of truth.

>>> s = Settings(kafka_bootstrap="127.0.0.1:9092", _env_file=None)
>>> s.topic_names()["clickstream"]
'segstream.clickstream'
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.audiences import METRICS, SCORES
from models.definitions import Definitions, read_definitions
from models.engine import EngineConfig
from models.profile import (
    DAY_MS,
    DEFAULT_SLA_FIRST_RESPONSE_S,
    DEFAULT_SLA_RESOLUTION_S,
    ProfileConfig,
)
from models.profile_summary import ValueConfig
from models.segments import DIMENSIONS, SegmentConfig
from models.training import ModelConfig
from schemas.decode import DEAD_LETTER_MAX_BYTES, DecodeLimits
from schemas.errors import ConfigError
from schemas.money import Converter, FxRates, FxRatesFile

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
StoreKind = Literal["rocksdb", "memory"]
LogLevel = Literal["debug", "info", "warning", "error"]

ENV_PREFIX = "SEGSTREAM_"
# The public default of the secret keys: a worker refuses to start with it.
SECRET_PLACEHOLDER = "change-me"  # noqa: S105 - public on purpose, refused


class Settings(BaseSettings):
    """All of segstream's configuration, read from ``SEGSTREAM_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # --- Kafka connection -------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated Kafka bootstrap servers (host:port).",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for SSL.")
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate for SSL (mutual TLS)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="Client private key for SSL (mutual TLS)."
    )

    # --- Application ------------------------------------------------------
    app_id: str = Field(
        "segstream",
        description="Faust application id: consumer group and prefix of internal topics.",
    )
    store: StoreKind = Field(
        "rocksdb", description="Table store: rocksdb for workers, memory for tests."
    )
    data_dir: Path = Field(
        Path("var/segstream"), description="Directory for RocksDB tables and state."
    )
    log_level: LogLevel = Field("info", description="Worker log level.")

    # --- Topics -----------------------------------------------------------
    topic_prefix: str = Field("segstream.", description="Prefix of every topic name.")
    input_partitions: int = Field(
        4, ge=1, description="Partitions of the input topics and of every table."
    )
    output_partitions: int = Field(4, ge=1, description="Partitions of output topics.")
    replication_factor: int = Field(1, ge=1, description="Replication of all topics.")
    standby_replicas: int = Field(
        0, ge=0, description="Standby copies of each table partition on other workers."
    )

    # --- Web server -------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="Address the web server binds to.")
    web_port: int = Field(6066, ge=1, le=65535, description="Web server port.")
    web_advertised_host: str | None = Field(
        None,
        description="Host name other workers use to reach this one (table routing); "
        "defaults to web_host.",
    )
    web_token: SecretStr | None = Field(
        None, description="Bearer token required by the profile and admin endpoints."
    )
    web_auth: bool = Field(
        True,
        description="Require web_token: a worker without one refuses to start. False lets "
        "a worker serve the profile and admin endpoints unauthenticated when no token is "
        "set (demo, local experiments); a token that is set is always required.",
    )

    # --- Input contracts --------------------------------------------------
    max_event_bytes: int = Field(
        64 * 1024, ge=256, description="Largest accepted input message; larger is a dead letter."
    )
    max_amount: float = Field(
        1_000_000.0,
        gt=0,
        description="Largest accepted order or refund amount, in the base currency.",
    )
    max_future_skew_s: int = Field(
        86_400, ge=0, description="How far past the wall clock an event time may lie."
    )
    base_currency: str = Field(
        "EUR",
        pattern=r"^[A-Z]{3}$",
        description="ISO code of the currency revenue, AOV, monetary, CLV and value tier are in.",
    )
    fx_rates_file: Path | None = Field(
        None,
        description="CSV of exchange rates, header date,currency,rate (units of the currency "
        "per unit of the base); the latest rate on or before an event's UTC date converts it. "
        "Re-read within a minute of a change. Unset: only the base currency is accepted, "
        "others are dead letters (unknown_currency).",
    )
    dead_letter_max_bytes: int = Field(
        DEAD_LETTER_MAX_BYTES,
        ge=0,
        le=128 * 1024,
        description="Bytes of a rejected message's key and of its value a dead letter keeps; "
        "the full sizes and SHA-256 digests are always recorded. The bound keeps every dead "
        "letter far below the producer's 1 MB request limit; 0 keeps no bytes at all.",
    )

    # --- Profile state ----------------------------------------------------
    windows_days: tuple[int, ...] = Field(
        (1, 7, 30, 90), description="Event-time windows of the profile, in days."
    )
    allowed_lateness_s: int = Field(
        6 * 3600,
        ge=0,
        description="How long past their end sessions and carts wait for late events "
        "before they are decided (event time).",
    )
    dedup_window_hours: int = Field(
        168,
        ge=1,
        description="Every event this close to its customer's latest event time is "
        "remembered by id, so redeliveries and replays change nothing; an older one is "
        "stale (not applied, counted).",
    )
    dedup_capacity: int = Field(
        1024,
        ge=8,
        description="At most this many event ids remembered per customer; past it, the "
        "oldest go and events older than them are stale.",
    )
    session_timeout_s: int = Field(
        1800, ge=60, description="Inactivity that ends a session (event time)."
    )
    cart_timeout_s: int = Field(
        3600, ge=60, description="A cart with no order this long after it started is abandoned."
    )
    sla_first_response_s: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_FIRST_RESPONSE_S),
        description="First-response SLA per ticket priority, seconds (JSON object).",
    )
    sla_resolution_s: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_RESOLUTION_S),
        description="Resolution SLA per ticket priority, seconds (JSON object).",
    )
    expected_lifespan_days: float = Field(
        3 * 365.0, gt=0, description="Expected customer lifespan of the simple CLV."
    )
    clv_horizon_days: float = Field(
        90.0, gt=0, description="Horizon of the model-based expected purchases and CLV."
    )
    batch_max_events: int = Field(
        1000, ge=1, description="Events a worker folds into state per batch (write coalescing)."
    )
    batch_max_wait_s: float = Field(
        0.05, gt=0, description="Longest a partial batch waits before it is processed."
    )
    group_session_timeout_s: float = Field(
        30.0,
        ge=6,
        description="Consumer group session timeout: how soon a crashed worker's "
        "partitions move to the others.",
    )
    stream_buffer_maxsize: int = Field(
        32768, ge=1024, description="Messages Faust buffers per partition before pausing fetches."
    )
    max_poll_records: int = Field(5000, ge=100, description="Records one consumer poll may return.")
    max_fetch_bytes: int = Field(
        4 * 1024 * 1024, ge=65536, description="Bytes fetched per partition per request."
    )
    changelog_topic_configs: dict[str, str] = Field(
        default_factory=dict,
        description="Kafka configs of the tables' changelog topics (JSON object), over the "
        "compaction settings derived from ERASURE_BOUND_HOURS.",
    )
    write_back: bool = Field(
        True,
        description="Write state once per customer per offset commit; false writes after "
        "every batch (with BATCH_MAX_EVENTS=1: Faust's one-write-per-event pattern).",
    )
    profile_cache_size: int = Field(
        20_000,
        ge=0,
        description="Profiles a worker keeps decoded in memory (LRU) besides unwritten ones.",
    )
    rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        description="RocksDB memtable size per table partition, MiB, at most two of them "
        "(Faust's default: 64 MiB, three).",
    )
    rocksdb_block_cache_mb: int = Field(
        16,
        ge=1,
        description="RocksDB block cache per table partition, MiB (Faust's default: 2 GiB, "
        "plus 500 MiB compressed).",
    )
    training_sample_rate: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of training examples sent to the one trainer, chosen by example "
        "id (deterministic); lower it when the trainer cannot keep up.",
    )
    audit_hash_key: SecretStr = Field(
        SecretStr(SECRET_PLACEHOLDER),
        description="Key of the HMAC that pseudonymises ids in erasure audit events; a "
        "worker refuses to start with the placeholder.",
    )
    erasure_bound_hours: float = Field(
        24.0,
        gt=0,
        description="Longest an erased customer's id stays in the tables' changelog topics: "
        "a third each to segment.ms, max.compaction.lag.ms and delete.retention.ms of every "
        "changelog (README, Right to be forgotten).",
    )
    erasure_requests_retention_hours: float = Field(
        24.0,
        gt=0,
        description="Retention of the erasure-requests topic, which carries plain ids; a "
        "request not carried out within it (workers down that long) is lost.",
    )
    suppression_expiry_days: float | None = Field(
        None,
        gt=0,
        description="Days after which an erased id is no longer suppressed (its events are "
        "accepted again); unset: never.",
    )
    dead_letter_retention_days: float = Field(
        7.0, gt=0, description="Retention of the dead-letters topic, which holds raw input bytes."
    )
    output_retention_days: float = Field(
        7.0,
        gt=0,
        description="Retention of the segment-changes and triggers topics (keyed by customer id).",
    )
    input_idle_s: float = Field(
        10.0,
        ge=0,
        description="Wall-clock seconds a caught-up input topic partition keeps holding back "
        "the watermark that closes windows, sessions and carts and fires deadlines.",
    )
    reorder_idle_s: float = Field(
        0.0,
        ge=0,
        description="Wall-clock seconds a caught-up input topic partition keeps holding back "
        "the release of events read ahead of it (0: not at all, as Kafka Streams' "
        "max.task.idle.ms). More keeps live decisions exact when producers send one topic "
        "late, at up to that much latency.",
    )
    reorder_max_held: int = Field(
        200,
        ge=0,
        description="Events a customer may hold while another input topic catches up in "
        "event time; past it the oldest are applied early.",
    )
    anonymous_buffer_events: int = Field(
        200, ge=0, description="Anonymous events held per anonymous id until an identify."
    )

    # --- Online models ----------------------------------------------------
    churn_horizon_days: float = Field(
        90.0, gt=0, description="H: churn means no purchase in the next H days (event time)."
    )
    churn_min_labels: int = Field(
        30,
        ge=1,
        description="Resolved churn labels needed of each class before the model replaces "
        "the prior.",
    )
    model_clusters: int = Field(
        6, ge=2, le=16, description="Behavioural clusters (fixed; ids 0..n-1 never change)."
    )
    model_cluster_halflife: float = Field(
        0.02, gt=0, le=1, description="How far a cluster centre moves towards each example."
    )
    model_warmup_examples: int = Field(
        300, ge=10, description="Examples buffered before the cluster centres are seeded."
    )
    model_seed: int = Field(42, description="Seed of the models' initialisation.")
    model_quality_window: int = Field(
        1000, ge=10, description="Resolved labels the rolling AUC and log loss cover."
    )
    model_snapshot_key: SecretStr = Field(
        SecretStr(SECRET_PLACEHOLDER),
        description="Key of the HMAC that signs model snapshots; verified before unpickling. "
        "The same on every worker; a worker refuses to start with the placeholder.",
    )
    deadline_bucket_s: int = Field(
        3600, ge=1, description="Event-time granularity of the per-partition deadline index."
    )

    # --- Segments and triggers -------------------------------------------
    lifecycle_new_days: float = Field(
        30.0, gt=0, description="A first order this recent makes the customer 'new'."
    )
    lifecycle_at_risk_days: float = Field(
        30.0, gt=0, description="Days without an order that make a customer 'at_risk'."
    )
    lifecycle_dormant_days: float = Field(
        60.0, gt=0, description="Days without an order that make a customer 'dormant'."
    )
    lifecycle_churned_days: float = Field(
        90.0, gt=0, description="Days without an order that make a customer 'churned'."
    )
    lifecycle_reactivated_days: float = Field(
        30.0, gt=0, description="How long a returning customer stays 'reactivated'."
    )
    engagement_heavy_sessions: int = Field(
        8, ge=1, description="Sessions in 30 days that make a heavy user."
    )
    engagement_medium_sessions: int = Field(
        3, ge=1, description="Sessions in 30 days that make a medium user (1 = light)."
    )
    loyalty_orders_90d: int = Field(
        2, ge=1, description="Orders in 90 days that count as buying often (loyalty quadrant)."
    )
    loyalty_sessions_30d: int = Field(
        4, ge=1, description="Sessions in 30 days that count as engaging often."
    )
    value_top_5_rank: float = Field(
        0.95, gt=0, lt=1, description="CLV rank among buyers from which a customer is top 5%."
    )
    value_top_20_rank: float = Field(
        0.80, gt=0, lt=1, description="CLV rank among buyers from which a customer is top 20%."
    )
    churn_band_high: tuple[float, float] = Field(
        (0.7, 0.6), description="Churn probability entering / leaving the high band."
    )
    churn_band_medium: tuple[float, float] = Field(
        (0.4, 0.3), description="Churn probability entering / leaving the medium band."
    )
    segment_min_dwell_s: int = Field(
        86_400,
        ge=0,
        description="Least event time in a segment before it may change again "
        "(all dimensions but lifecycle and NPS).",
    )
    trigger_min_interval_s: int = Field(
        86_400, ge=0, description="Least event time between two triggers of one kind per customer."
    )
    trigger_daily_cap: int = Field(
        3,
        ge=0,
        description="At most this many triggers of any kinds per customer in 24 hours of event "
        "time; the rest are not sent (counted in segstream_capped_triggers_total). 0: no cap.",
    )
    historical_after_hours: float = Field(
        24.0,
        ge=0,
        description="During a backfill (replay --historical), segment changes at moments this "
        "long before the wall clock are marked historical and their triggers are not sent.",
    )
    definitions_file: Path | None = Field(
        None,
        description="YAML file of your own computed traits and audiences "
        "(docs/definitions-file.md), read and checked once at start: an error names the line, "
        "the field and what was expected. Unset: none.",
    )
    detractor_sentiment: float = Field(
        -0.5, ge=-1, le=0, description="Ticket text this negative fires a detractor follow-up."
    )

    # --- Local broker -----------------------------------------------------
    kafka_home: Path = Field(
        Path("var/kafka"),
        description="Where `segstream kafka start` keeps the local broker's data.",
    )

    def topic_names(self) -> dict[str, str]:
        """Name of every topic segstream reads or writes, by role."""
        roles = (
            "clickstream",
            "purchases",
            "support",
            "segment_changes",
            "triggers",
            "dead_letters",
            "erasure_requests",
            "erasure_audit",
            "training_examples",
            "model_snapshots",
        )
        return {role: self.topic_prefix + role.replace("_", "-") for role in roles}

    def changelog_configs(self) -> dict[str, str]:
        """Kafka configs of every table changelog: compaction within the erasure bound.

        A value lingers until its segment is rolled (``segment.ms``; the worker
        appends to a quiet partition so it rolls), the cleaner must take it
        (``max.compaction.lag.ms``) and a tombstone survives ``delete.retention.ms``
        after that: a third of ``ERASURE_BOUND_HOURS`` each.
        ``CHANGELOG_TOPIC_CONFIGS`` overrides any of them.

        >>> Settings(_env_file=None, erasure_bound_hours=3).changelog_configs()["segment.ms"]
        '3600000'
        """
        third_ms = str(int(self.erasure_bound_hours * 3_600_000 / 3))
        return {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "segment.ms": third_ms,
            "max.compaction.lag.ms": third_ms,
            "delete.retention.ms": third_ms,
            **self.changelog_topic_configs,
        }

    def retention_configs(self) -> dict[str, dict[str, str]]:
        """Kafka configs of the topics that keep customer data for a limited time, by role."""

        def retention(ms: float) -> dict[str, str]:
            # Retention deletes whole segments: roll them at least as often.
            return {"retention.ms": str(int(ms)), "segment.ms": str(max(int(ms) // 4, 1000))}

        hour, day = 3_600_000, 86_400_000
        return {
            "erasure_requests": retention(self.erasure_requests_retention_hours * hour),
            "dead_letters": retention(self.dead_letter_retention_days * day),
            "segment_changes": retention(self.output_retention_days * day),
            "triggers": retention(self.output_retention_days * day),
        }

    def rocksdb_options(self) -> dict[str, int]:
        """Options of every table's RocksDB store: bounded memory per table partition."""
        mib = 1024 * 1024
        return {
            "write_buffer_size": self.rocksdb_write_buffer_mb * mib,
            "max_write_buffer_number": 2,
            "block_cache_size": self.rocksdb_block_cache_mb * mib,
            "block_cache_compressed_size": self.rocksdb_block_cache_mb * mib // 4,
        }

    def decode_limits(self) -> DecodeLimits:
        """Bounds for :func:`schemas.decode.decode_event`."""
        fx: Converter = (
            FxRates(base=self.base_currency)
            if self.fx_rates_file is None
            else FxRatesFile(self.fx_rates_file, self.base_currency)
        )
        return DecodeLimits(
            max_bytes=self.max_event_bytes,
            max_amount=self.max_amount,
            max_future_ms=self.max_future_skew_s * 1000,
            fx=fx,
        )

    def profile_config(self) -> ProfileConfig:
        """Settings of :mod:`models.profile`."""
        return ProfileConfig(
            windows_days=self.windows_days,
            allowed_lateness_ms=self.allowed_lateness_s * 1000,
            dedup_window_ms=self.dedup_window_hours * 3_600_000,
            dedup_capacity=self.dedup_capacity,
            session_timeout_ms=self.session_timeout_s * 1000,
            cart_timeout_ms=self.cart_timeout_s * 1000,
            sla_first_response_s=dict(self.sla_first_response_s),
            sla_resolution_s=dict(self.sla_resolution_s),
        )

    def value_config(self) -> ValueConfig:
        """Settings of the value metrics."""
        return ValueConfig(
            expected_lifespan_days=self.expected_lifespan_days,
            clv_horizon_days=self.clv_horizon_days,
        )

    def learning_config(self) -> ModelConfig:
        """Settings of the online models."""
        return ModelConfig(
            horizon_days=self.churn_horizon_days,
            clusters=self.model_clusters,
            cluster_halflife=self.model_cluster_halflife,
            warmup_examples=self.model_warmup_examples,
            min_labels=self.churn_min_labels,
            seed=self.model_seed,
            quality_window=self.model_quality_window,
        )

    def segment_config(self) -> SegmentConfig:
        """Settings of the segment rules and triggers."""
        return SegmentConfig(
            new_days=self.lifecycle_new_days,
            at_risk_days=self.lifecycle_at_risk_days,
            dormant_days=self.lifecycle_dormant_days,
            churned_days=self.lifecycle_churned_days,
            reactivated_days=self.lifecycle_reactivated_days,
            heavy_sessions_30d=self.engagement_heavy_sessions,
            medium_sessions_30d=self.engagement_medium_sessions,
            loyal_orders_90d=self.loyalty_orders_90d,
            engaged_sessions_30d=self.loyalty_sessions_30d,
            top_5_rank=self.value_top_5_rank,
            top_20_rank=self.value_top_20_rank,
            churn_high_enter=self.churn_band_high[0],
            churn_high_leave=self.churn_band_high[1],
            churn_medium_enter=self.churn_band_medium[0],
            churn_medium_leave=self.churn_band_medium[1],
            min_dwell_ms=self.segment_min_dwell_s * 1000,
            trigger_interval_ms=self.trigger_min_interval_s * 1000,
            trigger_daily_cap=self.trigger_daily_cap,
            negative_text=self.detractor_sentiment,
            expected_lifespan_years=self.expected_lifespan_days / 365,
        )

    def definitions(self) -> Definitions | None:
        """The user's traits and audiences (``definitions_file``), or None.

        Raises
        ------
        DefinitionsError
            If the file cannot be read or is not valid (line, field, expected).
        """
        if self.definitions_file is None:
            return None
        return read_definitions(
            self.definitions_file,
            known_metrics=frozenset(METRICS),
            known_scores=frozenset(SCORES),
            known_segments=frozenset(DIMENSIONS),
        )

    def engine_config(self) -> EngineConfig:
        """Settings of the partition engine (models.engine)."""
        return EngineConfig(
            profile=self.profile_config(),
            segments=self.segment_config(),
            horizon_ms=int(self.churn_horizon_days * DAY_MS),
            deadline_bucket_ms=self.deadline_bucket_s * 1000,
            reorder_max_held=self.reorder_max_held,
            anonymous_buffer_events=self.anonymous_buffer_events,
            id_key=self.model_snapshot_key.get_secret_value().encode(),
            training_sample_rate=self.training_sample_rate,
            historical_after_ms=int(self.historical_after_hours * 3_600_000),
            definitions=self.definitions(),
        )

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection keyword arguments for kafka-python clients.

        The same security settings reach the Faust app through
        :func:`streams.app.broker_credentials`.
        """
        config: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_cafile"] = _as_str(self.kafka_ssl_cafile)
            config["ssl_certfile"] = _as_str(self.kafka_ssl_certfile)
            config["ssl_keyfile"] = _as_str(self.kafka_ssl_keyfile)
        return config


def _as_str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)


# Secret keys whose default is the public placeholder. With it, anyone could
# sign a model snapshot every worker loads, or reverse the audit hashes.
PLACEHOLDER_SECRETS = ("model_snapshot_key", "audit_hash_key")


def placeholder_secrets(settings: Settings) -> list[str]:
    """Variables of the secret keys still at the placeholder (or blank).

    >>> s = Settings(_env_file=None, model_snapshot_key="change-me", audit_hash_key="k3y")
    >>> placeholder_secrets(s)
    ['SEGSTREAM_MODEL_SNAPSHOT_KEY']
    """
    unset = []
    for field in PLACEHOLDER_SECRETS:
        value: SecretStr = getattr(settings, field)
        if value.get_secret_value().strip() in ("", SECRET_PLACEHOLDER):
            unset.append(ENV_PREFIX + field.upper())
    return unset


def check_secrets(settings: Settings) -> None:
    """Raise :class:`ConfigError` naming every secret key still at its placeholder.

    Called before a worker starts, as :func:`streams.auth.check_web_auth` is.
    The demo, the tests and the benchmarks give their workers
    :func:`throwaway_secrets`.
    """
    unset = placeholder_secrets(settings)
    if unset:
        raise ConfigError(
            f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} still the public "
            f"placeholder {SECRET_PLACEHOLDER!r}: set each to a random secret, the same on "
            "every worker (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def throwaway_secrets() -> dict[str, str]:
    """Random secret keys for a short-lived worker, as ``WorkerProcess`` env (no prefix).

    >>> sorted(throwaway_secrets())
    ['AUDIT_HASH_KEY', 'MODEL_SNAPSHOT_KEY']
    """
    return {field.upper(): secrets.token_urlsafe(32) for field in PLACEHOLDER_SECRETS}
