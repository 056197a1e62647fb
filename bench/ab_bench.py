"""Two versions of the worker side by side: same broker, same workload, alternating runs.

    .venv/bin/python -m bench.ab_bench --before /tmp/segstream-before [--customers 1000]
        [--days 60] [--repeats 3] [--definitions] [--out bench/results/ab.json]

``--before`` is a checkout of another commit (``git worktree add DIR COMMIT``);
``--after`` defaults to this tree. Both run the default worker (batches and
the write-back cache, as ``pipeline_bench``'s ``batched`` mode) over one
pre-produced simulator workload, each run with a fresh consumer group and
state, alternating before/after so machine noise falls on both alike. A
worker runs its tree's code: ``PYTHONPATH`` names the tree and
``PYTHONSAFEPATH`` keeps the working directory off ``sys.path``.

Which version goes first alternates from pair to pair. With
``--definitions`` both read the audiences bench's file (20 traits, 20
audiences: :func:`bench.audiences_bench.definitions_text`), for a change to
their cost smaller than the machine's drift between two runs of that bench
(the runs with the file have swung by 35 µs of worker CPU per event from one
run to the next).

Reported per version: events/s of every run (from ready to the last event),
the best and the median; the steady rate (between 10% and 90% of the
workload, leaving out assignment, recovery and the first fetch) and the
seconds to the first event; the worker's CPU per event, ready to done; the
after/before ratios of the medians, and each pair's ratio of CPU per event
(before over after: above 1, the after version is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.audiences_bench import cpu_per_event, definitions_text
from bench.machine import describe, save_results
from bench.pipeline_bench import RESULTS, Workload, median_ratios, run_mode, summarise_runs

HERE = Path(__file__).resolve().parents[1]


def tree_commit(tree: Path) -> str | None:
    """The commit a tree is checked out at (with ``+changes`` if it has uncommitted ones)."""
    git = shutil.which("git")
    if git is None:
        return None
    head = subprocess.run(  # noqa: S603 - fixed argv
        [git, "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(  # noqa: S603 - fixed argv
        [git, "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def cpu_pair_ratios(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[float]:
    """Each pair's worker CPU per event, before over after (above 1: after is faster).

    >>> before, after = {"worker_cpu_s": 2.2, "events": 10}, {"worker_cpu_s": 2.0, "events": 10}
    >>> cpu_pair_ratios([before], [after])
    [1.1]
    """
    return [
        round((b["worker_cpu_s"] / b["events"]) / (a["worker_cpu_s"] / a["events"]), 3)
        for b, a in zip(before, after, strict=True)
    ]


def run_tree(
    tree: Path,
    label: str,
    bootstrap: str,
    prefix: str,
    expected: int,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One batched-mode run of the worker in ``tree``."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ["PYTHONPATH"] = str(tree)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        result = run_mode("batched", bootstrap, prefix, expected, workdir / label, extra_env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=HERE)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--definitions", action="store_true", help="both with the audiences bench's file"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ab.json")
    args = parser.parse_args()

    workload = Workload.produce(args.customers, args.days, "ab")
    events, workdir, broker, prefix = (
        workload.events,
        workload.workdir,
        workload.broker,
        workload.prefix,
    )
    extra: dict[str, str] = {}
    if args.definitions:
        definitions = workdir / "definitions.yaml"
        definitions.write_text(definitions_text())
        extra["DEFINITIONS_FILE"] = str(definitions)
    try:
        trees = {"before": args.before.resolve(), "after": args.after.resolve()}
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for n in range(args.repeats):
            # Which goes first alternates, so a drift of the machine falls on both.
            for label in ("before", "after") if n % 2 == 0 else ("after", "before"):
                # Every run on topics of its own (Workload.fresh_prefix).
                topics = prefix if n == 0 and label == "before" else workload.fresh_prefix()
                result = run_tree(
                    trees[label],
                    f"{label}{n}",
                    broker.bootstrap,
                    topics,
                    len(events),
                    workdir,
                    extra,
                )
                runs[label].append(result)
                print(label, n, result, flush=True)
                time.sleep(2)
        summary = {
            label: {
                "tree": str(trees[label]),
                "commit": tree_commit(trees[label]),
                **summarise_runs(results, len(events)),
            }
            for label, results in runs.items()
        }
        whole, steady = median_ratios(summary["after"], summary["before"])
        cpu = {label: cpu_per_event(results) for label, results in runs.items()}
        pairs = cpu_pair_ratios(runs["before"], runs["after"])
        save_results(
            {
                "benchmark": "ab",
                "machine": describe(),
                "kafka": broker.version,
                "workload": {
                    "customers": args.customers,
                    "days": args.days,
                    "events": len(events),
                    "definitions": "bench.audiences_bench" if args.definitions else None,
                },
                "versions": summary,
                "after_over_before_median": whole,
                "after_over_before_steady_median": steady,
                "cpu_us_per_event": cpu,
                "before_over_after_cpu_of_each_pair": pairs,
                "before_over_after_cpu_median": statistics.median(pairs),
            },
            args.out,
            echo=True,
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
