"""Late events and sessions when the worker reads a backlog, jumps its
watermark or restarts: what the worker's batch path (release, then
``update_customer`` against the watermark read before the batch) does with
one customer's events, against the offline replay of the same history."""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

from models.pipeline import new_population, update_customer
from models.profile import DAY_MS, MAX_CLOSED_SESSIONS, ProfileConfig, event, window_totals
from models.reorder import release

CONFIG = ProfileConfig()
MINUTE = 60_000


def history(days: int, seed: int) -> list[dict[str, Any]]:
    """A customer's sessions (a few clicks each) and orders over ``days``, in event time."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for day in range(days):
        for n in range(rng.randint(1, 3)):
            start = (100 + day) * DAY_MS + rng.randrange(0, 20 * 3600_000)
            session = f"s{day}-{n}"
            for i in range(rng.randint(2, 5)):
                ts = start + i * rng.randrange(10_000, 5 * MINUTE)
                events.append(
                    event("clickstream", "page_view", ts, f"{session}-{i}", session_id=session)
                )
            if rng.random() < 0.3:
                events.append(
                    event("purchases", "order", start + 20 * MINUTE, f"o{session}", amount=9.0)
                )
    return sorted(events, key=lambda e: (e["ts"], e["event_id"]))


def offline(events: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[str]]:
    """``segstream evaluate``: one event at a time, the watermark the latest event time."""
    profile, population, outcomes, watermark = None, new_population(), Counter[str](), None
    for item in events:
        profile, got = update_customer(profile, [item], population, CONFIG, None, watermark)
        outcomes.update(got)
        watermark = max(watermark or 0, int(item["ts"]))
    assert profile is not None
    return profile, outcomes


def live(
    arrivals: list[list[dict[str, Any]]],
    before: list[int],
    release_at: list[int],
    config: ProfileConfig = CONFIG,
) -> tuple[dict[str, Any], Counter[str]]:
    """The worker: per batch, release what the watermark reached, apply it against
    the closing watermark read before the batch; hold the rest."""
    profile, population, outcomes, held = None, new_population(), Counter[str](), []
    for batch, watermark_before, released_to in zip(arrivals, before, release_at, strict=True):
        ready, held, _ = release(held, batch, released_to, max_held=200)
        if ready:
            profile, got = update_customer(
                profile, ready, population, config, None, watermark_before
            )
            outcomes.update(got)
    assert profile is not None and not held
    return profile, outcomes


def event_windows(profile: dict[str, Any], days: int) -> dict[str, float]:
    """A window's counters of events (sessions and carts, decided later, left out)."""
    episodes = ("session", "carts_")
    return {k: v for k, v in window_totals(profile, days).items() if not k.startswith(episodes)}


def sessions(profile: dict[str, Any]) -> int:
    return int(profile["totals"].get("sessions", 0)) + len(profile["sessions"])


def test_a_backlog_read_behind_a_watermark_that_ran_days_ahead_is_not_late() -> None:
    events = history(days=20, seed=7)
    want, offline_outcomes = offline(events)
    # Read in batches of 25 while the closing watermark read before each batch
    # is 3 days ahead of it (a topic read ahead of the clickstream, then idle).
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    ahead = [int(b[-1]["ts"]) + 3 * DAY_MS for b in batches]
    got, outcomes = live(batches, ahead, [int(b[-1]["ts"]) for b in batches])
    assert offline_outcomes["late"] == 0 and outcomes["late"] == 0
    assert got["late_events"] == 0
    for days in CONFIG.windows_days:
        assert event_windows(got, days) == event_windows(want, days), days
    assert got["lifetime"] == want["lifetime"]


def test_out_of_order_in_window_events_count_and_one_beyond_every_window_is_late() -> None:
    events = history(days=20, seed=8)
    end = int(events[-1]["ts"])
    # A backlog whose topics arrive out of order (orders first), all inside the windows...
    orders = [e for e in events if e["topic"] == "purchases"]
    clicks = [e for e in events if e["topic"] != "purchases"]
    stale = event("clickstream", "page_view", end - 91 * DAY_MS, "stale", session_id="old")
    arrivals = [orders, clicks, [stale]]
    # (A click that old is stale with the default week of dedup memory; with a
    # memory longer than the windows, it is late.)
    long_memory = ProfileConfig(dedup_window_ms=100 * DAY_MS)
    got, outcomes = live(arrivals, [0, end, end], [end, end, end], long_memory)
    # ...counts in the windows; only the click 91 days before the last event is late.
    assert outcomes["late"] == 1 and got["late_events"] == 1
    want, _ = offline(events)
    assert event_windows(got, 90) == event_windows(want, 90)
    assert got["lifetime"]["clickstream.page_view"] == want["lifetime"]["clickstream.page_view"] + 1


def test_sessions_do_not_depend_on_batches_watermark_jumps_or_a_restart() -> None:
    events = history(days=30, seed=9)
    want, _ = offline(events)
    rng = random.Random(4)
    for _ in range(20):
        profile, population, watermark = None, new_population(), 0
        checkpoint: tuple[Any, int] = (None, 0)
        i = 0
        while i < len(events):
            batch = events[i : i + rng.randint(1, 40)]
            # Before the batch: caught up, days ahead (idle topics), or 0 (just restarted).
            before = rng.choice([watermark, watermark + rng.randrange(3 * DAY_MS), 0])
            profile, _ = update_customer(profile, batch, population, CONFIG, None, before)
            watermark = max(watermark, int(batch[-1]["ts"]))
            i += len(batch)
            if rng.random() < 0.2:
                checkpoint = (copy.deepcopy((profile, population)), i)
            elif rng.random() < 0.1 and checkpoint[0] is not None:
                # kill -9: state as last written, events since the commit read again.
                (profile, population), written = copy.deepcopy(checkpoint[0]), checkpoint[1]
                i = max(written - rng.randint(0, 40), 0)
        assert profile is not None
        assert sessions(profile) == sessions(want)
        assert profile["lifetime"] == want["lifetime"]


def test_stitched_browsing_read_after_sixteen_later_sessions_closed_counts_as_a_session_again() -> (
    None
):
    """The known gap behind a kill -9 run counting a session twice.

    Browsing before a login is re-sent under the customer's id at the login
    and read back later than the clicks after it; after a crash (or in a
    backlog) the anonymous id's partition can lag the customer's far enough
    that the session has closed and left the profile's memory of closed
    sessions (MAX_CLOSED_SESSIONS). Read then, it opens the session again.
    """
    events = history(days=30, seed=10)
    first = events[0]["session_id"]
    anonymous = event(
        "clickstream",
        "page_view",
        int(events[0]["ts"]) - 1000,
        "anon-1",
        session_id=first,
        stitched=True,
        identified_by="login-1",  # held until the login, then released
    )
    want, _ = offline(sorted([anonymous, *events], key=lambda e: (e["ts"], e["event_id"])))
    in_time, _ = offline([*events[:3], anonymous, *events[3:]])
    late, _ = offline([*events, anonymous])
    assert sessions(in_time) == sessions(want)
    closed_after = len({e["session_id"] for e in events if "session_id" in e}) - 1
    assert closed_after > MAX_CLOSED_SESSIONS
    assert sessions(late) == sessions(want) + 1
    assert late["lifetime"] == want["lifetime"]  # no event counted twice


def test_with_the_default_memory_a_topic_read_weeks_after_another_is_not_stale() -> None:
    events = history(days=20, seed=8)
    end = int(events[-1]["ts"])
    orders = [e for e in events if e["topic"] == "purchases"]
    clicks = [e for e in events if e["topic"] != "purchases"]
    default = ProfileConfig()
    profile, population, outcomes = None, new_population(), Counter[str]()
    for item in [*orders, *clicks]:
        profile, got = update_customer(profile, [item], population, default, None, end)
        outcomes.update(got)
    assert outcomes == Counter(applied=len(events))
    # A click over a week older than the latest click is stale: a replay, or
    # a producer that broke the topic's order by that much.
    last_click = max(int(e["ts"]) for e in clicks)
    old = event("clickstream", "page_view", last_click - 8 * DAY_MS, "new-but-old")
    _, (outcome,) = update_customer(profile, [old], population, default, None, end)
    assert outcome == "stale"
