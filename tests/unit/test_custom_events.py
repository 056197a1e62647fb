"""The shop's own events: ``track`` clicks with a name and flat properties."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import orjson
import pytest

from models.profile import ProfileConfig, apply_event
from models.profile_summary import summarise
from schemas.decode import DecodeError, DecodeLimits, decode_event
from schemas.export import schema_path

NOW = time.time_ns() // 1_000_000


def track(**changes: Any) -> dict[str, Any]:
    event = {
        "event_id": "e1",
        "ts": NOW - 60_000,
        "customer_id": "c1",
        "type": "track",
        "name": "store_visit",
        "properties": {"store": "paris-3", "minutes": 25, "bought": False, "note": None},
    }
    return {k: v for k, v in {**event, **changes}.items() if v is not ...}


def decode(payload: dict[str, Any]) -> Any:
    return decode_event("clickstream", b"c1", orjson.dumps(payload), DecodeLimits(), NOW)


def test_a_track_event_with_any_name_is_accepted_with_its_properties() -> None:
    # Never defined anywhere: accepted, not dead-lettered.
    event = decode(track(name="subscription_cancelled", properties={"plan": "gold"}))
    assert (event.type, event.name, event.properties) == (
        "track",
        "subscription_cancelled",
        {"plan": "gold"},
    )
    assert decode(track(properties=...)).properties is None


@pytest.mark.parametrize(
    ("changes", "kind", "says"),
    [
        ({"name": ...}, "invalid_value", "needs a name"),
        ({"name": "page_view"}, "invalid_value", "built-in type"),
        ({"name": "Store Visit"}, "invalid_value", "$.name"),
        ({"properties": {"nested": {"a": 1}}}, "wrong_type", "$.properties"),
        ({"properties": {"list": [1, 2]}}, "wrong_type", "$.properties"),
        ({"properties": {"long": "x" * 1025}}, "invalid_value", "length <= 1024"),
        ({"properties": {f"p{i}": i for i in range(51)}}, "invalid_value", "$.properties"),
        ({"properties": {"bad key": 1}}, "invalid_value", "$.properties"),
        ({"type": "page_view"}, "invalid_value", "only track events"),
    ],
)
def test_a_malformed_track_event_is_a_decode_error_with_its_reason(
    changes: dict[str, Any], kind: str, says: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(track(**changes))
    assert caught.value.kind == kind
    assert says in caught.value.message


def test_track_events_are_counted_by_name_and_open_no_session() -> None:
    config = ProfileConfig()
    profile = None
    for n, name in enumerate(["store_visit", "store_visit", "plan_changed"]):
        record = decode(track(event_id=f"e{n}", name=name, ts=NOW - 60_000 + n))
        fields = msgspec.to_builtins(record)
        fields["topic"] = "clickstream"
        profile, outcome = apply_event(profile, fields, config)
        assert outcome == "applied"
    assert profile is not None
    summary = summarise(profile, config, NOW)
    assert summary["custom_event_counts"] == {"plan_changed": 1, "store_visit": 2}
    assert summary["event_counts"]["clickstream.track"] == 3
    assert profile["sessions"] == [] and profile["totals"].get("sessions", 0) == 0


def test_the_published_contract_describes_track_events() -> None:
    schema = orjson.loads(schema_path("clickstream").read_bytes())
    body = schema["$defs"][schema["$ref"].split("/")[-1]]
    assert "track" in body["properties"]["type"]["enum"]
    name = body["properties"]["name"]["anyOf"][0]
    assert name["pattern"] == "^[a-z][a-z0-9_]{0,62}$"
    properties = body["properties"]["properties"]["anyOf"][0]
    assert properties["maxProperties"] == 50
