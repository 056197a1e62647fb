"""Web views on every worker: health, readiness, metrics, profiles, erasure.

A profile request is forwarded by Faust's table routing to the worker that
owns the customer's partition. Profile and admin views are wrapped in
``@protected`` (bearer token, :mod:`streams.auth`); health, readiness and
metrics stay open for probes and Prometheus.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

import msgspec
from faust import web
from faust.tables.manager import TableManager
from prometheus_client import generate_latest
from yarl import URL

from models.audiences import audience_dimension
from models.pipeline import combined_bgnbd, customer_view, partition_population
from schemas.decode import is_safe_id
from schemas.records import MAX_ID_CHARS, ErasureRequest
from streams import metrics
from streams.app import app, settings
from streams.auth import require_token
from streams.engines import CACHES, ENGINE_CONFIG, now_ms, population_cache, profile_cache
from streams.model_sync import holder
from streams.partitioning import partition_for_key
from streams.tables import population_key, population_table, profiles_table
from streams.topics import erasure_requests_topic

PROFILE_CONFIG = settings.profile_config()
VALUE_CONFIG = settings.value_config()
SEGMENT_CONFIG = settings.segment_config()
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
protected = require_token(settings)


@app.page("/healthz")
async def healthz(self: web.View, request: web.Request) -> web.Response:
    """Liveness: the web server answers."""
    return self.json({"status": "ok"})


@app.page("/readyz")
async def readyz(self: web.View, request: web.Request) -> web.Response:
    """Readiness: partitions assigned, no rebalance running, tables recovered."""
    # The manager's type (TableManagerT) does not declare its recovery service.
    recovered = cast(TableManager, app.tables).recovery.completed.is_set()
    assigned = bool(app.consumer.assignment()) if app.consumer else False
    ready = recovered and assigned and not app.rebalancing and not app.in_recovery
    body = {"ready": ready, "recovered": recovered, "assigned": assigned}
    return self.json(body, status=200 if ready else 503)


@app.page("/metrics")
async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
    """Prometheus exposition of this worker's metrics."""
    counts = local_segment_counts()
    metrics.observe_segments(counts)
    metrics.customers.set(sum(counts.get("lifecycle", {}).values()))
    for cache in CACHES:
        metrics.cache_entries.labels(cache.table.name).set(len(cache))
    if app.consumer is not None:
        metrics.consumer_lag.clear()
        for tp in app.consumer.assignment():
            highwater = app.consumer.highwater(tp)
            position = await app.consumer.position(tp)
            if highwater is not None and position is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(highwater - position)
    # aiohttp refuses a charset inside content_type; the exposition is UTF-8 anyway.
    return self.bytes(generate_latest(metrics.registry), content_type=PROMETHEUS_TEXT)


def local_populations() -> dict[str, Any]:
    """The populations of this worker's partitions, newest first from the cache."""
    local = {key: value for key, value in population_table.items() if value is not None}
    for partition in range(settings.input_partitions):
        cached = population_cache.peek(population_key(partition))
        if cached is not None:
            local[population_key(partition)] = cached
    return local


def current_profile(customer_id: str) -> Any:
    """The customer's profile, including changes not yet written to the table."""
    cached = profile_cache.peek(customer_id)
    return cached if cached is not None else profiles_table.get(customer_id)


def customer_summary(customer_id: str, profile: Any) -> dict[str, Any]:
    """A profile as served: metrics as of this worker's watermark."""
    local = local_populations()
    watermark = max((p.get("watermark_ms", 0) for p in local.values()), default=None)
    partition = partition_for_key(customer_id, settings.input_partitions)
    pooled = combined_bgnbd(local.values())
    population = partition_population(local.get(population_key(partition)), pooled)
    return customer_view(
        customer_id,
        profile,
        PROFILE_CONFIG,
        watermark,
        population,
        VALUE_CONFIG,
        holder.bundle,
        SEGMENT_CONFIG,
        ENGINE_CONFIG.definitions,
    )


def owner_url(customer_id: str) -> URL | None:
    """Web address of the worker that holds the customer's partition, if known.

    Faust's own ``table_route`` hashes the key with its producer's topic
    metadata, which a worker may not have for a changelog it has not written
    yet (a request then fails after a rebalance); the partition is computed
    the way producers compute it instead.
    """
    partition = partition_for_key(customer_id, settings.input_partitions)
    for host, topics in app.router.table_metadata(profiles_table.name).items():
        if any(partition in partitions for partitions in topics.values()):
            return URL(host)
    return None


def _is_me(url: URL) -> bool:
    mine = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (mine.host, mine.port)


async def _forward(view: web.View, request: web.Request, owner: URL) -> web.Response:
    # The headers, Authorization included, go along: the owner checks the token too.
    target = request.url.with_host(owner.host or "127.0.0.1").with_port(owner.port)
    async with app.http_client.request(
        method=request.method, headers=request.headers, url=target
    ) as response:
        return view.text(
            await response.text(), content_type=response.content_type, status=response.status
        )


INVALID_ID = {
    "error": f"invalid customer id: 1 to {MAX_ID_CHARS} characters, no control or format "
    "characters, no surrounding whitespace"
}


def valid_customer_id(customer_id: str) -> bool:
    """Whether an id from a URL could be a customer's: what the decoder accepts."""
    return 0 < len(customer_id) <= MAX_ID_CHARS and is_safe_id(customer_id)


@app.page("/customers/{customer_id}")
class CustomerView(web.View):
    """``GET``: the profile (404 when unknown); ``DELETE``: erase the customer.

    An id the decoder would reject is answered with 400 and goes no further.
    """

    @protected
    async def get(self, request: web.Request, customer_id: str) -> web.Response:
        if not valid_customer_id(customer_id):
            return self.json(INVALID_ID, status=400)
        owner = owner_url(customer_id)
        if owner is not None and not _is_me(owner):
            return await _forward(self, request, owner)
        profile = current_profile(customer_id)
        if profile is None:
            return self.json({"error": "unknown customer"}, status=404)
        return self.json(customer_summary(customer_id, profile))

    @protected
    async def delete(self, request: web.Request, customer_id: str) -> web.Response:
        if not valid_customer_id(customer_id):
            return self.json(INVALID_ID, status=400)
        # Any worker may queue it: the erasure agent runs on the key's owner.
        request_id = uuid.uuid4().hex
        erasure = ErasureRequest(
            request_id=request_id, customer_id=customer_id, requested_at_ms=now_ms()
        )
        await erasure_requests_topic.send(
            key=customer_id.encode(), value=msgspec.json.encode(erasure)
        )
        return self.json({"request_id": request_id, "status": "queued"}, status=202)


@app.page("/models")
@protected
async def models_view(self: web.View, request: web.Request) -> web.Response:
    """The model snapshot this worker scores with: version, training, quality, clusters."""
    return self.json(holder.bundle.describe())


def _add_counts(totals: dict[str, dict[str, int]], counts: Mapping[str, Mapping[str, int]]) -> None:
    """Add members per dimension and value into ``totals``."""
    for dim, by_value in counts.items():
        into = totals.setdefault(dim, {})
        for value, count in by_value.items():
            into[value] = into.get(value, 0) + count


def local_segment_counts() -> dict[str, dict[str, int]]:
    """Members per dimension and value over this worker's partitions."""
    totals: dict[str, dict[str, int]] = {}
    for population in local_populations().values():
        _add_counts(totals, population.get("counts", {}))
    return totals


async def gathered_counts(request: web.Request) -> tuple[dict[str, dict[str, int]], int] | str:
    """Members per dimension and value over every worker's partitions, and how
    many workers answered; or what went wrong. ``?scope=local``: this worker only."""
    totals = local_segment_counts()
    workers = 1
    if request.query.get("scope") != "local":
        for host in app.router.table_metadata(profiles_table.name):
            url = URL(host)
            if _is_me(url):
                continue
            target = url.with_path("/segments").with_query(scope="local")
            async with app.http_client.get(target, headers=request.headers) as response:
                if response.status != 200:
                    return f"worker {url.host}:{url.port} answered {response.status}"
                _add_counts(totals, (await response.json())["segments"])
            workers += 1
    return totals, workers


@app.page("/segments")
@protected
async def segments_view(self: web.View, request: web.Request) -> web.Response:
    """Current population per dimension and value, gathered from every worker.

    ``?scope=local`` answers for this worker's partitions only (what the
    worker asked first gathers from the others).
    """
    gathered = await gathered_counts(request)
    if isinstance(gathered, str):
        return self.json({"error": gathered}, status=502)
    totals, workers = gathered
    body = {
        "workers": workers,
        "segments": {dim: dict(sorted(v.items())) for dim, v in sorted(totals.items())},
    }
    return self.json(body)


@app.page("/audiences")
@protected
async def audiences_view(self: web.View, request: web.Request) -> web.Response:
    """Members of each of the user's audiences, summed over every worker's partitions.

    Each worker counts the members of its own partitions as it decides them;
    this sums them (as ``/segments`` does). Audiences no longer defined are
    left out; ``definitions`` says which file version is served.
    """
    definitions = ENGINE_CONFIG.definitions
    if definitions is None:
        return self.json({"error": "no definitions file (SEGSTREAM_DEFINITIONS_FILE)"}, status=404)
    gathered = await gathered_counts(request)
    if isinstance(gathered, str):
        return self.json({"error": gathered}, status=502)
    totals, workers = gathered
    body = {
        "workers": workers,
        "definitions": {"version": definitions.version, "digest": definitions.digest},
        "audiences": {
            name: {
                "members": totals.get(audience_dimension(name), {}).get("in", 0),
                "description": audience.description,
            }
            for name, audience in definitions.audiences.items()
        },
    }
    return self.json(body)
