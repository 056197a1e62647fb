"""The README's settings table states the defaults the code has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from streams.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `SEGSTREAM_([A-Z0-9_]+)` \| `([^`]*)` \|", re.M)


def shown(value: Any) -> set[str]:
    """How a default may be written in the README."""
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    forms = {str(value), str(value).lower()}
    if isinstance(value, float) and value.is_integer():
        forms.add(str(int(value)))
    if isinstance(value, tuple | list):
        forms.add("[" + ",".join(str(v) for v in value) + "]")
    return forms


def test_every_default_in_the_readme_table_is_the_settings_default() -> None:
    rows = ROW.findall(README.read_text(encoding="utf-8"))
    assert len(rows) > 20  # the table is there and parsed
    fields = Settings.model_fields
    wrong = {}
    for name, written in rows:
        field = fields[name.lower()]
        default = field.get_default(call_default_factory=True)
        if written not in shown(default):
            wrong[name] = (written, default)
    assert wrong == {}
