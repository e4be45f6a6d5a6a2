"""The cpu profile's executed notebooks (notebooks/executed/, s2d_utils.executed): stripped of what
varies between runs (idempotently), at most 5 MB, and showing the numbers of figures/ (a copy that
does not is stale: rerun `make reproduce`)."""

import json
import subprocess

import pytest

from s2d_utils import executed, paths, registry

ROOT = "/home/someone/s2d"  # a made-up machine's repository root
PNG = "iVBORw0KGgo/home/someone/s2dAAAA"  # base64 may hold anything, the root included: never touched
FRAMES = "fine-tune x:  50%|#####     | 6/12 [00:03<00:03, 2.0step/s]\rfine-tune x: 100%|##########| 12/12 [00:06<00:00]\n"
TABLE_HTML = """<div><table border="1" class="dataframe">
  <thead>
    <tr style="text-align: right;">
      <th></th>
      <th>McNemar p</th>
      <th>seconds</th>
    </tr>
  </thead>
  <tbody>
    <tr>
      <th>fine-tune</th>
      <td>NaN</td>
      <td>127.0</td>
    </tr>
    <tr>
      <th>S1 vs S2</th>
      <td>0.5</td>
      <td>NaN</td>
    </tr>
  </tbody>
</table>
</div>"""


def notebook() -> dict:
    """A small executed notebook as papermill writes it, with one of each volatile field."""
    timing = {"start_time": "2026-12-03T10:00:00", "end_time": "2026-12-03T10:00:04", "duration": 4.2,
              "exception": None, "status": "completed"}
    execution = {"iopub.execute_input": "2026-12-03T10:00:00.1Z", "shell.execute_reply": "2026-12-03T10:00:04Z"}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "papermill": {**timing, "parameters": {"PROFILE": "cpu"}, "environment_variables": {},
                      "input_path": f"{ROOT}/notebooks/01_x.ipynb", "output_path": "results/executed/01_x.ipynb"},
        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# A table"},
            {"cell_type": "code", "id": "a3f9c0d1-random", "execution_count": 1, "source": "PROFILE = 'cpu'",
             "metadata": {"tags": ["injected-parameters"], "papermill": dict(timing), "execution": dict(execution)},
             "outputs": []},
            {"cell_type": "code", "id": "run", "execution_count": 2, "source": "run()",
             "metadata": {"papermill": dict(timing), "execution": dict(execution)}, "outputs": [
                 {"output_type": "stream", "name": "stderr", "text": FRAMES + "UserWarning: slow\n"},
                 {"output_type": "stream", "name": "stdout", "text": [f"written: {ROOT}/figures/t.md\n", FRAMES]},
                 {"output_type": "stream", "name": "stdout", "text": FRAMES},
                 {"output_type": "display_data", "metadata": {}, "data": {
                     "application/vnd.jupyter.widget-view+json": {"model_id": "e1b2", "version_major": 2},
                     "text/plain": "HBox(children=(FloatProgress(value=0.0),))"}},
                 {"output_type": "display_data", "metadata": {}, "data": {
                     "text/markdown": f"| a | b |\n|---|---|\n| 1 | {ROOT}/x |", "text/plain": "<Markdown>"}},
                 {"output_type": "execute_result", "execution_count": 2, "metadata": {},
                  "data": {"text/html": TABLE_HTML, "text/plain": "           McNemar p  seconds\nfine-tune NaN  127.0"}},
                 {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG, "text/plain": "<Image>"}},
             ]},
        ]}


def test_stripping_removes_each_volatile_field_and_keeps_the_results():
    out = executed.strip(notebook(), ROOT)
    text = json.dumps(out)
    for gone in ("start_time", "end_time", "duration", "exception", "iopub", "execute_reply", "widget",
                 "environment_variables", "a3f9c0d1", "it/s", "step/s", "UserWarning", "127.0", "00:03"):
        assert gone not in text, gone
    assert ROOT not in text.replace(PNG, "")
    assert out["metadata"]["papermill"] == {"parameters": {"PROFILE": "cpu"}, "input_path": "./notebooks/01_x.ipynb",
                                            "output_path": "results/executed/01_x.ipynb", "status": "completed"}
    injected, run = out["cells"][1], out["cells"][2]
    assert injected["id"] == "injected-parameters" and injected["metadata"]["papermill"] == {"status": "completed"}
    assert "execution" not in run["metadata"] and run["execution_count"] == 2  # counts stay: one run, in order
    outputs = run["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "display_data", "execute_result", "display_data"]
    assert outputs[0] == {"output_type": "stream", "name": "stdout", "text": "written: ./figures/t.md\n"}
    assert outputs[1]["data"]["text/markdown"] == "| a | b |\n|---|---|\n| 1 | ./x |"
    table = outputs[2]["data"]
    assert set(table) == {"text/html"}  # the plain copy cannot be masked column-wise: dropped
    assert "<td>0.5</td>" in table["text/html"] and "<td>…</td>" in table["text/html"]
    assert table["text/html"].count("<td>…</td>") == 2 and "<th>seconds</th>" in table["text/html"]
    assert outputs[3]["data"]["image/png"] == PNG
    assert out["cells"][0] == notebook()["cells"][0]


def test_stripping_is_idempotent_and_its_text_stable():
    once = executed.strip(notebook(), ROOT)
    assert executed.strip(once, ROOT) == once
    assert executed.dumps(executed.strip(json.loads(executed.dumps(once)), ROOT)) == executed.dumps(once)
    assert executed.strip(notebook(), ROOT + "/") == once


def test_publish_writes_the_stripped_copy_and_leaves_an_unchanged_one_alone(tmp_path):
    src = tmp_path / "results" / "01_x.ipynb"
    src.parent.mkdir()
    src.write_text(json.dumps(notebook()))
    out = executed.publish(src, tmp_path / "executed")
    assert out == tmp_path / "executed" / "01_x.ipynb"
    assert json.loads(out.read_text()) == executed.strip(notebook())
    mtime = out.stat().st_mtime_ns
    executed.publish(src, tmp_path / "executed")
    assert out.stat().st_mtime_ns == mtime


def test_make_reproduce_publishes_the_cpu_profiles_notebooks_outside_the_nbstripout_filter():
    make = (paths.ROOT / "Makefile").read_text()
    assert "$(if $(filter cpu,$(PROFILE)),$(PY) -m s2d_utils.executed results/executed/$$name.ipynb" in make
    assert paths.EXECUTED == paths.NOTEBOOKS / "executed"
    attrs = subprocess.run(["git", "-C", str(paths.ROOT), "check-attr", "filter", "diff", "--",
                            "notebooks/executed/01_rar_last_letter.ipynb"], capture_output=True, text=True)
    if attrs.returncode:
        pytest.skip("not a git checkout")
    assert "filter: unset" in attrs.stdout and "diff: unspecified" in attrs.stdout


# the committed executed notebooks: each one's table (or verdicts, or routing) file from figures/
SHOWN = {**{nb.notebook: nb.table for nb in registry.NOTEBOOKS},
         registry.SUMMARY: registry.SUMMARY_FILE, registry.ROUTING: registry.ROUTING_FILE}


def _rel(path):
    return path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path


def _folder():
    if not paths.EXECUTED.is_dir():
        pytest.skip(f"{_rel(paths.EXECUTED)} absent: `make reproduce` (profile cpu) writes it")
    return paths.EXECUTED


def _shown_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append(executed._text(out.get("text", "")))
            parts += [executed._text(v) for k, v in out.get("data", {}).items() if k in ("text/markdown", "text/plain")]
    return "\n".join(parts)


def test_the_executed_folder_is_small_and_stripped():
    folder = _folder()
    files = sorted(folder.glob("*.ipynb"))
    assert sum(f.stat().st_size for f in files) <= executed.LIMIT_BYTES, "notebooks/executed/ is over 5 MB"
    for f in files:
        text = f.read_text()
        assert str(paths.ROOT) not in text, f"{f.name} names this machine's repository root"
        assert executed.dumps(executed.strip(json.loads(text))) == text, f"{f.name}: not stripped (s2d_utils.executed)"


def stale_rows(path, figure) -> tuple[list[str], int]:
    """The table rows of ``figure`` (a figures/*.md) that the executed notebook ``path`` does not show."""
    shown = _shown_text(json.loads(path.read_text()))
    rows = [line for line in figure.read_text().splitlines() if line.startswith("| ")]
    assert rows, figure
    return [row for row in rows if row not in shown], len(rows)


def test_a_notebook_showing_other_numbers_is_stale(tmp_path):
    figure = tmp_path / "table9.md"
    figure.write_text("# T\n\n| Method | Acc |\n|---|---|\n| System 1 | 20.0 |\n| System 2 | 30.0 |\n\n- a note\n")
    nb = notebook()
    path = tmp_path / "09_x.ipynb"
    path.write_text(json.dumps(nb))
    assert stale_rows(path, figure) == (["| Method | Acc |", "| System 1 | 20.0 |", "| System 2 | 30.0 |"], 3)
    nb["cells"][2]["outputs"][4]["data"]["text/markdown"] = "| Method | Acc |\n|---|---|\n| System 1 | 20.0 |\n| System 2 | 31.0 |"
    path.write_text(json.dumps(executed.strip(nb)))
    assert stale_rows(path, figure) == (["| System 2 | 30.0 |"], 3)


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_each_executed_notebook_shows_the_numbers_of_figures(name):
    path = _folder() / f"{name}.ipynb"
    assert path.exists(), f"{_rel(path)} missing: rerun `make reproduce`"
    figure = paths.ROOT / "figures" / f"{SHOWN[name]}.md"
    stale, n = stale_rows(path, figure)
    assert not stale, (f"{_rel(path)} is stale: {len(stale)} of {n} rows of "
                       f"figures/{figure.name} are not in its outputs (first: {stale[0][:120]}); rerun `make reproduce`")


def test_stdout_chunks_are_joined_whatever_the_timing():
    """A print cut into two chunks, or its last newline landing after a displayed figure, strips to
    the same outputs as the print in one piece."""
    from s2d_utils import executed

    def nb(outputs):
        return {"metadata": {}, "cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": outputs}]}

    png = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    one = nb([{"output_type": "stream", "name": "stdout", "text": "votes: [1, 2]\nmore\n"}, png])
    two = nb([{"output_type": "stream", "name": "stdout", "text": "votes:"},
              {"output_type": "stream", "name": "stdout", "text": " [1, 2]\nmore"}, png,
              {"output_type": "stream", "name": "stdout", "text": "\n"}])
    assert executed.strip(one, "/x") == executed.strip(two, "/x")
    assert executed.strip(one, "/x")["cells"][0]["outputs"][0]["text"] == "votes: [1, 2]\nmore\n"
