"""Reading and writing files: one way each (the bottom layer, beside `paths`; standard library only).

- `write_atomic`: a file written whole or not at all (a temporary file in the same folder, then a
  rename), so a killed run never leaves half a cache, metrics file or trace file behind;
- `staged_folder`: the same for a folder (an adapter, a converted checkpoint): filled under
  ``<name>.partial`` and renamed into place at the end;
- `read_jsonl`: the rows of a JSON-lines file, each error naming the file, the 1-based line and
  the field at fault;
- `sha256_file`: the sha256 of a file, streamed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

PARTIAL = ".partial"  # the suffix of a folder being filled (`staged_folder`; train.py resumes from it)


def write_atomic(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically: into a temporary file beside it
    (``.<name>.<pid>.tmp``: the same file system, so the rename is atomic; one per process), then
    renamed over ``path``. Readers see the old file or the new one, never a part; a failed write
    removes its temporary file. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode(encoding) if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def partial(out: str | Path) -> Path:
    """The folder ``out`` is filled in before it is renamed into place: ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL)


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A fresh, empty ``<out>.partial`` folder to fill inside the block; when the block ends
    without an error, whatever was at ``out`` goes and the folder is renamed to ``out``. A run
    killed or failing inside the block leaves only ``<out>.partial``: ``out`` never looks done."""
    out = Path(out)
    tmp = partial(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


Types = type | tuple[type, ...]


def _type_names(kind: Types) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def read_jsonl(path: str | Path, required: Mapping[str, Types | None] | tuple[str, ...] = (),
               check: Callable[[Any], str | None] | None = None) -> list[Any]:
    """The rows of a JSON-lines file (``.jsonl``, or gzipped ``.jsonl.gz``), in order (blank lines skipped).

    ``required``: fields every row must have (a row must then be a JSON object), as names, or as
    {name: type or tuple of types (``type(None)`` for null), None for any}. ``check(row)``: any
    further test, returning what is wrong with the row (or None). Every error is a ValueError
    ``"<path> line <n>: ..."`` (n counts from 1, blank lines included) naming the field at fault."""
    fields = required if isinstance(required, Mapping) else dict.fromkeys(required)
    rows = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not valid JSON ({err.msg})") from err
            if fields and not isinstance(row, dict):
                raise ValueError(f"{path} line {n}: expected an object, got {type(row).__name__}")
            for name, kind in fields.items():
                if name not in row:
                    raise ValueError(f"{path} line {n}: field {name!r} is missing")
                if kind is not None and not isinstance(row[name], kind):
                    raise ValueError(f"{path} line {n}: field {name!r} must be {_type_names(kind)}, got {row[name]!r}")
            if check is not None and (problem := check(row)):
                raise ValueError(f"{path} line {n}: {problem}")
            rows.append(row)
    return rows


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
