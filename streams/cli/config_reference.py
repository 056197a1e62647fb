"""The configuration reference, generated from :class:`streams.settings.Settings`.

``python -m streams.cli.config_reference > docs/configuration.md`` writes one
Markdown table per section of the Settings class: the environment variable
(``SEGSTREAM_`` + the field name in upper case), its type and bounds, its
default and its description. ``tests/unit/test_ops_files.py`` fails when the
committed file differs from what this prints, so the reference cannot drift
from the code.

>>> "| `SEGSTREAM_KAFKA_BOOTSTRAP` |" in render()
True
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from streams.settings import ENV_PREFIX, Settings

GENERATOR = "python -m streams.cli.config_reference > docs/configuration.md"
# `    # --- Kafka connection ----` in the class body opens a section.
_SECTION = re.compile(r"^\s+# -+ (?P<title>.+?) -+\s*$")
_FIELD = re.compile(r"^\s{4}(?P<name>[a-z_][a-z0-9_]*)\s*:")

_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret string",
}


def env_var(field_name: str) -> str:
    """The environment variable of a Settings field.

    >>> env_var("web_token")
    'SEGSTREAM_WEB_TOKEN'
    """
    return ENV_PREFIX + field_name.upper()


def sections() -> list[tuple[str, list[str]]]:
    """``(title, field names)`` in the order the Settings class declares them."""
    fields = set(Settings.model_fields)
    found: list[tuple[str, list[str]]] = []
    title = "General"
    for line in inspect.getsource(Settings).splitlines():
        if match := _SECTION.match(line):
            title = match["title"]
            continue
        match = _FIELD.match(line)
        if match and match["name"] in fields:
            if not found or found[-1][0] != title:
                found.append((title, []))
            found[-1][1].append(match["name"])
    listed = {name for _, names in found for name in names}
    # A field declared in a way the scan misses still gets documented.
    missing = [name for name in Settings.model_fields if name not in listed]
    if missing:
        found.append(("Other", missing))
    return found


def type_text(annotation: Any) -> str:
    """A reader's name for a field's type.

    >>> type_text(tuple[int, ...])
    'JSON list of integers'
    >>> type_text(Literal["a", "b"])
    '`a`, `b`'
    """
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return ", ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_text(arg) for arg in present) + " (optional)"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"JSON list of {_plural(args[0])}"
        return f"JSON list of {len(args)} {_plural(args[0])}"
    if origin is dict:
        return f"JSON object of {_plural(args[1])}"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(annotation: Any) -> str:
    name = type_text(annotation)
    return name if name.endswith("s") else name + "s"


def bounds_text(info: FieldInfo) -> str:
    """The field's numeric bounds, e.g. ``≥ 1, ≤ 65535``."""
    parts: list[str] = []
    for constraint in info.metadata:
        for kind, attribute, symbol in (
            (annotated_types.Ge, "ge", "≥"),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "≤"),
            (annotated_types.Lt, "lt", "<"),
        ):
            if isinstance(constraint, kind):
                parts.append(f"{symbol} {getattr(constraint, attribute)}")
    return ", ".join(parts)


def default_value(info: FieldInfo) -> Any:
    """The field's default, calling a default factory if it has one."""
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def default_text(value: Any) -> str:
    """A default as it would be written in the environment variable.

    >>> default_text((1, 7, 30, 90))
    '`[1,7,30,90]`'
    >>> default_text(None)
    '—'
    """
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        # Only placeholders are defaults; a deployment must set its own.
        value = value.get_secret_value()
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple | list | dict):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows() -> Iterator[tuple[str, list[tuple[str, str, str, str]]]]:
    """``(section, [(variable, type, default, description)])`` per section."""
    for title, names in sections():
        table: list[tuple[str, str, str, str]] = []
        for name in names:
            info = Settings.model_fields[name]
            kind = type_text(info.annotation)
            bounds = bounds_text(info)
            if bounds:
                kind += f"; {bounds}"
            table.append(
                (
                    f"`{env_var(name)}`",
                    _cell(kind),
                    _cell(default_text(default_value(info))),
                    _cell(info.description or ""),
                )
            )
        yield title, table


def render() -> str:
    """The whole Markdown reference."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from streams/settings.py by `{GENERATOR}`; do not edit by hand. -->",
        "",
        "Every setting of a segstream worker and of the `segstream` command is a field",
        "of `streams.settings.Settings`, read from an environment variable named",
        f"`{ENV_PREFIX}` + the field name in upper case, or from a `.env` file in the",
        "working directory. Lists and objects are written as JSON",
        '(`SEGSTREAM_WINDOWS_DAYS=[1,7,30]`, `SEGSTREAM_SLA_RESOLUTION_S={"urgent":3600}`);',
        "booleans as `true` / `false`. Faust's own environment variables are ignored.",
        "Secret strings are never logged; their defaults are placeholders that every",
        "deployment must replace.",
        "",
    ]
    for title, table in rows():
        lines += [f"## {title}", ""]
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in table]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Print the reference (``python -m streams.cli.config_reference``)."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
