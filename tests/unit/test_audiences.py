"""The user's traits and audiences in the partition engine and ``evaluate``.

An audience is a segment dimension ``audience.<name>`` (``in``/``out``):
entering and leaving publish segment changes with the rule's values as the
reason, the first entry is ``initial``, time alone moves customers in and
out (trait windows, ``days_since``), and a removed audience publishes exits.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import models.audiences
from models.audiences import (
    Memberships,
    answering_traits,
    backfilling_audiences,
    backfilling_traits,
    edge_can_move,
    evaluate_moved,
    falls_only,
    metrics,
    next_band_change,
    next_edge,
    next_turn,
    sync_traits,
    synced_digest,
    trait_band,
    trait_states,
)
from models.definitions import Audience, Context, Trait, TraitValues, load_definitions
from models.engine import (
    EngineConfig,
    PartitionEngine,
    PartitionStores,
    Watermarks,
    population_key,
)
from models.pipeline import customer_view, partition_population
from models.profile import DAY_MS, event
from models.profile_summary import ValueConfig
from models.segments import Segmenter
from models.simulator import SimConfig, simulate, write_outputs
from models.training import ModelBundle, ModelConfig
from streams.cli.commands import cli
from streams.offline import evaluate
from streams.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "audiences.yaml"
T0 = 1_780_000_000_000 // DAY_MS * DAY_MS  # a UTC midnight

DEFINITIONS = """
version: 1
traits:
  store_visits_30d: {aggregate: count, topic: clickstream, type: store_visit, window_days: 30}
  big_orders:
    aggregate: count
    topic: purchases
    type: order
    where: [{property: amount, op: ">=", value: 100}]
audiences:
  store_regular:
    when: "store_visits_30d >= 2"
  cooling_down:
    when: "metric.orders >= 1 and days_since(metric.last_order_at) > 10"
  big_spender:
    when: "big_orders >= 1"
"""


def engine_with(text: str) -> PartitionEngine:
    config = replace(EngineConfig.default(), definitions=load_definitions(text))
    return PartitionEngine(0, PartitionStores.in_memory(), config)


def two_engines(
    text: str, history: list[dict[str, Any]]
) -> tuple[PartitionEngine, PartitionEngine]:
    """Two engines under ``text`` that applied the same ``history`` (up to its
    last event): one to alter as an earlier release left it, one to compare."""
    engines = engine_with(text), engine_with(text)
    for engine in engines:
        engine.submit(history, Watermarks.up_to(max(int(e["ts"]) for e in history)))
    return engines


def run(engine: PartitionEngine, records: list[dict[str, Any]], until: int) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for record in records:
        changes += engine.submit([record], Watermarks.up_to(int(record["ts"]))).changes
    changes += engine.advance(Watermarks.up_to(until)).changes
    return [c for c in changes if c["dimension"].startswith("audience.")]


def visit(ts: int, n: int) -> dict[str, Any]:
    return event("clickstream", "track", ts, f"v{n}", customer_id="c1", name="store_visit")


def order(ts: int, n: int, amount: float) -> dict[str, Any]:
    return event(
        "purchases", "order", ts, f"o{n}", customer_id="c1", order_id=f"o{n}", amount=amount
    )


def test_custom_events_move_a_customer_into_an_audience_and_the_window_moves_them_out() -> None:
    engine = engine_with(DEFINITIONS)
    day = DAY_MS
    changes = run(engine, [visit(T0 + 3_600_000, 1), visit(T0 + 2 * day, 2)], T0 + 40 * day)
    store = [c for c in changes if c["dimension"] == "audience.store_regular"]
    assert [(c["from_segment"], c["to_segment"]) for c in store] == [(None, "in"), ("in", "out")]
    entered, left = store
    assert entered["ts"] == T0 + 2 * day and entered.get("initial") is True
    assert "store_visits_30d=2" in entered["reason"]
    # The first visit's day leaves the 30-day window at the start of day 30.
    assert left["ts"] == T0 + 30 * day
    assert "initial" not in left
    # Nobody is told they are not in an audience they never entered.
    assert not [c for c in changes if c["dimension"] == "audience.cooling_down"]


SCORE_READING = """
version: 1
traits:
  store_visits_30d: {aggregate: count, topic: clickstream, type: store_visit, window_days: 30}
audiences:
  store_regular: {when: "store_visits_30d >= 2 and score.churn_probability >= 0"}
"""


@pytest.mark.parametrize("reads_scores", [False, True])
def test_an_audiences_decision_carries_the_scores_of_the_latest_full_decision(
    monkeypatch: pytest.MonkeyPatch, reads_scores: bool
) -> None:
    """The window takes the customer out of ``store_regular`` on day 30, a
    moment no built-in dimension is decided at: the change record carries
    the scores of the latest full decision before it (those the built-in
    segments held then stand on), with the time they are as of, and the
    model is not scored there. An audience that reads a score is scored at
    the moment itself."""
    scored: dict[int, dict[str, Any]] = {}
    scoring = Segmenter._scored

    def spied(self: Segmenter, profile: Any, now_ms: int, population: Any) -> Any:
        result = scoring(self, profile, now_ms, population)
        scored[now_ms] = result.snapshot
        return result

    monkeypatch.setattr(Segmenter, "_scored", spied)
    engine = engine_with(SCORE_READING if reads_scores else DEFINITIONS)
    visits = [visit(T0 + 3_600_000, 1), visit(T0 + 2 * DAY_MS, 2)]
    changes = run(engine, visits, T0 + 40 * DAY_MS)
    left = next(c for c in changes if c["to_segment"] == "out")
    assert left["dimension"] == "audience.store_regular" and left["ts"] == T0 + 30 * DAY_MS
    if reads_scores:
        assert left["scores"] == scored[left["ts"]]
        return
    assert left["ts"] not in scored
    as_of = left["scores"]["as_of_ms"]
    assert as_of == max(t for t in scored if t < left["ts"])
    assert left["scores"] == {**scored[as_of], "as_of_ms": as_of}
    assert left["model_version"] == engine.stores.profiles.get("c1")["scores_decided"][1]


def test_time_since_an_order_moves_a_customer_in_at_its_threshold() -> None:
    engine = engine_with(DEFINITIONS)
    changes = run(engine, [order(T0 + 5_000, 1, 120.0)], T0 + 20 * DAY_MS)
    by_dim = {c["dimension"]: c for c in changes}
    assert by_dim["audience.big_spender"]["ts"] == T0 + 5_000
    cooling = by_dim["audience.cooling_down"]
    # days_since(last order) > 10 first holds just after 10 days.
    assert T0 + 5_000 + 10 * DAY_MS < cooling["ts"] <= T0 + 5_000 + 10 * DAY_MS + 1
    assert cooling["to_segment"] == "in"


def test_a_removed_audience_publishes_exits_and_an_unchanged_trait_keeps_its_state() -> None:
    engine = engine_with(DEFINITIONS)
    run(engine, [visit(T0, 1), visit(T0 + 1_000, 2), order(T0 + 2_000, 3, 150.0)], T0 + 3_000)
    fewer = DEFINITIONS.replace('  big_spender:\n    when: "big_orders >= 1"\n', "")
    engine.config = replace(engine.config, definitions=load_definitions(fewer))
    changes = run(engine, [visit(T0 + DAY_MS, 4)], T0 + DAY_MS + 1)
    exits = [c for c in changes if c["dimension"] == "audience.big_spender"]
    assert [(c["from_segment"], c["to_segment"]) for c in exits] == [("in", "out")]
    assert exits[0]["reason"] == "audience removed from the definitions"
    profile = engine.stores.profiles.get("c1")
    assert "audience.big_spender" not in profile["segments"]
    # store_visits_30d's definition did not change: its state held, now three visits.
    trait = engine.config.definitions.traits["store_visits_30d"]
    assert trait.value(profile["traits"][trait.fingerprint], T0 + DAY_MS + 1) == 3
    # The removed audience's trait is not kept.
    assert len(profile["traits"]) == 2


def test_evaluate_with_the_example_file_publishes_audiences_that_agree_with_the_profiles(
    tmp_path: Path,
) -> None:
    definitions = tmp_path / "audiences.yaml"
    shutil.copy(EXAMPLE, definitions)
    events, _ = simulate(SimConfig(customers=120, days=60, seed=31))
    settings = Settings(_env_file=None, store="memory", definitions_file=definitions)
    run_ = evaluate(events, settings)
    changes = [c for c in run_.outputs.changes if c["dimension"].startswith("audience.")]
    assert {c["dimension"] for c in changes} >= {
        "audience.browser_never_bought",
        "audience.repeat_buyer_cooling_down",
    }
    for profile in run_.summaries():
        shown = set(profile["audiences"])
        # As of the last decision, the stored membership is what the rules give
        # (or the profile says the move is pending).
        for name in ("browser_never_bought", "repeat_buyer_cooling_down", "vip_at_risk"):
            entry = profile["segments"].get(f"audience.{name}")
            stored = {entry["value"], entry.get("pending", {}).get("value")} if entry else {"out"}
            assert ("in" if name in shown else "out") in stored, (profile["customer_id"], name)
        never = profile["lifetime"]["orders"] == 0 and profile["windows"]["30d"]["sessions"] >= 3
        assert ("browser_never_bought" in shown) == never


def test_the_backtest_shows_daily_sizes_that_match_the_changes_published(
    tmp_path: Path,
) -> None:
    config = SimConfig(customers=60, days=40, seed=12)
    write_outputs(config, tmp_path)
    history = tmp_path / "events.jsonl"
    out = tmp_path / "backtest.json"
    args = ["audiences", "backtest", "--definitions", str(EXAMPLE), "--input", str(history)]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "audience browser_never_bought" in result.output
    body = orjson.loads(out.read_bytes())
    daily = body["audiences"]
    assert set(daily) == set(load_definitions(EXAMPLE.read_text()).audiences)
    # The same engine through evaluate: final sizes are its members at the end.
    settings = Settings(_env_file=None, store="memory", definitions_file=EXAMPLE)
    published = evaluate(simulate(config)[0], settings).outputs.changes
    moves = [c for c in published if c["dimension"].startswith("audience.")]
    members = Counter(c["dimension"] for c in moves if c["to_segment"] == "in")
    members.subtract(c["dimension"] for c in moves if c["to_segment"] != "in")
    for name, rows in daily.items():
        assert rows[-1]["size"] == members[f"audience.{name}"], name
        assert sum(r["entered"] - r["exited"] for r in rows) == rows[-1]["size"]
    assert sum(rows[-1]["size"] for rows in daily.values()) > 0
    csv_out = tmp_path / "backtest.csv"
    assert CliRunner().invoke(cli, [*args, "--out", str(csv_out)]).exit_code == 0
    header, *lines = csv_out.read_text().splitlines()
    assert header == "audience,day,size,entered,exited"
    assert len(lines) == sum(len(rows) for rows in daily.values())


def test_a_broken_definitions_file_stops_the_backtest_with_the_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\naudiences:\n  x:\n    when: 'orders_30d >= 2 and'\n")
    write_outputs(SimConfig(customers=5, days=3, seed=1), tmp_path)
    args = ["audiences", "backtest", "--definitions", str(broken)]
    result = CliRunner().invoke(cli, [*args, "--input", str(tmp_path / "events.jsonl")])
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # the console folds long lines
    assert "broken.yaml line 4, audiences.x.when" in said
    assert "expected a trait defined in this file, got 'orders_30d'" in said


# --- a change of the file under customers with history ------------------------------

GROWN = """
version: 2
traits:
  store_visits_30d: {aggregate: count, topic: clickstream, type: store_visit, window_days: 30}
  orders_7d: {aggregate: count, topic: purchases, type: order, window_days: 7}
  orders_ever: {aggregate: count, topic: purchases, type: order}
  purchases_14d: {aggregate: count, topic: purchases, window_days: 14}
  big_orders_14d:
    aggregate: count
    topic: purchases
    type: order
    where: [{property: amount, op: ">=", value: 100}]
    window_days: 14
  spend: {aggregate: sum, topic: purchases, type: order, property: amount}
audiences:
  big_recent: {when: "big_orders_14d >= 1"}
  big_recent_regular: {when: "audience.big_recent and store_visits_30d >= 1"}
  frequent: {when: "orders_7d >= 3"}
"""


def orders_on(days: range) -> list[dict[str, Any]]:
    """An order a day at noon, every third one of 150, the others of 20."""
    return [order(T0 + d * DAY_MS + DAY_MS // 2, d, 150.0 if d % 3 == 0 else 20.0) for d in days]


def traits_of(engine: PartitionEngine, as_of: int) -> dict[str, Any]:
    definitions = engine.config.definitions
    assert definitions is not None
    states = trait_states(engine.stores.profiles.get("c1"), definitions)
    return {
        name: trait.value(states.get(name), as_of) for name, trait in definitions.traits.items()
    }


def test_a_grown_file_seeds_what_the_counters_know_and_marks_the_rest_backfilling() -> None:
    """Customers with history when traits are added: counts the profile keeps are
    whole at once; the rest count from the customer's watermark and say so
    until their window has passed, then equal a run that had them from the start."""
    switch = T0 + 20 * DAY_MS  # the file grows at the start of day 20
    before, after = orders_on(range(20)), orders_on(range(20, 40))
    visit_ = visit(T0 + 2 * DAY_MS, 1)
    grown = load_definitions(GROWN)
    changed = engine_with(DEFINITIONS)
    run(changed, [visit_, *before], switch)
    watermark = changed.stores.profiles.get("c1")["last_seen_ms"]
    changed.config = replace(changed.config, definitions=grown)
    from_start = engine_with(GROWN)
    run(from_start, [visit_, *before], switch)

    # The day-20 order: the first decision under the new file.
    first = after[0]
    late_moves = run(changed, [first], int(first["ts"]))
    run(from_start, [first], int(first["ts"]))
    now = int(first["ts"])
    seen, whole = traits_of(changed, now), traits_of(from_start, now)
    for name in ("orders_7d", "orders_ever", "purchases_14d", "store_visits_30d"):
        assert seen[name] == whole[name], name  # worked out from the counters at once
    assert (seen["orders_ever"], seen["orders_7d"]) == (21, 7)
    # Orders of 150 on days 9, 12, 15, 18 (and 0..6 gone): the day-20 order is
    # the first counted, of 20.
    assert (seen["big_orders_14d"], whole["big_orders_14d"]) == (0, 4)
    assert (seen["spend"], whole["spend"]) == (20.0, 20.0 * 14 + 150.0 * 7)

    profile = changed.stores.profiles.get("c1")
    partial = backfilling_traits(profile, grown, now)
    until = (watermark // DAY_MS + 14) * DAY_MS
    assert partial == {
        "big_orders_14d": {"since_ms": watermark, "until_ms": until},
        "spend": {"since_ms": watermark, "until_ms": None},
    }
    assert backfilling_audiences(grown, partial) == ["big_recent", "big_recent_regular"]
    assert backfilling_traits(from_start.stores.profiles.get("c1"), grown, now) == {}

    # The day-21 order of 150 moves the customer in, said to be backfilling.
    moves = late_moves + run(changed, after[1:], T0 + 45 * DAY_MS)
    entered = next(c for c in moves if c["dimension"] == "audience.big_recent")
    assert entered["ts"] == int(after[1]["ts"])
    assert "(backfilling" in entered["reason"]
    reference = run(from_start, after[1:], T0 + 45 * DAY_MS)
    assert not [c for c in reference if "(backfilling" in c["reason"]]

    # Once the window has passed, the trait is whole: equal to the run that had it.
    for as_of in (until, T0 + 39 * DAY_MS, T0 + 45 * DAY_MS):
        seen, whole = traits_of(changed, as_of), traits_of(from_start, as_of)
        assert seen["big_orders_14d"] == whole["big_orders_14d"], as_of
        assert set(backfilling_traits(profile, grown, as_of)) == {"spend"}


def test_the_profile_view_says_which_traits_and_audiences_are_backfilling() -> None:
    changed = engine_with(DEFINITIONS)
    run(changed, orders_on(range(10)), T0 + 10 * DAY_MS)
    grown = load_definitions(GROWN)
    config = EngineConfig.default()
    population = partition_population(changed.stores.population.get(population_key(0)), None)
    profile = changed.stores.profiles.get("c1")
    stored = orjson.dumps(profile)
    view = customer_view(
        "c1",
        profile,
        config.profile,
        T0 + 10 * DAY_MS,
        population,
        ValueConfig(),
        ModelBundle(ModelConfig()),
        config.segments,
        grown,
    )
    assert orjson.dumps(profile) == stored  # the view changes nothing
    assert set(view["traits_backfilling"]) == {"big_orders_14d", "spend"}
    assert view["audiences_backfilling"] == ["big_recent", "big_recent_regular"]
    assert view["traits"]["orders_ever"] == 10  # from the counters
    assert view["traits"]["big_orders_14d"] == 0


# --- only what can have moved is evaluated again --------------------------------------

WINDOWED = """
version: 1
traits:
  orders_7d: {aggregate: count, topic: purchases, type: order, window_days: 7}
  revenue_30d: {aggregate: sum, topic: purchases, type: order, property: amount, window_days: 30}
  biggest_90d: {aggregate: max, topic: purchases, type: order, property: amount, window_days: 90}
  views_7d: {aggregate: count, topic: clickstream, type: page_view, window_days: 7}
  carts_30d: {aggregate: count, topic: clickstream, type: add_to_cart, window_days: 30}
  categories_30d:
    {aggregate: distinct_count, topic: clickstream, type: product_view, property: category,
     window_days: 30}
  last_view: {aggregate: latest, topic: clickstream, type: page_view, window_days: 14}
  tickets_ever: {aggregate: count, topic: support, type: ticket_opened}
audiences:
  buyer_this_week: {when: "orders_7d >= 1"}
  browsing_hard: {when: "views_7d >= 10 and orders_7d == 0"}
  carts_no_order: {when: "carts_30d >= 2 and not audience.buyer_this_week"}
  explorer: {when: "categories_30d >= 3"}
  big_month: {when: "revenue_30d >= 200 or biggest_90d >= 150"}
  gone_quiet: {when: "last_view == null and tickets_ever >= 1"}
  lapsed_viewer: {when: "days_since(trait.last_view) > 5"}
  churny_big: {when: 'audience.big_month and segment.churn_risk == "high"'}
"""


# Audiences that read metrics only events move, built-in segments and
# days_since of them, beside traits: evaluated again only after such an
# event, a move of the segment, or the comparison's flip.
EVENT_READ = """
version: 1
traits:
  views_7d: {aggregate: count, topic: clickstream, type: page_view, window_days: 7}
  orders_30d: {aggregate: count, topic: purchases, type: order, window_days: 30}
audiences:
  seen_lately: {when: "days_since(metric.last_seen_at) <= 3"}
  ticket_holder: {when: "metric.open_tickets >= 1 and views_7d >= 1"}
  detractor: {when: "metric.nps_last != null and metric.nps_last <= 6"}
  big_basket: {when: "metric.aov >= 60 and views_7d >= 2"}
  old_timer: {when: "days_since(metric.first_seen_at) > 30 and metric.orders >= 2"}
  lapsing: {when: "metric.orders >= 1 and days_since(metric.last_order_at) > 20"}
  valued_at_risk: {when: 'segment.value_tier in ["top_5", "top_20"] and orders_30d == 0'}
  risky_regular: {when: 'segment.churn_risk == "high" and audience.lapsing'}
  anxious: {when: "not audience.seen_lately and metric.revenue > 100"}
"""


@pytest.mark.parametrize("text", ["example", "windowed", "event_read"])
def test_evaluating_only_what_moved_publishes_what_evaluating_everything_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    definitions = tmp_path / "definitions.yaml"
    definitions.write_text(
        {"example": EXAMPLE.read_text(), "windowed": WINDOWED, "event_read": EVENT_READ}[text]
    )
    events, _ = simulate(SimConfig(customers=80, days=75, seed=44))
    settings = Settings(_env_file=None, store="memory", definitions_file=definitions)
    evaluations = Counter[str]()
    check = Audience.evaluate

    def counted(audience: Audience, context: Context) -> bool:
        evaluations[mode] += 1
        return check(audience, context)

    monkeypatch.setattr(Audience, "evaluate", counted)
    mode = "moved"
    incremental = evaluate(events, settings)
    built = PartitionEngine._segmenter
    monkeypatch.setattr(
        PartitionEngine,
        "_segmenter",
        lambda self: replace(built(self), evaluate_every_audience=True),
    )
    mode = "every"
    everything = evaluate(events, settings)
    # Fewer evaluations, the same outcome.
    assert evaluations["moved"] < 0.8 * evaluations["every"], evaluations
    moves = [c for c in incremental.outputs.changes if c["dimension"].startswith("audience.")]
    assert len({c["dimension"] for c in moves}) >= 5
    assert incremental.outputs.changes == everything.outputs.changes
    assert incremental.outputs.triggers == everything.outputs.triggers
    mine, theirs = incremental.profiles, everything.profiles
    assert mine.keys() == theirs.keys()

    def kept(profile: Mapping[str, Any]) -> bytes:
        # Every field but the turns, which are worked out where a decision
        # needs one and kept until the trait moves: evaluating everything
        # works them out afresh each time, so fewer of them are known.
        rest = {key: value for key, value in profile.items() if key != "trait_turns"}
        return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)

    for customer_id, profile in mine.items():
        assert kept(profile) == kept(theirs[customer_id]), customer_id
        mine_turns = profile.get("trait_turns", [])
        their_turns = theirs[customer_id].get("trait_turns", [])
        assert len(mine_turns) == len(their_turns), customer_id
        known = zip(mine_turns, their_turns, strict=True)
        assert all(-1 in pair or pair[0] == pair[1] for pair in known), customer_id


SCORED = """
version: 1
traits:
  orders_30d: {aggregate: count, topic: purchases, type: order, window_days: 30}
audiences:
  risky_buyer: {when: "orders_30d >= 1 and score.churn_probability >= 0.3"}
  quiet_regular: {when: "metric.orders >= 2 and metric.sessions_30d == 0"}
  risky_or_lost: {when: 'segment.churn_risk == "high" or audience.quiet_regular'}
"""


@pytest.mark.parametrize("text", ["example", "windowed", "scored"])
def test_a_definitions_file_never_changes_the_built_in_segments_or_the_triggers(
    tmp_path: Path, text: str
) -> None:
    """The user's audiences are decided beside the built-in dimensions, never
    instead of or in addition to them: the built-in change records and the
    triggers are byte for byte those of the same history without the file
    (audiences reading scores, segments, windowed metrics and each other,
    their dwell and their window edges included)."""
    definitions = tmp_path / "definitions.yaml"
    definitions.write_text(
        {"example": EXAMPLE.read_text(), "windowed": WINDOWED, "scored": SCORED}[text]
    )
    events, _ = simulate(SimConfig(customers=80, days=75, seed=46))
    bare = evaluate(events, Settings(_env_file=None, store="memory"))
    settings = Settings(_env_file=None, store="memory", definitions_file=definitions)
    defined = evaluate(events, settings)

    def built_in(run: Any) -> list[bytes]:
        return [
            orjson.dumps(c, option=orjson.OPT_SORT_KEYS)
            for c in run.outputs.changes
            if not c["dimension"].startswith("audience.")
        ]

    audiences = [c for c in defined.outputs.changes if c["dimension"].startswith("audience.")]
    assert len({c["dimension"] for c in audiences}) >= 3
    assert len(built_in(bare)) > 500
    assert built_in(defined) == built_in(bare)
    assert defined.outputs.triggers == bare.outputs.triggers


def history_with(tmp_path: Path, text: str, seed: int) -> tuple[list[Any], Settings]:
    """A simulated history (80 customers, 75 days) and settings with ``text``
    as the definitions file."""
    definitions = tmp_path / "definitions.yaml"
    definitions.write_text(text)
    events, _ = simulate(SimConfig(customers=80, days=75, seed=seed))
    return events, Settings(_env_file=None, store="memory", definitions_file=definitions)


def counting_audience_decisions(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Counter[str], list[str]]:
    """Count the audiences-only decisions, under the label put in the
    returned one-item list."""
    decided = Counter[str]()
    label = [""]
    only = Segmenter._decide_audiences_only

    def counted(self: Segmenter, *args: Any) -> None:
        decided[label[0]] += 1
        only(self, *args)

    monkeypatch.setattr(Segmenter, "_decide_audiences_only", counted)
    return decided, label


def test_window_edges_that_cannot_move_an_audience_are_not_decided_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count only falls until the next event: an audience that needs it high
    cannot be entered at its window's edge, so no decision is filed there. The
    audiences move exactly as when every edge is decided at (an audience that
    reads a segment included: audience decisions leave the built-in ones
    alone)."""
    events, settings = history_with(tmp_path, WINDOWED, seed=45)
    decided, mode = counting_audience_decisions(monkeypatch)
    mode[0] = "can move"
    filtered = evaluate(events, settings)
    built = PartitionEngine._segmenter
    monkeypatch.setattr(
        PartitionEngine, "_segmenter", lambda self: replace(built(self), decide_at_every_edge=True)
    )
    mode[0] = "every edge"
    every = evaluate(events, settings)
    assert decided["can move"] < 0.8 * decided["every edge"], decided

    def moves(run: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (c["customer_id"], c["ts"], c["dimension"], c["from_segment"], c["to_segment"])
            for c in run.outputs.changes
            if c["dimension"].startswith("audience.")
        )

    assert len(moves(filtered)) > 500
    assert moves(filtered) == moves(every)


def test_a_profile_kept_before_the_file_was_noted_keeps_its_traits_whole() -> None:
    """State written by the release before this one has trait states but no
    digest: it is taken to have been kept under the file the worker starts
    with, so nothing is marked backfilling and no state is dropped."""
    engine = engine_with(DEFINITIONS)
    run(engine, [visit(T0, 1), order(T0 + 1_000, 2, 150.0)], T0 + 2_000)
    profile = engine.stores.profiles.get("c1")
    for key in ("trait_digest", "trait_fps", "trait_since"):
        profile.pop(key, None)  # as the previous release wrote it
    states = dict(profile["traits"])
    definitions = load_definitions(DEFINITIONS)
    sync_traits(profile, definitions, keep_days=90)
    assert profile["traits"] == states
    assert backfilling_traits(profile, definitions, T0 + DAY_MS) == {}
    assert profile["trait_digest"] == synced_digest(definitions)
    # A profile kept under a file without these traits: each one the counters
    # cannot answer for is backfilling from then on.
    bare = engine_with("version: 1\n")
    run(bare, [order(T0, 3, 150.0)], T0 + 1_000)
    plain = bare.stores.profiles.get("c1")
    sync_traits(plain, definitions, keep_days=90)
    assert set(backfilling_traits(plain, definitions, T0 + DAY_MS)) == {
        "store_visits_30d",
        "big_orders",
    }


def test_trait_states_kept_with_their_days_as_they_came_are_put_in_order_once() -> None:
    """A profile kept by the release before this one (layout 1) may hold a
    windowed trait's days in the order they came: the first sync puts them in
    order (the layout this release reads), with the same values, and the
    worker decides on from it as if it had kept them so."""
    text = (
        "version: 1\ntraits:\n"
        "  spend_30d: {aggregate: sum, topic: purchases, type: order, property: amount,"
        " window_days: 30}\n"
        "audiences:\n  spender: {when: 'spend_30d >= 100'}\n"
    )
    definitions = load_definitions(text)
    history = [order(T0 + 9 * DAY_MS, 1, 80.0), order(T0 + 2 * DAY_MS, 2, 30.0)]
    kept, fresh = two_engines(text, history)
    profile = kept.stores.profiles.get("c1")
    fp = definitions.traits["spend_30d"].fingerprint
    assert list(profile["traits"][fp]["d"]) == [str(T0 // DAY_MS + 2), str(T0 // DAY_MS + 9)]
    # As layout 1 wrote it: the days as they came, the file's digest alone.
    profile["traits"][fp]["d"] = dict(reversed(profile["traits"][fp]["d"].items()))
    profile["trait_digest"] = definitions.digest
    kept.stores.profiles.put("c1", profile)
    synced = orjson.loads(orjson.dumps(profile))
    sync_traits(synced, definitions, keep_days=90)
    assert list(synced["traits"][fp]["d"]) == list(reversed(profile["traits"][fp]["d"]))
    assert synced["trait_digest"] == synced_digest(definitions)
    # Decided on from the upgraded store, the worker publishes what one that
    # always kept the new layout does: the second order's day leaves at day 32.
    later = [order(T0 + 10 * DAY_MS, 3, 5.0)]
    outputs = [run(engine, later, T0 + 40 * DAY_MS) for engine in (kept, fresh)]
    assert outputs[0] == outputs[1]
    assert [(c["to_segment"], c["ts"]) for c in outputs[0]] == [("out", T0 + 32 * DAY_MS)]


def test_a_move_the_dwell_holds_back_is_decided_when_the_dwell_ends() -> None:
    """An audience left within the dwell of entering it leaves when the dwell
    ends: the profile notes the audience held back and that moment, and a
    profile an earlier release kept (without either) is decided at the same
    moment."""
    text = (
        "version: 1\ntraits:\n"
        "  orders_1d: {aggregate: count, topic: purchases, type: order, window_days: 1}\n"
        "audiences:\n  ordered_today: {when: 'orders_1d >= 1'}\n"
    )
    hour = 3_600_000
    noted, earlier = engine_with(text), engine_with(text)
    for engine in (noted, earlier):
        entered = run(engine, [order(T0 + 23 * hour, 1, 10.0)], T0 + 30 * hour)
        assert [(c["to_segment"], c["ts"]) for c in entered] == [("in", T0 + 23 * hour)]
    # The order's day left the window at midnight; the dwell (a day) holds the exit back.
    profile = noted.stores.profiles.get("c1")
    assert profile["segments"]["audience.ordered_today"]["pending"]["value"] == "out"
    assert profile["audiences_held"] == ["ordered_today"]
    assert profile["audiences_due_ms"] == T0 + 47 * hour
    kept = earlier.stores.profiles.get("c1")
    del kept["audiences_held"]
    kept["audiences_due_ms"] = None  # (an earlier release left the dwell's end out)
    earlier.stores.profiles.put("c1", kept)
    for engine in (noted, earlier):
        left = engine.advance(Watermarks.up_to(T0 + 3 * DAY_MS)).changes
        assert [(c["to_segment"], c["ts"]) for c in left] == [("out", T0 + 47 * hour)]
        assert engine.stores.profiles.get("c1")["audiences_held"] == []


def test_a_profile_an_earlier_release_kept_has_every_audience_evaluated_once() -> None:
    """An earlier release noted neither the events applied since the last
    evaluation nor the flips of the days_since tests: on a profile it kept,
    every audience is evaluated at the next decision, and from then on only
    those whose inputs moved."""
    engine = engine_with(EVENT_READ)
    run(engine, [order(T0 + 5_000, 1, 120.0), order(T0 + DAY_MS, 2, 30.0)], T0 + DAY_MS)
    segmenter = engine._segmenter()
    profile = engine.stores.profiles.get("c1")
    now = T0 + DAY_MS + 10
    built_in = metrics(profile, now, 0, 0, None)
    *_, again = segmenter._audience_members(profile, now, built_in, {}, profile["segments"])
    assert again == []  # nothing moved since the decision at the second order
    del profile["audience_flips"]
    *_, again = segmenter._audience_members(profile, now, built_in, {}, profile["segments"])
    assert again is None


@pytest.mark.parametrize("layout", [2, 3])
def test_windowed_counts_kept_by_earlier_layouts_are_brought_to_day_and_count_lists_once(
    layout: int,
) -> None:
    """A profile kept by layout 2 holds a windowed count's days as
    ``{"<day>": [n, 0, 0, 0]}``, one kept by layout 3 as ``{"<day>": n}``:
    the first sync keeps them as two lists, the days and their counts, with
    the same values, and the worker decides on from it as one that always
    kept layout 4 does."""
    text = (
        "version: 1\ntraits:\n"
        "  orders_30d: {aggregate: count, topic: purchases, type: order, window_days: 30}\n"
        "  spend_30d: {aggregate: sum, topic: purchases, type: order, property: amount,"
        " window_days: 30}\n"
        "audiences:\n  repeat: {when: 'orders_30d >= 2'}\n"
    )
    definitions = load_definitions(text)
    history = [order(T0 + 2 * DAY_MS, 1, 30.0), order(T0 + 9 * DAY_MS, 2, 80.0)]
    history.append(order(T0 + 9 * DAY_MS + 5, 3, 10.0))
    kept, fresh = two_engines(text, history)
    profile = kept.stores.profiles.get("c1")
    count = definitions.traits["orders_30d"].fingerprint
    spend = definitions.traits["spend_30d"].fingerprint
    day2, day9 = T0 // DAY_MS + 2, T0 // DAY_MS + 9
    assert profile["traits"][count] == {"k": [day2, day9], "n": [1, 2]}
    # As that layout wrote it.
    if layout == 2:
        profile["traits"][count] = {"d": {str(day2): [1, 0, 0, 0], str(day9): [2, 0, 0, 0]}}
    else:
        profile["traits"][count] = {"d": {str(day2): 1, str(day9): 2}}
    profile["trait_digest"] = f"{definitions.digest}/{layout}"
    kept.stores.profiles.put("c1", profile)
    synced = orjson.loads(orjson.dumps(profile))
    sync_traits(synced, definitions, keep_days=90)
    assert synced["traits"][count] == {"k": [day2, day9], "n": [1, 2]}
    assert synced["traits"][spend] == profile["traits"][spend]  # a sum keeps its lists
    assert synced["trait_digest"] == synced_digest(definitions)
    # The first order's day leaves at day 32, the others' at day 39.
    later = [order(T0 + 10 * DAY_MS, 4, 5.0)]
    outputs = [run(engine, later, T0 + 45 * DAY_MS) for engine in (kept, fresh)]
    assert outputs[0] == outputs[1]
    assert [(c["to_segment"], c["ts"]) for c in outputs[0]] == [("out", T0 + 39 * DAY_MS)]
    assert kept.stores.profiles.get("c1")["traits"] == fresh.stores.profiles.get("c1")["traits"]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("n >= 2", {"n": 1}),
        ("n > 2", {"n": 1}),
        ("n < 2", {"n": -1}),
        ("2 < n", {"n": 1}),
        ("2 >= n", {"n": -1}),
        ("not n >= 2", {"n": -1}),
        ("n >= 2 and m < 1", {"n": 1, "m": -1}),
        ("n >= 2 or n < 1", {"n": 0}),  # both ways at once
        ("n == 0", {"n": 0}),
        ("n != 0", {"n": 0}),
        ("n in [1, 2]", {"n": 0}),
        ("days_since(trait.last) > 3", {"last": 0}),
        ("n >= metric.orders", {"n": 0}),  # a metric moves with time: no order known
        ("audience.high and not audience.low", {"n": 1, "m": 1}),
        ("metric.orders >= 1", {}),
    ],
)
def test_directions_follow_the_condition(when: str, expected: dict[str, int]) -> None:
    text = (
        "version: 1\ntraits:\n"
        "  n: {aggregate: count, topic: purchases}\n"
        "  m: {aggregate: count, topic: support}\n"
        "  last: {aggregate: latest, topic: clickstream}\n"
        "audiences:\n"
        "  high: {when: 'n >= 3'}\n"
        "  low: {when: 'm < 1'}\n"
        f"  probe: {{when: {when!r}}}\n"
    )
    definitions = load_definitions(text)
    earlier = {"high": {"n": 1}, "low": {"m": -1}}
    assert definitions.audiences["probe"].directions(earlier) == expected


def test_only_a_trait_that_can_only_fall_has_its_edges_skipped() -> None:
    """A negative amount in a sum, a day still to enter the window, or an
    aggregate such as max can rise at an edge: those edges are always decided."""
    count = Trait("n", "count", "purchases", "order", window_days=7)
    total = Trait("s", "sum", "purchases", "order", property="amount", window_days=7)
    distinct = Trait("d", "distinct_count", "clickstream", property="category", window_days=7)
    biggest = Trait("b", "max", "purchases", "order", property="amount", window_days=7)
    today = 100
    assert falls_only(count, {"k": [98], "n": [2]}, today)
    assert not falls_only(count, {"k": [98, 101], "n": [2, 1]}, today)
    assert falls_only(count, {"d": {"98": 2}}, today)  # as layout 3 kept it
    assert not falls_only(count, {"d": {"98": 2, "101": 1}}, today)
    assert falls_only(total, {"d": {"98": [1, 5.0, 5.0, 5.0]}}, today)
    assert not falls_only(total, {"d": {"98": [2, -3.0, -4.0, 1.0]}}, today)
    assert falls_only(distinct, {"v": [["shoes", 99]]}, today)
    assert not falls_only(distinct, {"v": [["shoes", 101]]}, today)
    assert not falls_only(biggest, {"d": {"98": [1, 5.0, 5.0, 5.0]}}, today)
    # The audience a fall cannot move: out of one that needs the count high.
    up, down = (("a", 1),), (("a", -1),)
    assert not edge_can_move(False, up, {"a": False})
    assert edge_can_move(False, up, {"a": True})
    assert edge_can_move(False, down, {"a": False})
    assert not edge_can_move(False, down, {"a": True})
    assert edge_can_move(False, (("a", 0),), {"a": False})
    assert edge_can_move(True, up, {"a": False})  # it can rise: it can move anything
    assert not edge_can_move(True, (), {})  # no audience reads it


@settings(max_examples=200, deadline=None)
@given(
    aggregate=st.sampled_from(["count", "sum", "avg", "max", "distinct_count", "latest"]),
    window=st.sampled_from([None, 1, 7, 30]),
    days=st.dictionaries(
        st.integers(90, 130),
        st.tuples(st.integers(0, 3), st.integers(-50, 50)),
        max_size=12,
    ),
    today=st.integers(95, 140),
)
def test_next_edge_is_the_next_change_and_whether_the_trait_can_rise(
    aggregate: Any, window: int | None, days: dict[int, tuple[int, int]], today: int
) -> None:
    """next_edge, the one-pass form note_next_change uses, answers as
    Trait.next_change_ms and falls_only do, negative amounts and days still
    to enter included."""
    prop = {"count": None, "distinct_count": "category", "latest": "score"}.get(aggregate, "amount")
    trait = Trait("t", aggregate, "purchases", "order", property=prop, window_days=window)
    if aggregate == "distinct_count":
        state: dict[str, Any] = {"v": [[f"c{day}", day] for day in days]}
    elif aggregate == "latest":
        state = {"l": [max(days) * DAY_MS, 1]} if days else {}
    elif window is None:
        state = {"a": [len(days), sum(a for _, a in days.values()), 0, 0]}
    elif aggregate == "count":  # a count per day, each day held counted one
        held = [(day, n) for day, (n, _) in sorted(days.items()) if n]
        state = {"k": [day for day, _ in held], "n": [n for _, n in held]}
    else:
        state = {"d": {str(day): [n, a, a, a] for day, (n, a) in sorted(days.items())}}
    now = today * DAY_MS + 5
    when = trait.next_change_ms(state, now)
    rises = when is not None and not falls_only(trait, state, today)
    assert next_edge(trait, state, now) == (when, rises)


def first_edge_answering_otherwise(
    trait: Trait, state: dict[str, Any], now: int, answers: Callable[[int], Any]
) -> int | None:
    """The first window edge after ``now`` at which ``answers`` differs from
    its answer now, found by walking every edge in turn (``None``: none)."""
    edge = trait.next_change_ms(state, now)
    while edge is not None:
        if answers(edge) != answers(now):
            return edge
        edge = trait.next_change_ms(state, edge)
    return None


@settings(max_examples=300, deadline=None)
@given(
    window=st.sampled_from([1, 7, 30]),
    days=st.dictionaries(st.integers(60, 100), st.integers(1, 4), max_size=12),
    bounds=st.sets(st.integers(-1, 12), max_size=4),
    today=st.integers(100, 110),
)
def test_next_turn_is_the_first_edge_where_a_comparison_answers_otherwise(
    window: int, days: dict[int, int], bounds: set[int], today: int
) -> None:
    """For a windowed count that only falls, next_turn is the first window
    edge at which the count crosses one of the bounds (a comparison with a
    constant answers otherwise there): found here by reading the value at
    every edge in turn, as Trait.value gives it."""
    trait = Trait("n", "count", "purchases", "order", window_days=window)
    held = sorted(days.items())
    state = {"k": [day for day, _ in held], "n": [n for _, n in held]}
    now = today * DAY_MS + 5

    def answers(ms: int) -> list[bool]:
        value = trait.value(state, ms)
        return [value > bound for bound in sorted(bounds)]

    expected = first_edge_answering_otherwise(trait, state, now, answers)
    assert next_turn(trait, state, now, tuple(sorted(bounds))) == expected


@settings(max_examples=300, deadline=None)
@given(
    aggregate=st.sampled_from(["sum", "distinct_count", "avg", "max", "count"]),
    window=st.sampled_from([1, 7, 30]),
    days=st.dictionaries(
        st.integers(60, 112),
        st.tuples(st.integers(0, 3), st.integers(-20, 60)),
        max_size=10,
    ),
    marks=st.sets(st.integers(-5, 130), max_size=4),
    today=st.integers(100, 110),
)
def test_next_band_change_is_the_first_edge_where_the_value_changes_band(
    aggregate: str, window: int, days: dict[int, tuple[int, int]], marks: set[int], today: int
) -> None:
    """next_band_change, with its one-pass forms for distinct counts and sums
    that only lose days, finds the first window edge at which a comparison
    of the value with one of the marks answers otherwise: found here by
    reading the value at every edge in turn, as Trait.value gives it. Days
    still to enter, negative amounts and days with no event included; a
    value that turns null (an average of nothing) changes band too."""
    prop = "category" if aggregate == "distinct_count" else "amount"
    trait = Trait("t", aggregate, "purchases", "order", property=prop, window_days=window)
    if aggregate == "distinct_count":
        state: dict[str, Any] = {"v": [[f"c{day % 4}{day}", day] for day in days]}
    elif aggregate == "count":
        held = [(day, n) for day, (n, _) in sorted(days.items()) if n]
        state = {"k": [day for day, _ in held], "n": [n for _, n in held]}
    else:
        state = {"d": {str(day): [n, a / 4, a / 4, a / 4] for day, (n, a) in sorted(days.items())}}
    counted = aggregate in ("count", "distinct_count")
    now = today * DAY_MS + 5
    ordered = sorted(marks)

    def answers(ms: int) -> list[tuple[bool, bool]]:
        value = trait.value(state, ms)
        number = isinstance(value, int | float)  # (null, as an avg of nothing, is not)
        return [(number, number)] + [
            (number and value > mark, number and value == mark) for mark in ordered
        ]

    expected = first_edge_answering_otherwise(trait, state, now, answers)
    if counted:  # a count is marked by bounds: k where k and k + 1 may answer otherwise
        bounds = tuple(sorted({m - 1 for m in marks} | set(marks)))
        assert next_band_change(trait, state, now, True, bounds) == expected
    else:
        assert next_band_change(trait, state, now, False, tuple(ordered)) == expected


def test_a_trait_that_stays_in_its_band_evaluates_no_audience() -> None:
    """Of the traits that moved, only those that crossed a number an
    audience compares them with are answered for: an order that takes a
    sum from 40 to 60 moves no audience that asks for 100, one that takes
    it to 120 does. A trait read otherwise (here in a list) always counts."""
    definitions = load_definitions(
        "version: 1\ntraits:\n"
        "  spend: {aggregate: sum, topic: purchases, type: order, property: amount}\n"
        "  orders: {aggregate: count, topic: purchases, type: order}\n"
        "  last: {aggregate: latest, topic: purchases, type: order, property: amount}\n"
        "audiences:\n"
        "  big: {when: 'spend >= 100 and orders >= 2'}\n"
        "  exact: {when: 'last in [10, 20]'}\n"
    )
    assert trait_band(60.0, False, (100,)) == trait_band(40, False, (100,)) == 0
    assert [trait_band(n, True, (1,)) for n in (1, 2, 3)] == [0, 1, 1]
    fingerprints = {name: t.fingerprint for name, t in definitions.traits.items()}

    def values(spend: float, orders: int, last: float) -> TraitValues:
        states = {
            fingerprints["spend"]: {"a": [orders, spend, 0, spend]},
            fingerprints["orders"]: {"a": [orders, 0, 0, 0]},
            fingerprints["last"]: {"l": [0, last]},
        }
        return TraitValues(definitions, states, DAY_MS)

    moved, noted = answering_traits(definitions, values(40.0, 1, 40.0), None, None)
    assert moved is None and noted == [0, 0, None]  # every band worked out; a list: none
    everything = {"spend", "orders", "last"}
    moved, bands = answering_traits(definitions, values(60.0, 2, 20.0), everything, noted)
    assert moved == {"orders", "last"} and bands == [0, 1, None]
    moved, again = answering_traits(definitions, values(120.0, 3, 20.0), everything, bands)
    assert moved == {"spend", "last"} and again == [2, 1, None]
    assert bands == [0, 1, None]  # the list given is never changed in place
    same, kept = answering_traits(definitions, values(130.0, 4, 20.0), {"spend", "orders"}, again)
    assert same == set() and kept is again


QUIET = """
version: 1
traits:
  views_7d: {aggregate: count, topic: clickstream, type: page_view, window_days: 7}
  categories_7d:
    aggregate: distinct_count
    topic: clickstream
    type: product_view
    property: category
    window_days: 7
audiences:
  browser: {when: "views_7d >= 3"}
  explorer: {when: "categories_7d >= 2"}
"""


def test_a_fold_that_changes_no_band_or_edge_moves_no_trait() -> None:
    """Between decisions (clicks on the same day), a click that keeps a
    windowed count in the lowest band the last evaluation noted, or shows a
    category already seen that day, leaves the trait unmoved: nothing is
    evaluated for it at the next decision. The click that crosses the mark
    moves it, and the audience is entered as before."""
    engine = engine_with(QUIET)
    fingerprints = {name: t.fingerprint for name, t in engine.config.definitions.traits.items()}

    def click(type_: str, minute: int, **fields: Any) -> list[dict[str, Any]]:
        record = event("clickstream", type_, T0 + minute * 60_000, f"e{minute}", **fields)
        return run(engine, [{**record, "customer_id": "c1"}], T0 + minute * 60_000)

    def moved() -> list[str]:
        profile = engine.stores.profiles.get("c1")
        return sorted(
            name for name, fp in fingerprints.items() if fp in profile.get("traits_moved", [])
        )

    assert click("page_view", 1) == []  # the day's first click: decided, bands noted
    assert click("page_view", 2) == [] and moved() == []  # 2 views: below 3 still
    assert click("product_view", 3, category="toys") == [] and moved() == ["categories_7d"]
    assert click("product_view", 4, category="toys") == [] and moved() == ["categories_7d"]
    entered = click("page_view", 5)  # 3 views, a clickstream event: no decision yet
    assert entered == [] and moved() == ["categories_7d", "views_7d"]
    # The next day's first click decides: the browser enters.
    changes = run(
        engine,
        [{**event("clickstream", "page_view", T0 + DAY_MS, "e6"), "customer_id": "c1"}],
        T0 + DAY_MS,
    )
    assert [(c["dimension"], c["to_segment"]) for c in changes] == [("audience.browser", "in")]


def test_a_fold_that_keeps_a_higher_band_moves_no_trait_and_its_turn_comes_later() -> None:
    """A click that keeps a windowed count in the band above its lowest that
    the last evaluation noted leaves it unmoved; its turn (where it falls
    out of that band) is marked to be worked out again, since the extra
    view makes it come later. The audiences still leave where the window
    takes them out: the explorer when its categories leave, the browser
    when the day of its three views does (not the day the turn was first
    noted for)."""
    engine = engine_with(QUIET)
    fingerprints = {name: t.fingerprint for name, t in engine.config.definitions.traits.items()}

    def click(type_: str, day: int, hour: int, **fields: Any) -> list[tuple[str, str, int]]:
        ts = T0 + day * DAY_MS + hour * 3_600_000
        record = event("clickstream", type_, ts, f"e{day}-{hour}", customer_id="c1", **fields)
        return [(c["dimension"], c["to_segment"], c["ts"]) for c in run(engine, [record], ts)]

    def noted() -> tuple[list[str], list[int | None]]:
        profile = engine.stores.profiles.get("c1")
        moved = profile.get("traits_moved", [])
        return sorted(n for n, fp in fingerprints.items() if fp in moved), profile["trait_turns"]

    assert click("product_view", 0, 1, category="toys") == []
    assert click("product_view", 0, 2, category="books") == []  # two categories
    at_day_1 = T0 + DAY_MS + 3_600_000
    assert click("page_view", 1, 1) == [("audience.explorer", "in", at_day_1)]
    assert click("page_view", 1, 2) == [] and click("page_view", 1, 3) == []  # 3 views
    at_day_2 = T0 + 2 * DAY_MS + 3_600_000
    assert click("page_view", 2, 1) == [("audience.browser", "in", at_day_2)]
    # Noted: the views fall below 3 on day 8 (day 1 leaves), the categories
    # below 2 on day 7; the audiences are due at the sooner.
    assert noted() == ([], [T0 + 8 * DAY_MS, T0 + 7 * DAY_MS])
    assert click("page_view", 2, 2) == []  # 5 views: still 3 or more
    assert noted() == ([], [-1, T0 + 7 * DAY_MS])  # unmoved; the views' turn worked out again
    assert click("page_view", 2, 3) == []
    leaving = [
        (c["dimension"], c["to_segment"], c["ts"])
        for c in engine.advance(Watermarks.up_to(T0 + 12 * DAY_MS)).changes
        if c["dimension"].startswith("audience.")
    ]
    # Day 8: the three views of day 1 leave, three of day 2 stay: still in.
    # Day 9: they leave too.
    assert leaving == [
        ("audience.explorer", "out", T0 + 7 * DAY_MS),
        ("audience.browser", "out", T0 + 9 * DAY_MS),
    ]


def test_a_window_edge_that_keeps_every_band_evaluates_no_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision after a window edge passed, where the trait is still in
    the band it was noted in (one view of two left, the audience asks for
    three), works out no audience at all (no context, no memberships) and
    notes the trait's next edge; the customer's audiences still change where
    the window moves them."""
    evaluations = Counter[str]()
    members = Segmenter._audience_members

    def counted(self: Segmenter, *args: Any, **kwargs: Any) -> Any:
        evaluations["decisions"] += 1
        return members(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "_audience_members", counted)
    engine = engine_with(QUIET)
    views = engine.config.definitions.traits["views_7d"]

    def view(on_day: int, hour: int = 1) -> list[dict[str, Any]]:
        ts = T0 + on_day * DAY_MS + hour * 3_600_000
        record = {**event("clickstream", "page_view", ts, f"v{on_day}-{hour}"), "customer_id": "c1"}
        return run(engine, [record], ts)

    assert view(0) == [] and view(2) == []
    before = sum(evaluations.values())
    assert view(8) == []  # day 0 left the window on day 7: one view left, then two
    assert sum(evaluations.values()) == before  # no audience worked out
    profile = engine.stores.profiles.get("c1")
    state = profile["traits"][views.fingerprint]
    assert profile["trait_due"][0] == T0 + (2 + 7) * DAY_MS  # the next edge: day 2 leaves
    assert profile["trait_due"][0] == next_edge(views, state, T0 + 8 * DAY_MS)[0]
    assert view(8, 2) == [] and view(8, 3) == []  # 4 views, decided at the next day's first
    assert [(c["dimension"], c["to_segment"]) for c in view(9)] == [("audience.browser", "in")]


def test_count_bounds_collect_every_comparison_with_a_constant() -> None:
    """Turns apply to a windowed count only where every audience reads it in
    comparisons with constants; one other read of it anywhere, a file with
    an audience evaluated at every decision, or one reading a metric a click
    moves, turns them off."""
    text = (
        "version: 1\ntraits:\n"
        "  n: {aggregate: count, topic: purchases, type: order, window_days: 30}\n"
        "  m: {aggregate: count, topic: support, window_days: 30}\n"
        "  s: {aggregate: sum, topic: purchases, type: order, property: amount, window_days: 30}\n"
        "  c: {aggregate: count, topic: clickstream, type: page_view}\n"
        "audiences:\n"
        "  a: {when: 'n >= 2 and 5 > n and m >= 1 and s >= 10 and c >= 1'}\n"
        "  b: {when: 'n != 7 or m in [3, 4]'}\n"
    )
    definitions = load_definitions(text)
    bounds = definitions.audiences["a"].count_bounds()
    assert bounds == {"n": {1, 4}, "m": {0}, "s": {9}, "c": {0}}
    assert definitions.audiences["b"].count_bounds() == {"n": {6, 7}, "m": None}
    # Only windowed counts, and only those no audience reads otherwise.
    assert models.audiences._shape(definitions).turns_at == ((1, 4, 6, 7), None, None, None)
    for extra in (
        "  t: {when: 'metric.sessions_30d >= 1'}\n",  # evaluated at every decision
        "  t: {when: 'days_since(metric.last_seen_at) > 3'}\n",  # a click moves it
    ):
        assert models.audiences._shape(load_definitions(text + extra)).turns_at is None


def test_falling_counts_are_decided_where_an_answer_turns_not_at_every_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between events a windowed count only falls: an audience decision at an
    edge where none of the comparisons put to it answers otherwise would find
    no move, so none is filed there. The audiences move exactly as when every
    edge that can move one is decided at, with far fewer decisions."""
    events, settings = history_with(tmp_path, TURNING, seed=47)
    decided, mode = counting_audience_decisions(monkeypatch)
    mode[0] = "turns"
    turning = evaluate(events, settings)
    monkeypatch.setattr(models.audiences, "_SHAPES", {})
    monkeypatch.setattr(models.audiences, "_turns_at", lambda *_: None)
    mode[0] = "edges"
    edges = evaluate(events, settings)
    assert decided["turns"] < 0.8 * decided["edges"], decided
    assert len([c for c in turning.outputs.changes if c["dimension"].startswith("audience.")]) > 300
    assert turning.outputs.changes == edges.outputs.changes
    assert turning.outputs.triggers == edges.outputs.triggers


TURNING = """
version: 1
traits:
  orders_7d: {aggregate: count, topic: purchases, type: order, window_days: 7}
  orders_30d: {aggregate: count, topic: purchases, type: order, window_days: 30}
  views_7d: {aggregate: count, topic: clickstream, type: page_view, window_days: 7}
  carts_30d: {aggregate: count, topic: clickstream, type: add_to_cart, window_days: 30}
  revenue_30d: {aggregate: sum, topic: purchases, type: order, property: amount, window_days: 30}
  categories_30d:
    {aggregate: distinct_count, topic: clickstream, type: product_view, property: category,
     window_days: 30}
audiences:
  repeat: {when: "orders_30d >= 2"}
  cooling: {when: "orders_30d >= 1 and orders_7d == 0"}
  browsing: {when: "views_7d >= 5 and orders_30d == 0"}
  carting: {when: "carts_30d > 1 and 3 >= orders_7d"}
  spender: {when: "revenue_30d >= 100 and audience.repeat"}
  explorer: {when: "categories_30d >= 3"}
"""


def test_memberships_read_what_was_not_evaluated_from_the_held_entries() -> None:
    """Only the audiences whose inputs moved are evaluated; any other reads as
    its held entry says, and both agree with evaluating every audience."""
    definitions = load_definitions(
        "version: 1\n"
        "traits:\n"
        "  n: {aggregate: count, topic: purchases, type: order}\n"
        "  m: {aggregate: count, topic: support}\n"
        "audiences:\n"
        "  many: {when: 'n >= 2'}\n"
        "  talky: {when: 'm >= 1'}\n"
        "  both: {when: 'audience.many and audience.talky'}\n"
    )
    held = {"audience.many": {"value": "in", "since_ms": 0}}
    traits = {definitions.traits["n"].fingerprint: {"a": [3, 0, 0, 0]}}
    context = Context(now_ms=DAY_MS, traits=TraitValues(definitions, traits, DAY_MS))
    members, reading, again = evaluate_moved(definitions, context, held, {"m"})
    assert isinstance(members, Memberships) and reading.audiences is members
    assert again == ["talky", "both"]  # m moved; both reads talky (in file order)
    assert dict(members) == {"talky": False, "many": True, "both": False}
    assert members.get("unknown") is False
    everything, _, none = evaluate_moved(definitions, context, held, None)
    assert none is None and everything == {"many": True, "talky": False, "both": False}
