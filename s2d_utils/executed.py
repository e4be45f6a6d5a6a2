"""The cpu profile's executed notebooks, kept in the repository (`paths.EXECUTED`,
notebooks/executed/) so that a reader sees every output, figures inline, without running anything.

    python -m s2d_utils.executed results/executed/01_rar_last_letter.ipynb   # -> notebooks/executed/

`make reproduce` (profile cpu) runs papermill into results/executed/ and, once a notebook has run
through, writes its stripped copy here: what changes from one run to the next is taken out, so that
a rerun of the same tables (warm, or cold on the same CPU kind) leaves `git status` clean:

- papermill's and nbclient's timings: start and end times, durations, the exception fields, the
  cells' execution timestamps; the injected parameters cell's random id (it becomes its tag);
- widget state and widget outputs (progress bars drawn as widgets), and every stderr stream (text
  progress bars with their rates, warnings);
- this machine's repository root in any output or path (it becomes "."), a progress bar's
  carriage-return frames in stdout (only each line's last frame is kept);
- in a table (a DataFrame's HTML), the columns that measure this run rather than the results
  (`VOLATILE_COLUMNS`: stage seconds, training speed, whether a student was reused from the cache):
  their cells read "…", and the table's plain-text copy is dropped.

Execution counts stay (papermill runs every cell once, in order). Stripping is idempotent.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

from . import paths
from .files import write_atomic

LIMIT_BYTES = 5 * 2**20  # the whole folder, figures inline (tests/test_executed.py)
VOLATILE_COLUMNS = ("seconds", "tokens/s", "reused")
MASK = "…"
_PAPERMILL_VOLATILE = ("start_time", "end_time", "duration", "exception")
_WIDGET = "application/vnd.jupyter.widget"
_TABLE = re.compile(r'<table border="1" class="dataframe">.*?</table>', re.S)
_ROW = re.compile(r"<tr[^>]*>.*?</tr>", re.S)
_HEAD_CELL = re.compile(r"<th[^>]*>(.*?)</th>", re.S)
_CELL = re.compile(r"<td[^>]*>.*?</td>", re.S)
# a text progress bar's frame: "42%|####      | 21/50 [00:03<00:04, 6.1it/s]", "9step [00:03, 2.9step/s]"
_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\[\d+:\d\d(:\d\d)?(<[\d:?]+)?,\s*[\d.?]+\s*\w+/\w+\]")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _relative(text: str, root: str) -> str:
    return text.replace(root + "/", "./").replace(root, ".")


def mask_tables(html: str) -> tuple[str, bool]:
    """Each DataFrame table's `VOLATILE_COLUMNS` cells replaced by `MASK`; True if one was."""
    masked = False

    def table(m: re.Match) -> str:
        nonlocal masked
        head, sep, body = m.group(0).partition("</thead>")
        first = _ROW.search(head)
        labels = [c.strip() for c in _HEAD_CELL.findall(first.group(0))] if first else []
        columns = {i - 1 for i, label in enumerate(labels) if i > 0 and label in VOLATILE_COLUMNS}
        if not columns or not sep:
            return m.group(0)
        masked = True

        def row(r: re.Match) -> str:
            cells = itertools.count()
            return _CELL.sub(lambda c: f"<td>{MASK}</td>" if next(cells) in columns else c.group(0), r.group(0))
        return head + sep + _ROW.sub(row, body)
    return _TABLE.sub(table, html), masked


def _stdout(text: str, root: str) -> str:
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return _relative("\n".join(line for line in lines if not _BAR.search(line)), root)


def _output(out: dict, root: str) -> dict | None:
    kind = out.get("output_type")
    if kind == "stream":
        if out.get("name") == "stderr":
            return None
        text = _stdout(_text(out.get("text", "")), root)
        return {**out, "text": text} if text.strip() else None
    if kind in ("display_data", "execute_result"):
        data = dict(out.get("data", {}))
        if not data or any(k.startswith(_WIDGET) for k in data):  # a widget (a progress bar): its text too
            return None
        for mime, value in data.items():
            if mime.startswith("text/"):  # never an image: base64 may hold any run of letters and "/"
                data[mime] = _relative(_text(value), root)
        if "text/html" in data:
            data["text/html"], masked = mask_tables(data["text/html"])
            if masked:
                data.pop("text/plain", None)
        return {**out, "data": data}
    if kind == "error":
        return {**out, "traceback": [_relative(t, root) for t in out.get("traceback", [])]}
    return out


def strip(nb: dict, root: str | Path = paths.ROOT) -> dict:
    """A copy of the executed notebook ``nb`` (its JSON) without what varies between runs."""
    root = str(root).rstrip("/")
    nb = copy.deepcopy(nb)
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    pm = meta.get("papermill")
    if isinstance(pm, dict):
        for key in (*_PAPERMILL_VOLATILE, "environment_variables"):
            pm.pop(key, None)
        for key in ("input_path", "output_path"):
            if isinstance(pm.get(key), str):
                pm[key] = _relative(pm[key], root)
    for cell in nb.get("cells", []):
        cmeta = cell.setdefault("metadata", {})
        cmeta.pop("execution", None)
        if isinstance(cmeta.get("papermill"), dict):
            for key in _PAPERMILL_VOLATILE:
                cmeta["papermill"].pop(key, None)
        if "injected-parameters" in cmeta.get("tags", []) and "id" in cell:
            cell["id"] = "injected-parameters"
        if cell.get("cell_type") == "code":
            cell["outputs"] = _streams([o for o in (_output(out, root) for out in cell.get("outputs", [])) if o is not None])
    return nb


def _streams(outputs: list[dict]) -> list[dict]:
    """Consecutive stdout chunks joined into one, each ending in one newline: how a print is cut into
    chunks, and where its last newline falls beside a displayed figure, depend on timing alone."""
    out: list[dict] = []
    for o in outputs:
        if o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream" \
                and out[-1].get("name") == o.get("name"):
            out[-1] = {**out[-1], "text": out[-1]["text"] + o["text"]}
        else:
            out.append(o)
    return [{**o, "text": o["text"].rstrip("\n") + "\n"} if o.get("output_type") == "stream" else o for o in out]


def dumps(nb: dict) -> str:
    """The notebook as nbformat writes it (one-space indent, sorted keys), ending in a newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def publish(source: str | Path, folder: str | Path = paths.EXECUTED) -> Path:
    """Write the stripped copy of the executed notebook ``source`` into ``folder`` (same name)."""
    source = Path(source)
    target = paths.ensure(Path(folder)) / source.name
    text = dumps(strip(json.loads(source.read_text())))
    if not target.exists() or target.read_text() != text:  # an unchanged copy keeps its mtime
        write_atomic(target, text)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path, help="executed notebooks (papermill's output)")
    ap.add_argument("--to", type=Path, default=paths.EXECUTED, help="the folder (default: notebooks/executed/)")
    args = ap.parse_args(argv)
    for nb in args.notebooks:
        out = publish(nb, args.to)
        where = out.relative_to(paths.ROOT) if out.is_relative_to(paths.ROOT) else out
        print(f"   stripped copy: {where} ({out.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
