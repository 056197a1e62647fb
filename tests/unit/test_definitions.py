"""Computed traits and audiences from a definitions file (models.definitions)."""

from __future__ import annotations

import builtins
import copy
import hashlib
import json
import pickle
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import definitions
from models.definitions import (
    DAY_MS,
    MAX_DISTINCT_VALUES,
    MAX_EXPRESSION_DEPTH,
    Audience,
    Context,
    Definitions,
    DefinitionsError,
    Trait,
    evaluate_audiences,
    load_definitions,
    next_change_ms,
    read_definitions,
    trait_values,
)
from schemas.errors import ConfigError, SegstreamError

D = DAY_MS

EXAMPLE = """\
version: 3
traits:
  orders_30d:
    aggregate: count
    topic: purchases
    type: order
    where:
      - {property: amount, op: ">=", value: 20}
    window_days: 30
  revenue_90d: {aggregate: sum, property: amount, topic: purchases, type: order, window_days: 90}
  categories_bought: {aggregate: distinct_count, property: category, topic: purchases, type: order}
  last_store_visit: {aggregate: latest, topic: clickstream, type: store_visit}
audiences:
  vip_at_risk:
    description: "Big spenders the churn model worries about"
    when: 'revenue_90d >= 500 and segment.churn_risk in ["medium", "high"]'
  browsers_never_bought:
    when: 'metric.sessions_30d >= 3 and metric.orders == 0'
  cooling_down:
    when: 'orders_30d == 0 and days_since(trait.last_store_visit) > 14'
"""

# Traits the expression tests read; the audience under test is appended as
# `a`, its `when` on line 11.
TRAITS = """\
version: 1
traits:
  n: {aggregate: count, topic: purchases}
  spend: {aggregate: sum, property: amount, topic: purchases}
  visit: {aggregate: latest, topic: clickstream, type: store_visit}
  plan: {aggregate: latest, property: plan, topic: clickstream}
audiences:
  base:
    when: "n >= 1"
"""
WHEN_LINE = 11


def load(text: str, **known: Any) -> Definitions:
    return load_definitions(textwrap.dedent(text), **known)


def load_error(text: str, **known: Any) -> DefinitionsError:
    with pytest.raises(DefinitionsError) as info:
        load(text, **known)
    return info.value


def audience(when: str, **known: Any) -> Audience:
    return load_definitions(TRAITS + f"  a:\n    when: {json.dumps(when)}\n", **known).audiences[
        "a"
    ]


def when_error(when: str, **known: Any) -> DefinitionsError:
    with pytest.raises(DefinitionsError) as info:
        audience(when, **known)
    error = info.value
    assert (error.line, error.field) == (WHEN_LINE, "audiences.a.when")
    return error


def holds(when: str, **context: Any) -> bool:
    return audience(when).evaluate(Context(now_ms=context.pop("now_ms", 0), **context))


def trait(spec: str) -> Trait:
    return load_definitions(f"version: 1\ntraits:\n  t: {spec}\n").traits["t"]


def order(ts: int, **properties: Any) -> dict[str, Any]:
    return {"topic": "purchases", "type": "order", "ts": ts, **properties}


def fold_all(t: Trait, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    state = None
    for event in events:
        state = t.fold(state, event)
    return state


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def test_example_file_loads_with_its_version_digest_and_file_order() -> None:
    defs = load_definitions(EXAMPLE)

    assert defs.version == 3
    assert defs.digest == hashlib.sha256(EXAMPLE.encode()).hexdigest()
    assert list(defs.audiences) == ["vip_at_risk", "browsers_never_bought", "cooling_down"]
    orders = defs.traits["orders_30d"]
    assert (orders.aggregate, orders.topic, orders.type, orders.window_days) == (
        "count",
        "purchases",
        "order",
        30,
    )
    assert orders.where[0].op == ">=" and orders.where[0].value == 20
    assert defs.traits["last_store_visit"].property is None
    vip = defs.audiences["vip_at_risk"]
    assert vip.line == 16 and vip.description == "Big spenders the churn model worries about"
    assert vip.names() == {"trait.revenue_90d", "segment.churn_risk"}
    assert defs.audiences["cooling_down"].names() == {
        "trait.orders_30d",
        "trait.last_store_visit",
    }


def test_the_example_audiences_decide_a_customer() -> None:
    defs = load_definitions(EXAMPLE)
    context = Context(
        now_ms=40 * D,
        traits={"orders_30d": 0, "revenue_90d": 612.5, "last_store_visit": 20 * D},
        metrics={"sessions_30d": 2, "orders": 0},
        segments={"churn_risk": "high"},
    )

    assert evaluate_audiences(defs, context) == {
        "vip_at_risk": True,
        "browsers_never_bought": False,
        "cooling_down": True,
    }


def test_the_example_in_the_docs_loads() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "definitions-file.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]

    defs = load_definitions(example, known_segments={"churn_risk"})

    assert list(defs.audiences)[-1] == "paying_but_idle"


def test_a_changed_file_has_a_new_digest_and_a_changed_trait_a_new_fingerprint() -> None:
    before = load_definitions(EXAMPLE)
    after = load_definitions(EXAMPLE.replace("window_days: 90", "window_days: 60"))

    assert before.digest != after.digest
    assert before.traits["revenue_90d"].fingerprint != after.traits["revenue_90d"].fingerprint
    assert before.traits["orders_30d"].fingerprint == after.traits["orders_30d"].fingerprint


def test_read_definitions_digests_the_file_bytes(tmp_path: Path) -> None:
    data = EXAMPLE.replace("\n", "\r\n").encode()
    path = tmp_path / "definitions.yaml"
    path.write_bytes(data)

    defs = read_definitions(path, known_segments={"churn_risk"})

    assert defs.digest == hashlib.sha256(data).hexdigest()
    assert list(defs.traits) == [
        "orders_30d",
        "revenue_90d",
        "categories_bought",
        "last_store_visit",
    ]


def test_a_missing_file_is_a_definitions_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(DefinitionsError) as info:
        read_definitions(path)

    assert isinstance(info.value, ConfigError)
    assert info.value.line is None and info.value.expected == "a readable file"
    assert str(info.value).startswith(str(path))


def test_a_file_that_is_not_utf8_is_a_definitions_error(tmp_path: Path) -> None:
    path = tmp_path / "definitions.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(DefinitionsError, match="expected UTF-8 text"):
        read_definitions(path)


def test_loaded_definitions_cannot_be_changed() -> None:
    defs = load_definitions(EXAMPLE)
    with pytest.raises(TypeError):
        defs.traits["x"] = defs.traits["orders_30d"]  # type: ignore[index]


def test_definitions_error_message_and_pickling() -> None:
    error = when_error("n > 1 and")

    assert str(error) == (
        f"definitions.yaml line {WHEN_LINE}, audiences.a.when (column 10): "
        "expected a comparison after 'and', got end of expression"
    )
    assert (error.column, error.expected, error.got) == (
        10,
        "a comparison after 'and'",
        "end of expression",
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # noqa: S301 - our own bytes


def test_traits_and_audiences_may_be_empty() -> None:
    defs = load("version: 0\ntraits:\naudiences: {}\n")
    assert (defs.version, dict(defs.traits), dict(defs.audiences)) == (0, {}, {})


# (file text, line, field, part of expected, part of got)
FILE_ERRORS = [
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support, windw_days: 3}\n",
        3,
        "traits.t.windw_days",
        "one of the keys aggregate, topic",
        "unknown key (did you mean 'window_days'?)",
        id="unknown-trait-key",
    ),
    pytest.param(
        "version: 1\nlabels: {}\n",
        2,
        "labels",
        "one of the keys version, traits, audiences",
        "unknown key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "version: 1\naudiences:\n  a:\n    when: 'true'\n    owner: crm\n",
        5,
        "audiences.a.owner",
        "one of the keys when, description",
        "unknown key",
        id="unknown-audience-key",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    topic: support\n    aggregate: median\n",
        5,
        "traits.t.aggregate",
        "one of count, sum, avg, min, max, latest, distinct_count",
        "'median'",
        id="bad-aggregate",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: returns}\n",
        3,
        "traits.t.topic",
        "one of clickstream, purchases, support",
        "'returns'",
        id="bad-topic",
    ),
    pytest.param(
        "version: 1\ntraits:\n\n  t:\n    aggregate: avg\n    topic: purchases\n",
        5,
        "traits.t",
        "a 'property' key",
        "no 'property'",
        id="avg-without-property",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: purchases, property: amount}\n",
        3,
        "traits.t.property",
        "no property for a count",
        "'amount'",
        id="count-with-property",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        "      - {property: amount, op: '>', value: 1}\n"
        "      - {property: amount, op: '=', value: 2}\n",
        8,
        "traits.t.where[1].op",
        "one of == != > >= < <= in not_in exists",
        "'=' (did you mean '=='?)",
        id="bad-op",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        "      - {property: channel, op: in, value: web}\n",
        7,
        "traits.t.where[0].value",
        "a list of values for 'in'",
        "'web'",
        id="in-without-list",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        "      - {property: channel, op: exists, value: true}\n",
        7,
        "traits.t.where[0].value",
        "no value with 'exists'",
        "one",
        id="exists-with-value",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        "      - {property: amount, op: '>='}\n",
        7,
        "traits.t.where[0]",
        "a 'value' key for '>='",
        "no 'value'",
        id="predicate-without-value",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        "      - {property: amount, op: '>', value: [1, 2]}\n",
        7,
        "traits.t.where[0].value",
        "a number, a string, true, false or null",
        "a list",
        id="ordering-against-list",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support, window_days: 731}\n",
        3,
        "traits.t.window_days",
        "a whole number from 1 to 730",
        "731",
        id="window-too-long",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support, window_days: 0}\n",
        3,
        "traits.t.window_days",
        "a whole number from 1 to 730",
        "0",
        id="window-zero",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support, window_days: 7.5}\n",
        3,
        "traits.t.window_days",
        "a whole number",
        "'7.5'",
        id="window-fraction",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support, type: no}\n",
        3,
        "traits.t.type",
        "a string",
        "'no' (quote it",
        id="yaml-boolean-where-a-string-belongs",
    ),
    pytest.param(
        "version: 1\ntraits:\n  Orders: {aggregate: count, topic: support}\n",
        3,
        "traits.Orders",
        "a trait name of a-z, 0-9 and _",
        "'Orders'",
        id="bad-name",
    ),
    pytest.param(
        "version: 1\ntraits:\n  metric: {aggregate: count, topic: support}\n",
        3,
        "traits.metric",
        "not a reserved word",
        "'metric'",
        id="reserved-name",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support}\n"
        "  t: {aggregate: count, topic: clickstream}\n",
        4,
        "traits.t",
        "each key once",
        "a second one",
        id="duplicate-trait",
    ),
    pytest.param("- version: 1\n", 1, "", "a mapping", "a list", id="top-level-not-a-mapping"),
    pytest.param(
        "version: 1\ntraits:\n  - t\n",
        3,
        "traits",
        "a mapping of trait names",
        "a list",
        id="traits-not-a-mapping",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: count\n",
        3,
        "traits.t",
        "a mapping",
        "'count'",
        id="trait-not-a-mapping",
    ),
    pytest.param(
        "version: 1\naudiences:\n  a: 'n > 1'\n",
        3,
        "audiences.a",
        "a mapping",
        "'n > 1'",
        id="audience-not-a-mapping",
    ),
    pytest.param(
        "version: 1\naudiences:\n  a:\n    when: true\n",
        4,
        "audiences.a.when",
        "a condition in a string",
        "'true'",
        id="when-not-a-string",
    ),
    pytest.param("traits: {}\n", 1, "", "a 'version' key", "no 'version'", id="missing-version"),
    pytest.param(
        "version: yes\n", 1, "version", "a whole number 0 or more", "'yes'", id="version-boolean"
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: support\n\naudiences: {}\n",
        5,
        "",
        "valid YAML",
        "a syntax error",
        id="bad-yaml",
    ),
    pytest.param(
        "version: !!python/object/apply:os.getcwd []\n",
        1,
        "version",
        "a whole number",
        "a list",
        id="python-tag",
    ),
    pytest.param(
        "version: 1\ntraits:\n  t: {aggregate: count, topic: !!python/name:os.sep ''}\n",
        3,
        "traits.t.topic",
        "a plain value",
        "tag",
        id="python-tag-in-a-trait",
    ),
    pytest.param(
        "version: !!python/name:os.getcwd ''\n",
        1,
        "version",
        "a plain value",
        "tag",
        id="python-scalar-tag",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "expected", "got"), FILE_ERRORS)
def test_file_errors_name_line_field_and_what_was_expected(
    text: str, line: int, field: str, expected: str, got: str
) -> None:
    error = load_error(text)

    assert (error.line, error.field) == (line, field)
    assert expected in error.expected
    assert got in error.got
    assert str(error).startswith(f"definitions.yaml line {line}")


def test_an_empty_file_is_an_error() -> None:
    error = load_error("# nothing yet\n")
    assert error.line is None and error.got == "an empty file"


def test_limits_on_traits_audiences_and_predicates() -> None:
    traits = "".join(f"  t{i}: {{aggregate: count, topic: support}}\n" for i in range(101))
    error = load_error("version: 1\ntraits:\n" + traits)
    assert (error.line, error.expected) == (103, "at most 100 traits")
    load("version: 1\ntraits:\n" + traits.rsplit("  t100", 1)[0])

    audiences = "".join(f"  a{i}: {{when: 'true'}}\n" for i in range(101))
    error = load_error("version: 1\naudiences:\n" + audiences)
    assert (error.line, error.expected) == (103, "at most 100 audiences")

    where = "".join("      - {property: amount, op: '>', value: 1}\n" for _ in range(21))
    error = load_error(
        "version: 1\ntraits:\n  t:\n    aggregate: count\n    topic: purchases\n    where:\n"
        + where
    )
    assert (error.line, error.field, error.expected) == (
        27,
        "traits.t.where",
        "at most 20 predicates",
    )


def test_limits_on_expressions() -> None:
    too_long = " or ".join(["n >= 1"] * 250)
    assert when_error(too_long).expected == "at most 2000 characters"

    # Each comparison is 3 parts (two values and the operator), each `or` one
    # more: the 201st is the `n` of the 51st comparison, at column 351.
    many_parts = " or ".join(["n>1"] * 51)
    assert len(many_parts) < 2000
    error = when_error(many_parts)
    assert (error.expected, error.column) == ("at most 200 parts in an expression", 351)
    audience(" or ".join(["n>1"] * 50))

    deep = "(" * (MAX_EXPRESSION_DEPTH + 1) + "n > 1" + ")" * (MAX_EXPRESSION_DEPTH + 1)
    error = when_error(deep)
    assert (error.expected, error.column) == ("at most 32 levels of nesting", 33)
    audience("(" * MAX_EXPRESSION_DEPTH + "n > 1" + ")" * MAX_EXPRESSION_DEPTH)
    assert when_error("not " * 33 + "n > 1").expected == "at most 32 levels of nesting"


# (when, column, part of expected, part of got)
EXPRESSION_ERRORS = [
    pytest.param(
        "n > 1 and", 10, "a comparison after 'and'", "end of expression", id="and-dangling"
    ),
    pytest.param(
        "n > 1 or not", 13, "a comparison after 'not'", "end of expression", id="not-dangling"
    ),
    pytest.param("n >", 4, "a value after '>'", "end of expression", id="missing-right-side"),
    pytest.param(
        "(n > 1", 7, "')' to close the '(' at column 1", "end of expression", id="unclosed"
    ),
    pytest.param("n > 1)", 6, "'and', 'or' or end of expression", "')'", id="stray-paren"),
    pytest.param("n < 2 < 3", 7, "'and', 'or' or end of expression", "'<'", id="chained"),
    pytest.param("n = 1", 3, "'==' to test equality", "'='", id="single-equals"),
    pytest.param("n > 1 && n < 3", 7, "'and' or 'or'", "'&'", id="c-and"),
    pytest.param("n not 3", 7, "'in' after 'not'", "'3'", id="not-without-in"),
    pytest.param(
        "plan == 'pro", 9, "a closing ' for this string", "end of expression", id="open-string"
    ),
    pytest.param("ordrs > 1", 1, "a trait defined in this file", "'ordrs'", id="unknown-trait"),
    pytest.param("spnd > 1", 1, "a trait defined", "(did you mean 'spend'?)", id="did-you-mean"),
    pytest.param("trait.nope > 1", 1, "a trait defined", "'nope'", id="unknown-qualified-trait"),
    pytest.param("audience.b", 1, "an audience defined in this file", "'b'", id="unknown-audience"),
    pytest.param(
        "audience.a", 1, "an audience defined above this one", "(this audience)", id="self"
    ),
    pytest.param(
        "attr.x > 1",
        1,
        "one of trait., metric., score., segment., audience.",
        "'attr.'",
        id="unknown-namespace",
    ),
    pytest.param(
        "metric > 1", 1, "'metric.' followed by a name", "'metric' alone", id="bare-namespace"
    ),
    pytest.param(
        "n", 2, "a comparison operator after 'n'", "end of expression", id="number-as-condition"
    ),
    pytest.param(
        "'a' > 3",
        5,
        "values of the same kind on each side of '>'",
        "a string ('a') and a number (3)",
        id="string-vs-number",
    ),
    pytest.param(
        "spend == 'high'", 7, "values of the same kind", "a number (spend)", id="trait-vs-string"
    ),
    pytest.param(
        "n > null", 3, "a number or a string on each side of '>'", "null", id="order-null"
    ),
    pytest.param("n > true", 3, "a number or a string", "true/false (true)", id="order-boolean"),
    pytest.param(
        "audience.base >= 1",
        15,
        "a number or a string",
        "true/false (audience.base)",
        id="order-audience",
    ),
    pytest.param("n in 3", 3, "a list or a name after 'in'", "a number (3)", id="in-number"),
    pytest.param(
        "plan in 'pro'", 6, "a list or a name after 'in'", "a string ('pro')", id="in-string"
    ),
    pytest.param(
        "n in ['1', '2']",
        3,
        "a list with numbers in it",
        "a list of strings",
        id="in-list-of-other",
    ),
    pytest.param(
        "n == [1]",
        3,
        "a single value on each side of '==' (or use 'in')",
        "a list",
        id="equal-list",
    ),
    pytest.param(
        "n in [1, spend]",
        10,
        "a number, string, true, false or null in a list",
        "'spend'",
        id="name-in-list",
    ),
    pytest.param("n in [1 2]", 9, "',' or ']' in a list", "'2'", id="list-without-comma"),
    pytest.param(
        "days_since(3) > 1", 12, "a name inside days_since(...)", "'3'", id="days-since-literal"
    ),
    pytest.param(
        "days_since(audience.base) > 1",
        12,
        "a time in epoch ms",
        "true/false",
        id="days-since-audience",
    ),
    pytest.param(
        "days_since visit > 1", 1, "'(' after 'days_since'", "'visit'", id="days-since-no-paren"
    ),
    pytest.param("n > 1e999", 5, "a finite number", "'1e999'", id="infinite-number"),
    pytest.param("metric.a.b > 1", 1, "a name like metric.orders", "'metric.a.b'", id="two-dots"),
]


@pytest.mark.parametrize(("when", "column", "expected", "got"), EXPRESSION_ERRORS)
def test_expression_errors_name_the_column_and_what_was_expected(
    when: str, column: int, expected: str, got: str
) -> None:
    error = when_error(when)

    assert error.column == column
    assert expected in error.expected
    assert got in error.got


def test_an_audience_may_read_only_audiences_defined_above_it() -> None:
    error = load_error(
        """\
        version: 1
        audiences:
          first:
            when: "audience.second or true"
          second:
            when: "audience.first"
        """
    )

    assert (error.line, error.field, error.column) == (4, "audiences.first.when", 1)
    assert error.expected == "an audience defined above this one"
    assert error.got == "'second' (defined below, line 5)"


def test_metric_score_and_segment_names_are_checked_when_the_caller_knows_them() -> None:
    # Default: any name goes; the worker decides what it passes.
    audience("metric.anything > 1 and score.whatever > 0.5 and segment.x == 'y'")

    error = when_error("metric.ordrs > 1", known_metrics={"orders", "sessions_30d"})
    assert (error.expected, error.got) == ("a known metric", "'ordrs' (did you mean 'orders'?)")
    error = when_error("score.churn > 0.5", known_scores=["churn_probability"])
    assert error.expected == "a known score"
    error = when_error("segment.tier == 'gold'", known_segments=frozenset({"value_tier"}))
    assert error.expected == "a known segment"
    audience("metric.orders > 1", known_metrics={"orders"})


# --------------------------------------------------------------------------
# User text never runs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "().__class__.__bases__",
        "eval('1') == 1",
        "open('/etc/passwd')",
        "lambda: 1",
        "[x for x in n]",
        "n.__class__ == 1",
        "globals()",
    ],
)
def test_python_in_a_condition_is_rejected_at_load(when: str) -> None:
    when_error(when)


def test_loading_and_evaluating_never_call_eval_exec_or_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("user text reached the Python compiler")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    defs = load_definitions(EXAMPLE)
    context = Context(now_ms=0, traits={"revenue_90d": 600}, segments={"churn_risk": "medium"})

    assert evaluate_audiences(defs, context)["vip_at_risk"] is True


# --------------------------------------------------------------------------
# Trait aggregates
# --------------------------------------------------------------------------

ORDERS = [
    order(1 * D, amount=20, category="shoes"),
    order(2 * D, amount=5, category="bags"),
    order(3 * D, amount=40, category="shoes"),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{aggregate: count, topic: purchases}", 3),
        ("{aggregate: sum, property: amount, topic: purchases}", 65),
        ("{aggregate: avg, property: amount, topic: purchases}", 65 / 3),
        ("{aggregate: min, property: amount, topic: purchases}", 5),
        ("{aggregate: max, property: amount, topic: purchases}", 40),
        ("{aggregate: latest, property: amount, topic: purchases}", 40),
        ("{aggregate: latest, topic: purchases}", 3 * D),
        ("{aggregate: distinct_count, property: category, topic: purchases}", 2),
    ],
)
def test_lifetime_aggregates(spec: str, expected: float) -> None:
    t = trait(spec)
    state = fold_all(t, ORDERS)

    assert t.value(state, as_of_ms=400 * D) == pytest.approx(expected)
    assert t.next_change_ms(state, 400 * D) is None


@pytest.mark.parametrize(
    ("aggregate", "empty"),
    [
        ("count", 0),
        ("sum", 0),
        ("avg", None),
        ("min", None),
        ("max", None),
        ("latest", None),
        ("distinct_count", 0),
    ],
)
def test_aggregates_of_nothing(aggregate: str, empty: int | None) -> None:
    prop = "" if aggregate == "count" else ", property: amount"
    lifetime = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}}}")
    windowed = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}, window_days: 2}}")

    assert lifetime.value(None, 0) == empty
    assert windowed.value(None, 0) == empty
    # Something was folded, but its day has left the window.
    state = windowed.fold(None, order(0, amount=3))
    assert windowed.value(state, as_of_ms=1 * D) is not None
    assert windowed.value(state, as_of_ms=2 * D) == empty


def test_a_window_counts_whole_utc_days_up_to_the_as_of_day() -> None:
    t = trait("{aggregate: sum, property: amount, topic: purchases, window_days: 3}")
    state = fold_all(t, [order(day * D + 5, amount=10**day) for day in range(4)])

    assert t.value(state, as_of_ms=3 * D) == 10 + 100 + 1000  # days 1 to 3
    assert t.value(state, as_of_ms=4 * D - 1) == 1110  # still day 3
    assert t.value(state, as_of_ms=5 * D) == 1000  # only day 3 left
    assert t.value(state, as_of_ms=6 * D) == 0
    # Days after the as-of day do not count yet.
    assert t.value(state, as_of_ms=1 * D) == 10
    # Only the window's days are kept.
    assert state is not None and sorted(state["d"]) == ["1", "2", "3"]


@pytest.mark.parametrize("aggregate", ["count", "sum", "avg", "min", "max"])
def test_windowed_state_stays_bounded_however_long_the_history(aggregate: str) -> None:
    prop = "" if aggregate == "count" else ", property: amount"
    t = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}, window_days: 7}}")
    state = fold_all(t, [order(day * D, amount=day) for day in range(365)])

    assert state is not None and len(state["k" if aggregate == "count" else "d"]) == 7
    assert (
        t.value(state, 364 * D)
        == {
            "count": 7,
            "sum": sum(range(358, 365)),
            "avg": 361,
            "min": 358,
            "max": 364,
        }[aggregate]
    )


def test_next_change_is_when_a_day_leaves_the_window() -> None:
    t = trait("{aggregate: max, property: amount, topic: purchases, window_days: 3}")
    state = t.fold(t.fold(None, order(0 * D + 7, amount=9)), order(2 * D + 7, amount=4))

    assert t.next_change_ms(state, after_ms=2 * D + 7) == 3 * D
    assert t.next_change_ms(state, after_ms=3 * D) == 5 * D
    assert t.next_change_ms(state, after_ms=5 * D) is None
    # ... and the value does change then.
    assert (t.value(state, 3 * D - 1), t.value(state, 3 * D)) == (9, 4)
    assert (t.value(state, 5 * D - 1), t.value(state, 5 * D)) == (4, None)


def test_next_change_includes_a_future_day_entering_the_window() -> None:
    t = trait("{aggregate: count, topic: purchases, window_days: 30}")
    state = t.fold(None, order(10 * D + 1))

    assert t.next_change_ms(state, after_ms=2 * D) == 10 * D
    assert (t.value(state, 10 * D - 1), t.value(state, 10 * D)) == (0, 1)


def test_late_events_count_within_the_window_and_are_dropped_beyond_it() -> None:
    t = trait("{aggregate: sum, property: amount, topic: purchases, window_days: 7}")
    state = t.fold(None, order(20 * D, amount=1))
    state = t.fold(state, order(15 * D, amount=10))  # late, inside the window
    state = t.fold(state, order(13 * D, amount=100))  # late, already out of it

    assert t.value(state, as_of_ms=20 * D) == 11
    assert sorted(state["d"]) == ["15", "20"]


def test_latest_keeps_the_value_of_the_greatest_ts_and_the_later_fold_on_a_tie() -> None:
    t = trait("{aggregate: latest, property: plan, topic: clickstream}")
    click = {"topic": "clickstream", "type": "page_view"}
    state = t.fold(None, {**click, "ts": 50, "plan": "pro"})
    state = t.fold(state, {**click, "ts": 10, "plan": "free"})  # late: older

    assert t.value(state, 100) == "pro"
    state = t.fold(state, {**click, "ts": 50, "plan": "team"})
    assert t.value(state, 100) == "team"
    state = t.fold(state, {**click, "ts": 60})  # no plan: nothing to keep
    assert state == {"l": [50, "team"]}


def test_windowed_latest_expires_with_its_day() -> None:
    t = trait("{aggregate: latest, topic: clickstream, type: store_visit, window_days: 14}")
    state = t.fold(None, {"topic": "clickstream", "type": "store_visit", "ts": 3 * D + 9})

    assert t.value(state, 16 * D) == 3 * D + 9
    assert t.value(state, 17 * D) is None
    assert t.next_change_ms(state, after_ms=4 * D) == 17 * D


def test_distinct_count_keeps_at_most_the_bound_and_is_then_a_lower_bound() -> None:
    t = trait("{aggregate: distinct_count, property: sku, topic: purchases}")
    state = fold_all(t, [order(i, sku=f"s{i}") for i in range(MAX_DISTINCT_VALUES + 44)])

    assert t.value(state, 10**6) == MAX_DISTINCT_VALUES
    assert state is not None and len(state["v"]) == MAX_DISTINCT_VALUES
    assert t.fold(state, order(0, sku="new")) == state


def test_windowed_distinct_count_forgets_values_last_seen_before_the_window() -> None:
    t = trait("{aggregate: distinct_count, property: category, topic: purchases, window_days: 7}")
    state = fold_all(
        t,
        [
            order(0 * D, category="shoes"),
            order(1 * D, category="bags"),
            order(5 * D, category="shoes"),
            order(6 * D, category="hats"),
        ],
    )

    assert t.value(state, 6 * D) == 3
    assert t.value(state, 8 * D) == 2  # bags was last seen on day 1
    assert t.next_change_ms(state, after_ms=6 * D) == 8 * D
    state = t.fold(state, order(14 * D, category="coats"))
    assert state is not None and [value for value, _ in state["v"]] == ["coats"]


def test_windowed_distinct_count_keeps_the_most_recently_seen_values() -> None:
    t = trait("{aggregate: distinct_count, property: sku, topic: purchases, window_days: 30}")
    events = [order(i * 1000, sku=f"old{i}") for i in range(MAX_DISTINCT_VALUES)]
    events += [order(D + i, sku=f"new{i}") for i in range(10)]
    state = fold_all(t, events)

    assert state is not None and len(state["v"]) == MAX_DISTINCT_VALUES
    assert {f"new{i}" for i in range(10)} <= {value for value, _ in state["v"]}
    assert t.value(state, D) == MAX_DISTINCT_VALUES


def test_distinct_values_by_kind() -> None:
    t = trait("{aggregate: distinct_count, property: code, topic: purchases}")
    codes: list[Any] = [3, 3.0, "3", True, 1, None, {"a": 1}, ["x"], float("nan")]
    state = fold_all(t, [order(i, code=code) for i, code in enumerate(codes)])

    # 3 and 3.0 are one number; "3" is a string; true is not 1; the rest are skipped.
    assert t.value(state, 100) == 4


@pytest.mark.parametrize("amount", [None, "12", True, float("nan"), float("inf"), [1]])
def test_numeric_aggregates_skip_values_that_are_not_numbers(amount: Any) -> None:
    t = trait("{aggregate: avg, property: amount, topic: purchases}")
    state = t.fold(None, order(0, amount=amount))
    state = t.fold(state, order(1, amount=4))

    assert t.value(state, 10) == 4


def test_fold_leaves_its_input_alone_and_the_state_survives_json() -> None:
    specs = [
        "{aggregate: sum, property: amount, topic: purchases, window_days: 30}",
        "{aggregate: min, property: amount, topic: purchases}",
        "{aggregate: latest, property: amount, topic: purchases}",
        "{aggregate: distinct_count, property: category, topic: purchases}",
        "{aggregate: distinct_count, property: category, topic: purchases, window_days: 2}",
    ]
    for spec in specs:
        t = trait(spec)
        state = fold_all(t, ORDERS[:2])
        before = copy.deepcopy(state)
        event = {**ORDERS[2], "properties": {"x": 1}}
        event_before = copy.deepcopy(event)
        after = t.fold(state, event)

        assert state == before and event == event_before, spec
        restored = json.loads(json.dumps(after))
        assert t.value(restored, 3 * D) == t.value(after, 3 * D), spec
        assert t.fold(restored, order(4 * D, amount=1, category="x")) == t.fold(
            after, order(4 * D, amount=1, category="x")
        ), spec


def test_an_event_without_an_integer_ts_never_matches_and_cannot_be_folded() -> None:
    t = trait("{aggregate: count, topic: purchases}")
    event = {"topic": "purchases", "type": "order", "ts": "2024-01-01"}

    assert not t.matches(event)
    with pytest.raises(SegstreamError):
        t.fold(None, event)


# --------------------------------------------------------------------------
# Which events a trait takes
# --------------------------------------------------------------------------


def predicate_trait(*predicates: str) -> Trait:
    where = "".join(f"\n      - {p}" for p in predicates)
    return trait(
        f"\n    aggregate: count\n    topic: purchases\n    type: order\n    where:{where}"
    )


def test_matches_checks_topic_type_and_every_predicate() -> None:
    t = predicate_trait(
        "{property: amount, op: '>=', value: 20}", "{property: currency, op: '==', value: EUR}"
    )

    assert t.matches(order(0, amount=20, currency="EUR"))
    assert not t.matches(order(0, amount=19.99, currency="EUR"))
    assert not t.matches(order(0, amount=20, currency="USD"))
    assert not t.matches({**order(0, amount=20, currency="EUR"), "type": "refund"})
    assert not t.matches({**order(0, amount=20, currency="EUR"), "topic": "support"})
    assert trait("{aggregate: count, topic: purchases}").matches({**order(0), "type": "refund"})


@pytest.mark.parametrize(
    ("predicate", "event", "expected"),
    [
        ("{property: channel, op: in, value: [web, app]}", {"channel": "app"}, True),
        ("{property: channel, op: in, value: [web, app]}", {"channel": "store"}, False),
        ("{property: channel, op: in, value: [web, app]}", {}, False),
        ("{property: channel, op: not_in, value: [web, app]}", {"channel": "store"}, True),
        ("{property: channel, op: not_in, value: [web, app]}", {"channel": "web"}, False),
        # not_in is the opposite of in, so a missing property passes it.
        ("{property: channel, op: not_in, value: [web, app]}", {}, True),
        ("{property: coupon, op: exists}", {"coupon": "SPRING"}, True),
        ("{property: coupon, op: exists}", {"coupon": None}, False),
        ("{property: coupon, op: exists}", {}, False),
        ("{property: amount, op: '<', value: 10}", {}, False),
        ("{property: amount, op: '>=', value: 10}", {"amount": "20"}, False),
        ("{property: amount, op: '!=', value: 10}", {}, True),
        ("{property: amount, op: '==', value: 10}", {"amount": 10.0}, True),
        ("{property: gift, op: '==', value: 1}", {"gift": True}, False),
        ("{property: gift, op: '==', value: true}", {"gift": True}, True),
        ("{property: gift, op: '==', value: null}", {}, True),
        ("{property: sku, op: '>=', value: 'M'}", {"sku": "P-1"}, True),
    ],
)
def test_property_predicates(predicate: str, event: dict[str, Any], expected: bool) -> None:
    assert predicate_trait(predicate).matches(order(0, **event)) is expected


def test_custom_event_properties_are_looked_up_after_top_level_keys() -> None:
    t = trait(
        "{aggregate: sum, property: seats, topic: clickstream, type: plan_upgraded,"
        " where: [{property: plan, op: in, value: [team, business]}]}"
    )
    event = {
        "topic": "clickstream",
        "type": "plan_upgraded",
        "ts": 0,
        "properties": {"plan": "team", "seats": 12},
    }

    assert t.matches(event)
    assert t.value(t.fold(None, event), 1) == 12
    # A top-level key wins over one of the same name under "properties".
    shadowed = {**event, "plan": "free"}
    assert not t.matches(shadowed)


# --------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------


def test_a_missing_value_fails_orderings_but_equals_null() -> None:
    assert not holds("spend > 0")
    assert not holds("spend <= 0")
    assert holds("spend == null")
    assert not holds("spend != null")
    assert holds("metric.x != 1")  # != is the opposite of ==
    assert not holds("metric.x in [1, 2]")
    assert holds("metric.x not in [1, 2]")
    assert holds("metric.x in [1, null]")
    assert not holds("not metric.x == null")


def test_comparisons_need_values_of_the_same_kind_at_run_time() -> None:
    assert holds("metric.x > 2", metrics={"x": 2.5})
    assert not holds("metric.x > 2", metrics={"x": "3"})
    assert holds("segment.tier >= 'gold'", segments={"tier": "platinum"})
    assert not holds("metric.flag == 1", metrics={"flag": True})
    assert holds("metric.flag == true", metrics={"flag": True})
    assert holds("n == 2.0", traits={"n": 2})
    assert holds("metric.x >= -1.5e3", metrics={"x": -1500})


@pytest.mark.parametrize("a", [True, False])
@pytest.mark.parametrize("b", [True, False])
@pytest.mark.parametrize("c", [True, False])
def test_not_binds_tighter_than_and_tighter_than_or(a: bool, b: bool, c: bool) -> None:
    metrics = {"a": a, "b": b, "c": c}

    assert holds("not metric.a and metric.b or metric.c", metrics=metrics) is ((not a and b) or c)
    assert holds("not (metric.a and metric.b) or metric.c", metrics=metrics) is (not (a and b) or c)
    assert holds("metric.a or metric.b and not metric.c", metrics=metrics) is (a or (b and not c))


def test_a_bare_value_is_a_condition_only_when_it_is_exactly_true() -> None:
    assert holds("metric.vip", metrics={"vip": True})
    assert not holds("metric.vip", metrics={"vip": 1})
    assert not holds("metric.vip", metrics={"vip": "yes"})
    assert holds("not metric.vip")
    assert holds("not metric.vip", metrics={"vip": 1})
    assert holds("true") and not holds("false")


def test_in_and_not_in() -> None:
    segments = {"churn_risk": "high"}
    assert holds("segment.churn_risk in ['medium', 'high']", segments=segments)
    assert not holds("segment.churn_risk not in ['medium', 'high']", segments=segments)
    assert holds("segment.churn_risk not in []", segments=segments)
    # A name on the right reads a list; anything else holds nothing.
    assert holds(
        "'shoes' in metric.favourite_categories", metrics={"favourite_categories": ["shoes"]}
    )
    assert not holds(
        "'shoes' in metric.favourite_categories", metrics={"favourite_categories": "shoes"}
    )
    assert holds("plan in [\"pro\", 'team']", traits={"plan": "team"})


def test_strings_take_escapes() -> None:
    assert holds(r"plan == 'it\'s \"new\"'", traits={"plan": 'it\'s "new"'})


def test_days_since_reads_an_epoch_ms_time() -> None:
    when = "days_since(visit) > 14"
    assert holds(when, now_ms=15 * D + 1, traits={"visit": D})
    assert not holds(when, now_ms=15 * D, traits={"visit": D})
    assert not holds(when, now_ms=15 * D)  # never visited: null, and null > 14 fails
    assert holds("days_since(visit) == null")
    assert holds(
        "days_since(metric.last_seen_ms) >= 0.5", now_ms=D // 2, metrics={"last_seen_ms": 0}
    )


@pytest.mark.parametrize(
    ("when", "flip"),
    [
        ("days_since(visit) > 14", 14 * D + 1),
        ("days_since(visit) >= 14", 14 * D),
        ("days_since(visit) < 14", 14 * D),
        ("days_since(visit) <= 14", 14 * D + 1),
        ("14 < days_since(visit)", 14 * D + 1),
        ("days_since(visit) >= 0.25", D // 4),
        ("days_since(visit) == 3", 3 * D),
        ("n >= 1 or days_since(trait.visit) > metric.quiet_days", 14 * D + 1),
    ],
)
def test_next_change_of_a_days_since_test_is_when_it_flips(when: str, flip: int) -> None:
    a = audience(when)
    visit = 5 * D + 123

    def context(now: int) -> Context:
        return Context(now_ms=now, traits={"visit": visit, "n": 0}, metrics={"quiet_days": 14})

    now = visit + 1000
    moment = a.next_change_ms(context(now), now)

    assert moment == visit + flip
    assert a.evaluate(context(moment - 1)) != a.evaluate(context(moment))


def test_next_change_of_a_days_since_test_is_none_once_it_cannot_flip() -> None:
    a = audience("days_since(visit) > 14")
    after = Context(now_ms=20 * D, traits={"visit": 0})

    assert a.next_change_ms(after, after.now_ms) is None
    assert a.next_change_ms(Context(now_ms=0), 0) is None  # no visit yet
    assert audience("n > 1").next_change_ms(after, after.now_ms) is None


def test_explain_lists_the_values_read() -> None:
    a = audience("spend >= 500 and segment.churn_risk in ['medium', 'high'] or n > spend")
    context = Context(now_ms=0, traits={"spend": 612.5, "n": 3}, segments={"churn_risk": "high"})

    assert a.explain(context) == "spend=612.5 segment.churn_risk=high n=3"
    assert (
        audience("days_since(visit) > 1 and plan == 'a b'").explain(
            Context(now_ms=D * 3, traits={"visit": D // 2, "plan": "a b"})
        )
        == 'days_since(visit)=2.5 plan="a b"'
    )
    assert audience("metric.x == null").explain(Context(now_ms=0)) == "metric.x=null"


def test_names_are_qualified() -> None:
    a = audience(
        "n > 1 and trait.spend > 0 and days_since(visit) > 1 and not audience.base"
        " and score.churn > 0.5 and metric.orders > 0 and segment.tier == 'a'"
    )

    assert a.names() == {
        "trait.n",
        "trait.spend",
        "trait.visit",
        "audience.base",
        "score.churn",
        "metric.orders",
        "segment.tier",
    }


# --------------------------------------------------------------------------
# Per customer
# --------------------------------------------------------------------------

CHAINED = """\
version: 1
traits:
  orders_7d: {aggregate: count, topic: purchases, type: order, window_days: 7}
audiences:
  buyers:
    when: "orders_7d >= 1"
  lapsed_buyers:
    when: "not audience.buyers and metric.orders > 0"
  quiet:
    when: "days_since(metric.last_seen_ms) > 10"
"""


def test_evaluate_audiences_in_file_order_so_later_ones_read_earlier_ones() -> None:
    defs = load_definitions(CHAINED)
    stale = {"buyers": True, "lapsed_buyers": True, "quiet": True}
    context = Context(
        now_ms=30 * D,
        traits={"orders_7d": 0},
        metrics={"orders": 4, "last_seen_ms": 25 * D},
        audiences=stale,
    )

    assert evaluate_audiences(defs, context) == {
        "buyers": False,
        "lapsed_buyers": True,
        "quiet": False,
    }
    assert context.audiences is stale  # the caller's context is left alone


def test_trait_values_and_the_next_change_over_all_traits_and_audiences() -> None:
    defs = load_definitions(CHAINED)
    t = defs.traits["orders_7d"]
    states = {"orders_7d": t.fold(None, order(10 * D + 5))}
    values = trait_values(defs, states, as_of_ms=12 * D)
    assert values == {"orders_7d": 1}

    def context(now: int) -> Context:
        return Context(now_ms=now, traits=values, metrics={"orders": 1, "last_seen_ms": 5 * D})

    # The order leaves the 7-day window at day 17; the quiet test flips
    # just after day 15.
    assert next_change_ms(defs, states, context(12 * D)) == 15 * D + 1
    assert next_change_ms(defs, states, context(16 * D)) == 17 * D
    assert next_change_ms(defs, {}, context(16 * D)) is None


# --------------------------------------------------------------------------
# Folding order does not matter
# --------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # day
        st.integers(min_value=0, max_value=D - 1),  # time of day
        st.integers(min_value=-50, max_value=50),  # amount
        st.sampled_from(["a", "b", "c", "d", "e", "f", 7, 7.0, True]),  # category
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    aggregate=st.sampled_from(["count", "sum", "min", "max", "distinct_count"]),
    window=st.sampled_from([None, 1, 3, 30]),
    rows=EVENTS,
    data=st.data(),
)
def test_folding_in_any_order_gives_the_same_value(
    aggregate: str, window: int | None, rows: list[tuple[int, int, int, Any]], data: st.DataObject
) -> None:
    prop = {"count": "", "distinct_count": ", property: category"}.get(
        aggregate, ", property: amount"
    )
    days = "" if window is None else f", window_days: {window}"
    t = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}{days}}}")
    events = [order(day * D + ms, amount=amount, category=c) for day, ms, amount, c in rows]
    shuffled = data.draw(st.permutations(events))

    in_order, out_of_order = fold_all(t, events), fold_all(t, shuffled)
    newest = max((e["ts"] for e in events), default=0)
    for as_of in (newest, newest + D, newest + 2 * D):
        assert t.value(in_order, as_of) == t.value(out_of_order, as_of)
        assert t.next_change_ms(in_order, as_of) == t.next_change_ms(out_of_order, as_of)


# Few days, so many values share their last day where the bound cuts.
CROWDED_EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4),
        st.integers(min_value=0, max_value=D - 1),
        st.just(0),
        st.sampled_from(["a", "b", "c", "d", "e", "f", 7, 7.0, True]),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(window=st.sampled_from([None, 1, 2, 10]), rows=CROWDED_EVENTS, data=st.data())
def test_distinct_count_at_its_bound_does_not_depend_on_the_order(
    window: int | None, rows: list[tuple[int, int, int, Any]], data: st.DataObject
) -> None:
    days = "" if window is None else f", window_days: {window}"
    t = trait(f"{{aggregate: distinct_count, property: category, topic: purchases{days}}}")
    events = [order(day * D + ms, category=c) for day, ms, _, c in rows]
    shuffled = data.draw(st.permutations(events))

    with mock.patch.object(definitions, "MAX_DISTINCT_VALUES", 3):
        in_order, out_of_order = fold_all(t, events), fold_all(t, shuffled)
    newest = max((e["ts"] for e in events), default=0)
    for as_of in (newest, newest + D, newest + 5 * D):
        count = t.value(in_order, as_of)
        assert count == t.value(out_of_order, as_of)
        assert isinstance(count, int) and count <= 3


@settings(max_examples=200, deadline=None)
@given(window=st.sampled_from([1, 2, 10]), rows=CROWDED_EVENTS, in_place=st.booleans())
def test_a_windowed_distinct_count_counts_the_values_its_window_saw(
    window: int, rows: list[tuple[int, int, int, Any]], in_place: bool
) -> None:
    """Folded one by one, in any order, a windowed distinct count answers as
    the events themselves say: the values (7 and 7.0 one value, True
    another) seen on the days its window covers."""
    days = f"window_days: {window}"
    t = trait(f"{{aggregate: distinct_count, property: category, topic: purchases, {days}}}")
    state: dict[str, Any] | None = None
    for day, ms, _, c in rows:
        event = order(day * D + ms, category=c)
        state = t.fold_into(state, event) if in_place else t.fold(state, event)
    newest = max((day for day, *_ in rows), default=0)
    for as_of_day in range(newest, newest + window + 1):
        seen = {
            (type(c) is bool, c) for day, _, _, c in rows if as_of_day - window < day <= as_of_day
        }
        assert t.value(state, as_of_day * D + 5) == len(seen)


@settings(max_examples=150, deadline=None)
@given(
    aggregate=st.sampled_from(["count", "sum", "avg", "min", "max", "latest", "distinct_count"]),
    window=st.sampled_from([None, 1, 3, 30]),
    rows=EVENTS,
)
def test_folding_in_place_gives_the_states_folding_afresh_does(
    aggregate: str, window: int | None, rows: list[tuple[int, int, int, Any]]
) -> None:
    prop = {"count": "", "distinct_count": ", property: category"}.get(
        aggregate, ", property: amount"
    )
    days = "" if window is None else f", window_days: {window}"
    t = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}{days}}}")
    fresh: dict[str, Any] | None = None
    in_place: dict[str, Any] | None = None
    for day, ms, amount, c in rows:
        event = order(day * D + ms, amount=amount, category=c)
        fresh = t.fold(fresh, event)
        in_place = t.fold_into(in_place, event)
        assert in_place == fresh
        assert in_place is None or list(in_place.get("d", ())) == list(fresh.get("d", ()))
        if in_place is not None and "k" in in_place:  # a windowed count: the two lists agree
            assert len(in_place["k"]) == len(in_place["n"]) and all(n > 0 for n in in_place["n"])


@settings(max_examples=200, deadline=None)
@given(
    aggregate=st.sampled_from(["count", "sum", "avg", "min", "max"]),
    window=st.sampled_from([1, 3, 30]),
    rows=EVENTS,
    in_place=st.booleans(),
)
def test_a_windowed_state_keeps_its_days_in_order_and_answers_as_its_events_say(
    aggregate: str, window: int, rows: list[tuple[int, int, int, Any]], in_place: bool
) -> None:
    """Whatever order events come in, a windowed state holds its days in
    ascending order, and its value and next change are those worked out
    from the events themselves."""
    prop = "" if aggregate == "count" else ", property: amount"
    t = trait(f"{{aggregate: {aggregate}, topic: purchases{prop}, window_days: {window}}}")
    state: dict[str, Any] | None = None
    for day, ms, amount, _ in rows:
        event = order(day * D + ms, amount=amount)
        state = t.fold_into(state, event) if in_place else t.fold(state, event)
    held = [int(day) for day in (state or {}).get("d", {})] + list((state or {}).get("k", []))
    assert held == sorted(held) and len(held) == len(set(held))
    newest = max((day for day, *_ in rows), default=0)
    for as_of_day in (newest, newest + 1, newest + window - 1, newest + window):
        inside = [(d, a) for d, _, a, _ in rows if as_of_day - window < d <= as_of_day]
        amounts = [a for _, a in inside]
        expected: Any = {
            "count": len(inside),
            "sum": sum(amounts),
            "avg": sum(amounts) / len(amounts) if amounts else None,
            "min": min(amounts, default=None),
            "max": max(amounts, default=None),
        }[aggregate]
        as_of = as_of_day * D + 5
        assert t.value(state, as_of) == expected
        # The next change: the first day still held that leaves after as_of.
        leaving = [d + window for d, _, _, _ in rows if d + window > as_of_day]
        assert t.next_change_ms(state, as_of) == (min(leaving) * D if leaving else None)


@pytest.mark.parametrize("constant", ['"gold"', "null", "3", "2.5"])
@pytest.mark.parametrize("op", ["==", "!="])
@pytest.mark.parametrize("value", ["gold", "silver", None, 3, 3.0, 2.5, True, 0, ["gold"]])
def test_a_comparison_with_a_constant_decides_as_the_general_rule(
    constant: str, op: str, value: Any
) -> None:
    """The comparisons compiled for a constant (text, null, number) answer as
    the general comparison does: no True == 1, no "3" == 3, null only equals
    null."""
    defs = load_definitions(
        f"version: 1\naudiences: {{probe: {{when: 'segment.tier {op} {constant}'}}}}"
    )
    literal = json.loads(constant)
    expected = definitions._compare(op, value, literal)
    assert defs.audiences["probe"].evaluate(Context(0, segments={"tier": value})) is expected
