"""What 20 traits and 20 audiences cost the worker: events/s with and without them.

    .venv/bin/python -m bench.audiences_bench [--customers 1000] [--days 60] [--repeats 3]
        [--out bench/results/audiences.json]

One pre-produced simulator workload on a local broker (as ``ab_bench``);
the default worker (batches, write-back cache) reads it from the start with
a fresh consumer group and state, alternating runs without a definitions
file and with :func:`definitions_text` (20 traits over every topic, windows
of 7 to 90 days and lifetime, filters on properties; 20 audiences over
traits, metrics, scores, segments, other audiences and ``days_since``), each
pair in the other order from the one before, so machine noise falls on both
alike. Reported: events/s of each run, the medians, and with/without; with
each run, the CPU the worker and the machine used from ready to done (the
worker is bound by its own CPU, so its CPU per event shows the file's cost
without the machine's waits), and the medians of the worker's CPU per event.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.machine import describe, save_results
from bench.pipeline_bench import RESULTS, Workload, median_ratios, run_mode, summarise_runs
from models.audiences import METRICS
from models.definitions import load_definitions

_TRAITS = [
    # (name, aggregate, topic, type, property, window_days, where)
    ("orders_7d", "count", "purchases", "order", None, 7, None),
    ("orders_30d", "count", "purchases", "order", None, 30, None),
    ("orders_90d", "count", "purchases", "order", None, 90, None),
    ("orders_ever", "count", "purchases", "order", None, None, None),
    ("revenue_30d", "sum", "purchases", "order", "amount", 30, None),
    ("revenue_90d", "sum", "purchases", "order", "amount", 90, None),
    ("avg_order_90d", "avg", "purchases", "order", "amount", 90, None),
    ("biggest_order", "max", "purchases", "order", "amount", None, None),
    ("discounted_90d", "count", "purchases", "order", None, 90, ("discount", ">", 0)),
    ("refunds_90d", "count", "purchases", "refund", None, 90, None),
    ("page_views_7d", "count", "clickstream", "page_view", None, 7, None),
    ("page_views_30d", "count", "clickstream", "page_view", None, 30, None),
    ("product_views_30d", "count", "clickstream", "product_view", None, 30, None),
    ("carts_30d", "count", "clickstream", "add_to_cart", None, 30, None),
    ("email_clicks_30d", "count", "clickstream", "email_click", None, 30, None),
    ("app_opens_30d", "count", "clickstream", "app_open", None, 30, None),
    ("categories_30d", "distinct_count", "clickstream", "product_view", "category", 30, None),
    ("tickets_30d", "count", "support", "ticket_opened", None, 30, None),
    (
        "urgent_tickets_90d",
        "count",
        "support",
        "ticket_opened",
        None,
        90,
        ("priority", "==", "urgent"),
    ),
    ("last_nps", "latest", "support", "nps_response", "score", None, None),
]
_AUDIENCES = [
    "orders_30d >= 2",
    "orders_7d >= 1 and revenue_30d >= 100",
    "orders_ever >= 3 and orders_90d == 0",
    "revenue_90d >= 500",
    "avg_order_90d >= 80 and discounted_90d == 0",
    "biggest_order >= 300",
    "discounted_90d >= 2",
    "refunds_90d >= 1",
    "page_views_7d >= 10 and orders_30d == 0",
    "page_views_30d >= 30",
    "product_views_30d >= 10 and carts_30d == 0",
    "carts_30d >= 2 and orders_7d == 0",
    "email_clicks_30d >= 2",
    "app_opens_30d >= 5",
    "categories_30d >= 3",
    "tickets_30d >= 2 or urgent_tickets_90d >= 1",
    "last_nps != null and last_nps <= 6",
    'segment.churn_risk == "high" and revenue_90d >= 200',
    "metric.orders >= 1 and days_since(metric.last_order_at) > 45",
    "audience.a01 and audience.a04",
]


def definitions_text() -> str:
    """The benchmark's definitions file: 20 traits and 20 audiences."""
    lines = ["version: 1", "traits:"]
    for name, aggregate, topic, type_, prop, window, where in _TRAITS:
        fields = [f"aggregate: {aggregate}", f"topic: {topic}", f"type: {type_}"]
        if prop:
            fields.append(f"property: {prop}")
        if window:
            fields.append(f"window_days: {window}")
        if where:
            value = where[2] if isinstance(where[2], int) else f'"{where[2]}"'
            fields.append(f'where: [{{property: {where[0]}, op: "{where[1]}", value: {value}}}]')
        lines.append(f"  {name}: {{{', '.join(fields)}}}")
    lines.append("audiences:")
    for n, condition in enumerate(_AUDIENCES):
        lines.append(f"  a{n:02d}: {{when: '{condition}'}}")
    return "\n".join(lines) + "\n"


def cpu_per_event(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker's CPU µs per event of each run, ready to done, and their median.

    >>> cpu_per_event([{"worker_cpu_s": 2.0, "events": 10_000}])
    {'of_each_run': [200.0], 'median': 200.0}
    """
    whole = [round(r["worker_cpu_s"] / r["events"] * 1e6, 1) for r in results]
    return {"of_each_run": whole, "median": statistics.median(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "audiences.json")
    args = parser.parse_args()
    text = definitions_text()
    loaded = load_definitions(text, known_metrics=METRICS)
    assert (len(loaded.traits), len(loaded.audiences)) == (20, 20)  # noqa: S101 - the bench's own file

    workload = Workload.produce(args.customers, args.days, "aud")
    events, workdir, broker, prefix = (
        workload.events,
        workload.workdir,
        workload.broker,
        workload.prefix,
    )
    definitions = workdir / "definitions.yaml"
    definitions.write_text(text)
    try:
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for n in range(args.repeats):
            # Alternating which goes first, so a drift of the machine falls on both.
            for label in ("without", "with") if n % 2 == 0 else ("with", "without"):
                extra = {"DEFINITIONS_FILE": str(definitions)} if label == "with" else {}
                where = workdir / f"{label}{n}"
                # Every run on topics of its own (Workload.fresh_prefix).
                topics = prefix if n == 0 and label == "without" else workload.fresh_prefix()
                result = run_mode("batched", broker.bootstrap, topics, len(events), where, extra)
                result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
                runs[label].append(result)
                print(label, n, result, flush=True)
                time.sleep(2)
        summary = {label: summarise_runs(results, len(events)) for label, results in runs.items()}
        whole, steady = median_ratios(summary["with"], summary["without"])
        cpu = {label: cpu_per_event(results) for label, results in runs.items()}
        save_results(
            {
                "benchmark": "audiences",
                "machine": describe(),
                "kafka": broker.version,
                "workload": {"customers": args.customers, "days": args.days, "events": len(events)},
                "definitions": {"traits": 20, "audiences": 20},
                "runs": summary,
                "with_over_without_median": whole,
                "with_over_without_steady_median": steady,
                "cpu_us_per_event": cpu,
                # Events per worker CPU second, with over without (µs per event inverted).
                "with_over_without_cpu_median": round(
                    cpu["without"]["median"] / cpu["with"]["median"], 3
                ),
            },
            args.out,
            echo=True,
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
