"""Tasks: each module has the same small surface.

- ``load(split, n, seed, source)`` -> list of `Example`
- ``extract(text, mode)`` -> the parsed answer, or None when nothing parses (counted, never raised)
- ``score(pred, gold)`` -> bool

Synthetic tasks build their data from a seed and word/name lists shipped in PyPI packages;
dataset readers take a user-given file or folder and name the file, row and field at fault.

Dataset tasks read, in order: a given ``source`` (file, folder or hub id), else ``$S2D_DATA/<folder>``
when ``S2D_DATA`` is set, else the repository's copy ``data/<folder>``, whose files are checked
against ``data/SHA256SUMS`` first (`verify_data`). The default never touches the network.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import paths
from ..files import read_jsonl, sha256_file
from ..paths import is_hub_id  # re-exported: `tasks.is_hub_id` is where callers have found it

SPLITS = ("train", "valid", "test")
DATA_ENV = "S2D_DATA"  # a folder of your own holding mt_bench/, gsm8k/, ... (not checked); unset: data/
CHECKSUMS = "SHA256SUMS"  # "<sha256>  <path relative to the data folder>" per line, as `sha256sum` writes
DATA_SUFFIXES = (".json", ".jsonl")  # files a reader may pick up by globbing: each must be listed
# how a task's answers can be read: rule name -> keyword arguments of `system2.parse` (the first is
# the table's rule); a task module overrides it with its own ``PARSE_RULES``
PARSE_RULES = {"flexible": {}, "strict": {"mode": "strict"}}


def parse_rules(task) -> dict[str, dict]:
    return getattr(task, "PARSE_RULES", PARSE_RULES)


@dataclass(frozen=True)
class Example:
    """One task input. ``gold`` is None for unlabeled inputs; ``meta`` holds task details."""

    id: str
    input: str
    gold: str | None
    meta: Mapping[str, Any] = field(default_factory=dict)


class DataChecksumError(ValueError):
    """A file of the repository's data folder is missing, changed, or not listed in its checksums."""


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash a file once per process


def file_sha256(path: Path) -> str:
    """sha256 hex digest of ``path``, remembered while its size and mtime stay the same."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def read_checksums(root: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} from ``<root>/SHA256SUMS`` (root: the repository's ``data/``)."""
    root = Path(root) if root is not None else paths.DATA
    path = root / CHECKSUMS
    if not path.exists():
        raise DataChecksumError(f"{path}: missing; it lists the sha256 of every data file (restore it from git)")
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise DataChecksumError(f"{path} line {i + 1}: expected '<sha256>  <file>', got {line!r}")
        out[parts[1].strip().lstrip("*").removeprefix("./")] = parts[0]
    return out


def data_problems(folder: str, root: Path | None = None) -> list[str]:
    """Every problem of ``<root>/<folder>`` against ``<root>/SHA256SUMS``, one message each (with
    the fix): a listed file missing or with another sha256, or a data file not listed. [] if sound."""
    root = Path(root) if root is not None else paths.DATA
    try:
        sums = read_checksums(root)
    except DataChecksumError as err:
        return [str(err)]
    listed = {rel: digest for rel, digest in sums.items() if rel.split("/", 1)[0] == folder}
    if not listed:
        return [f"{root / CHECKSUMS}: lists no file of {folder}/"]
    restore = "restore the repository's copy with `git checkout -- {}`"
    problems = []
    for rel, expected in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing (listed in {CHECKSUMS}); {restore.format(path)}")
            continue
        actual = file_sha256(path)
        if actual != expected:
            problems.append(f"{path}: sha256 {actual}, expected {expected} ({root / CHECKSUMS}): the file changed; "
                            f"{restore.format(path)}, or point DATA_SOURCE (or ${DATA_ENV}) at your own copy")
    base = root / folder
    if base.is_dir():
        for path in sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES):
            if path.relative_to(root).as_posix() not in listed:
                problems.append(f"{path}: not listed in {root / CHECKSUMS} (a reader would pick it up); remove it, "
                                f"or point DATA_SOURCE (or ${DATA_ENV}) at a folder of your own")
    return problems


def verify_data(folder: str, root: Path | None = None) -> Path:
    """``<root>/<folder>`` (root: the repository's ``data/``) after checking every file against
    ``SHA256SUMS``; a `DataChecksumError` naming each file at fault otherwise."""
    problems = data_problems(folder, root)
    if problems:
        raise DataChecksumError("\n".join(problems))
    return (Path(root) if root is not None else paths.DATA) / folder


def default_source(folder: str) -> Path:
    """Where a dataset task reads when no source is given: ``$S2D_DATA/<folder>`` if ``S2D_DATA``
    is set (your own copy, used as it is), else the repository's checked copy ``data/<folder>``."""
    root = os.environ.get(DATA_ENV)
    if root:
        return Path(root).expanduser() / folder
    return verify_data(folder)


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
    """Rows of a JSON list, a BIG-bench style {'examples': [...]} file, or JSON lines (``.jsonl``,
    or gzipped: ``.jsonl.gz``)."""
    if path.suffix == ".jsonl" or path.name.endswith(".jsonl.gz"):
        return read_jsonl(path)
    text = path.read_text(encoding="utf-8")
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


def hub_rows(dataset_id: str, split: str, config: str | None = None) -> list[dict]:
    """Rows of a hub dataset split, read with `datasets` (needs hub access or a warm HF cache).

    The defaults never come here. Offline (``HF_HUB_OFFLINE=1``, or no network) and without a cached
    copy this fails with a message that says so, instead of a long traceback from inside `datasets`.
    """
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is pinned in requirements.txt
        raise ImportError(f"reading {dataset_id!r} from the hub needs the 'datasets' package") from err
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:
        raise FileNotFoundError(f"{dataset_id!r} (split {split!r}): not a local file or folder, and the hub dataset "
                                f"could not be read ({type(err).__name__}: {err}). Reading a hub dataset needs "
                                "network access (and HF_HUB_OFFLINE unset) or a warm HF cache; offline, point the "
                                "source at a local copy (a file or folder) instead.") from err
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
