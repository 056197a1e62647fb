"""The worker: the Faust app with every topic, table, agent, timer and view registered.

``faust -A streams.worker worker`` and ``segstream worker`` both load this
module. :mod:`streams.app` only builds the app, so every module of the
worker imports on its own, in any order.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Final

import faust

from streams import agents, model_sync, web
from streams.app import app, settings
from streams.engines import MARKER
from streams.internals import deliver_in_line
from streams.state_cache import recover_interrupted_flush

__all__ = [
    "agents",
    "app",
    "model_sync",
    "prepare_worker",
    "recover_local_tables",
    "settings",
    "tune_gc",
    "web",
]

# Allocations (net of frees) between two young collections; Python's default is 700.
GC_YOUNG_THRESHOLD: Final = 10_000


def tune_gc() -> None:
    """Set Python's cyclic garbage collector for a long-running worker.

    A worker holds a large, long-lived heap (the app, the models, the cached
    profiles), and each full collection walks all of it: with Python's
    defaults, a worker spent 1.7 to 2.4 s of its 30 to 32 s of CPU in
    collections over the ab bench's 97,000 events (three runs); with these
    settings, 0.4 to 0.5 s. What exists once the worker is loaded is frozen
    (never walked again), and young collections run every 10,000
    allocations instead of 700, so older generations are reached less
    often. Garbage cycles are still collected, a little later. Idempotent.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def recover_local_tables() -> list[int]:
    """Before the stores open: drop local tables a killed worker left half-written.

    Those partitions are restored from their changelog topics
    (:func:`streams.state_cache.recover_interrupted_flush`). Returns them.
    """
    if MARKER is None:
        return []
    return recover_interrupted_flush(MARKER, Path(app.conf.tabledir))


def prepare_worker() -> None:
    """What a worker does before it serves: the local tables a killed worker
    left half-written dropped (:func:`recover_local_tables`), the garbage
    collector tuned (:func:`tune_gc`), and fetched messages delivered in
    line (:func:`streams.internals.deliver_in_line`)."""
    recover_local_tables()
    tune_gc()
    deliver_in_line(app.consumer)


@app.on_worker_init.connect
def _prepare_worker(sender: faust.App, /, *args: Any, **kwargs: Any) -> None:
    # `faust -A streams.worker worker` sends this before serving; `segstream
    # worker` calls prepare_worker itself.
    prepare_worker()
