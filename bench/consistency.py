"""Do served profiles agree with themselves? Contradictions per kind, measured.

    .venv/bin/python -m bench.consistency [--customers 400] [--days 150] [--seed 21] [--out FILE]

Simulates a history, replays it through ``segstream evaluate``'s engine and
checks every profile's ``segments`` against what its own metrics and scores
imply as of ``as_of_ms`` — allowing for the dwell and hysteresis rules: a
segment held back by dwell is not a contradiction when the profile says so
(``segments.<dim>.pending``). Counted per kind:

* ``rfm_segment``: not the map of the profile's own R, F and M scores;
* ``churn_risk``: outside the band of ``scores.churn_probability`` (with
  hysteresis: a value the band function keeps given itself);
* ``churned_but_low``: lifecycle ``churned`` and churn_risk ``low``;
* ``engagement``: not the level of ``windows.30d.sessions``;
* ``loyalty``: not the quadrant of ``windows.90d.orders`` × ``windows.30d.sessions``;
* ``persona``: not ``scores.persona``;
* ``preferred_channel``: not the profile's ``preferred_channel``;
* ``lifecycle``: not the stage of the profile's own order dates.

Also reported: how many profiles show a ``pending`` value, per dimension.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.machine import describe, save_results
from models.segments import (
    SegmentConfig,
    churn_risk_band,
    engagement_level,
    lifecycle_stage,
    loyalty_quadrant,
    rfm_segment,
)
from models.simulator import SimConfig, simulate

RESULTS = Path(__file__).resolve().parent / "results"


def contradictions(profile: dict[str, Any], config: SegmentConfig) -> set[str]:
    """The kinds of contradiction in one served profile."""
    found: set[str] = set()
    segments = profile["segments"]

    def shown(dim: str) -> str | None:
        entry = segments.get(dim)
        if entry is None:
            return None
        # A change held back by dwell, said so, is no contradiction.
        return str(entry.get("pending", {}).get("value", entry["value"]))

    def check(dim: str, expected: str | None, also: str | None = None) -> None:
        if (
            dim in segments
            and expected is not None
            and expected
            not in (
                segments[dim]["value"],
                shown(dim),
                also,
            )
        ):
            found.add(dim)

    rfm = profile["rfm"]
    if rfm is not None:
        check("rfm_segment", rfm_segment(rfm["r"], rfm["f"], rfm["m"]))
    p = profile["scores"]["churn_probability"]
    band = segments.get("churn_risk", {}).get("value")
    lifecycle = segments.get("lifecycle", {}).get("value")
    if band is not None and p is not None:
        check("churn_risk", churn_risk_band(p, band, config, lifecycle))
    if band == "low" and segments.get("lifecycle", {}).get("value") == "churned":
        found.add("churned_but_low")
    windows = profile["windows"]
    sessions_30d = windows["30d"]["sessions"]
    check("engagement", engagement_level(sessions_30d, config))
    check("loyalty", loyalty_quadrant(windows["90d"]["orders"], sessions_30d, config))
    check("persona", profile["scores"]["persona"])
    check("preferred_channel", profile["preferred_channel"])
    purchases = profile["purchases"]
    facts = {
        "first_order_ms": purchases["first_order_ms"],
        "last_order_ms": purchases["last_order_ms"],
        "lifecycle_returned_ms": None,
    }
    stage, _ = lifecycle_stage(facts, profile["as_of_ms"], None, config)  # type: ignore[arg-type]
    # "reactivated" needs the return time, which the summary does not show.
    if lifecycle not in (stage, "reactivated") and stage != "active":
        found.add("lifecycle")
    return found


def measure(customers: int, days: int, seed: int) -> dict[str, Any]:
    """Contradictions per kind over every profile of one simulated history."""
    os.environ.setdefault("SEGSTREAM_MODEL_SNAPSHOT_KEY", secrets.token_hex(16))
    os.environ.setdefault("SEGSTREAM_AUDIT_HASH_KEY", secrets.token_hex(16))
    from streams.offline import evaluate
    from streams.settings import Settings

    settings = Settings(_env_file=None)
    events, _ = simulate(SimConfig(customers=customers, days=days, seed=seed))
    run = evaluate(events, settings)
    profiles = list(run.summaries())
    config = settings.segment_config()
    counts: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for profile in profiles:
        counts.update(contradictions(profile, config))
        pending.update(d for d, entry in profile["segments"].items() if "pending" in entry)
    buyers = sum(1 for p in profiles if p["purchases"]["last_order_ms"] is not None)
    churned = sum(
        1 for p in profiles if p["segments"].get("lifecycle", {}).get("value") == "churned"
    )
    return {
        "history": f"simulator, {customers} customers, {days} days, seed {seed}",
        "profiles": len(profiles),
        "buyers": buyers,
        "churned": churned,
        "contradictions": dict(sorted(counts.items())),
        "share_of_profiles": {k: round(v / len(profiles), 4) for k, v in sorted(counts.items())},
        # profiles whose segment in a dimension is shown with a pending value
        "pending_shown": dict(sorted(pending.items())),
        "churned_but_low_share_of_churned": round(counts["churned_but_low"] / churned, 4)
        if churned
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    result = measure(args.customers, args.days, args.seed)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        save_results({"benchmark": "consistency", "machine": describe(), **result}, args.out)


if __name__ == "__main__":
    main()
