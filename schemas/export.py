"""Write the JSON Schema file of every contract into ``schemas/json/``.

Producers and notification services that are not written in Python use
these files; ``tests/unit/test_contracts.py`` fails when they drift from the
records in :mod:`schemas.records`.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.records import CONTRACTS, SCHEMA_VERSION, json_schema

SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def schema_path(contract: str) -> Path:
    """Where the JSON Schema of ``contract`` is published."""
    return SCHEMA_DIR / f"{contract}.v{SCHEMA_VERSION}.json"


def render(contract: str) -> bytes:
    """The exact bytes of the published schema file."""
    return orjson.dumps(json_schema(contract), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def export_all() -> list[Path]:
    """Write every contract's schema file; return the paths."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    paths = []
    for contract in CONTRACTS:
        path = schema_path(contract)
        path.write_bytes(render(contract) + b"\n")
        paths.append(path)
    return paths
