"""The Faust application, built from :class:`streams.settings.Settings`.

``faust -A streams.worker worker`` and ``segstream worker`` load
:mod:`streams.worker`, which builds on this
module. Faust's own environment lookups are disabled (``env={}``) so the
``SEGSTREAM_*`` settings are the only source of configuration.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import faust
from aiohttp.http_exceptions import HttpProcessingError
from faust.auth import SASLCredentials, SSLCredentials
from faust.sensors.prometheus import FaustMetrics

from streams import metrics
from streams.auth import check_web_auth
from streams.faust_sensor import CachedPrometheusMonitor
from streams.settings import Settings, check_secrets, load_settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, or ``None`` for plaintext."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def broker_credentials(settings: Settings) -> SASLCredentials | SSLCredentials | None:
    """Faust credentials carrying the same security settings as kafka-python's."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The same security settings as keyword arguments for a bare aiokafka client."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        config.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return config


# The longest request line the web server reads. A customer id is at most
# 128 characters, 1,536 bytes percent-encoded; aiohttp refuses a longer line
# with 400 before any view, and authentication, runs.
MAX_REQUEST_LINE_BYTES = 4096


class RequestBytesFilter(logging.Filter):
    """Logs a malformed HTTP request as one line, without the request's bytes.

    aiohttp logs a request its parser refuses (a request line over the limit,
    a bad header) at ERROR with a traceback quoting the start of the line,
    and so the start of a customer id.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a malformed HTTP request status=%s error=%s"
            record.args = (exc.code, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


def http_server_args() -> dict[str, Any]:
    """Options of aiohttp's request handler: the request-line cap and a redacting logger."""
    logger = logging.getLogger("segstream.web.http")
    if not any(isinstance(f, RequestBytesFilter) for f in logger.filters):
        logger.addFilter(RequestBytesFilter())
    return {"max_line_size": MAX_REQUEST_LINE_BYTES, "logger": logger}


def faust_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for :class:`faust.App`, all taken from ``settings``."""
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    return {
        "broker": brokers,
        "broker_credentials": broker_credentials(settings),
        "store": store,
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.input_partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "processing_guarantee": "at_least_once",
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_advertised_host or settings.web_host,
        "web_port": settings.web_port,
        # Faust's table dump endpoint would expose every profile unauthenticated.
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_in_thread": False,
        "web_application_options": {"handler_args": http_server_args()},
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "table_standby_replicas": settings.standby_replicas,
        "worker_redirect_stdouts": False,
        "stream_buffer_maxsize": settings.stream_buffer_maxsize,
        "broker_session_timeout": settings.group_session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.group_session_timeout_s / 3),
        "broker_max_poll_records": settings.max_poll_records,
        "consumer_max_fetch_size": settings.max_fetch_bytes,
        "env": {},
    }


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings`` (no topics or agents yet)."""
    return faust.App(settings.app_id, **faust_config(settings))


settings = load_settings()
app = create_app(settings)
# Faust's own Prometheus sensor (rebalances, recoveries, commits, sends,
# per-topic offsets), in our registry under segstream_faust_*.
app.monitor = CachedPrometheusMonitor(
    metrics=FaustMetrics.create(metrics.registry, "segstream_faust")
)


@app.on_worker_init.connect
def _refuse_unsafe_settings(sender: faust.App, /, *args: Any, **kwargs: Any) -> None:
    # `faust -A streams.worker worker` sends this before serving; `segstream
    # worker` runs the same checks itself, before Faust is involved.
    check_web_auth(settings)
    check_secrets(settings)
