"""The worker: the Faust app with every topic, table, agent, timer and view registered.

``faust -A streams.worker worker`` and ``segstream worker`` both load this
module. :mod:`streams.app` only builds the app, so every module of the
worker imports on its own, in any order.
"""

from __future__ import annotations

from streams import agents, model_sync, web
from streams.app import app, settings

__all__ = ["agents", "app", "model_sync", "settings", "web"]
