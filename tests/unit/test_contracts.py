"""The published JSON Schemas and the Python records describe the same contracts."""

from __future__ import annotations

import orjson
import pytest

from schemas.export import render, schema_path
from schemas.records import CONTRACTS


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_published_json_schema_matches_the_python_record(contract: str) -> None:
    path = schema_path(contract)
    assert path.exists(), f"run `segstream schemas export` to publish {path.name}"
    assert path.read_bytes().strip() == render(contract).strip(), (
        f"{path.name} is stale: run `segstream schemas export`"
    )


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_every_contract_carries_a_schema_version(contract: str) -> None:
    schema = orjson.loads(schema_path(contract).read_bytes())
    body = schema["$defs"][schema["$ref"].split("/")[-1]] if "$ref" in schema else schema
    assert body["properties"]["schema_version"]["enum"] == [1]


def test_input_contracts_require_identity_time_and_type() -> None:
    for contract in ("clickstream", "purchases", "support"):
        schema = orjson.loads(schema_path(contract).read_bytes())
        body = schema["$defs"][schema["$ref"].split("/")[-1]]
        assert {"event_id", "ts", "type"} <= set(body["required"])
