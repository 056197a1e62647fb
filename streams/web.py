"""Web views on every worker: health and the customer profile.

A profile request is forwarded by Faust's table routing to the worker that
owns the customer's partition.
"""

from __future__ import annotations

from typing import Any

from faust import web
from prometheus_client import generate_latest

from models.profile import summary
from streams import metrics
from streams.app import app, settings
from streams.tables import profiles_table

PROFILE_CONFIG = settings.profile_config()
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


@app.page("/healthz")
async def healthz(self: web.View, request: web.Request) -> web.Response:
    """Liveness: the web server answers."""
    return self.json({"status": "ok"})


@app.page("/customers/{customer_id}")
@app.table_route(table=profiles_table, match_info="customer_id")
async def customer_profile(self: web.View, request: web.Request, customer_id: str) -> web.Response:
    """The customer's profile, or 404 when the customer is unknown."""
    profile: Any = profiles_table.get(customer_id)
    if profile is None:
        return self.json({"error": "unknown customer"}, status=404)
    return self.json({"customer_id": customer_id, **summary(profile, PROFILE_CONFIG)})


@app.page("/metrics")
async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
    """Prometheus exposition of this worker's metrics."""
    # aiohttp refuses a charset inside content_type; the exposition is UTF-8 anyway.
    return self.bytes(generate_latest(metrics.registry), content_type=PROMETHEUS_TEXT)


@app.page("/readyz")
async def readyz(self: web.View, request: web.Request) -> web.Response:
    """Readiness: partitions assigned, no rebalance running, tables recovered."""
    recovered = app.tables.recovery.completed.is_set()
    assigned = bool(app.consumer.assignment()) if app.consumer else False
    ready = recovered and assigned and not app.rebalancing and not app.in_recovery
    body = {"ready": ready, "recovered": recovered, "assigned": assigned}
    return self.json(body, status=200 if ready else 503)
