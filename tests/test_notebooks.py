"""Notebook smoke tests: papermill runs each notebook with PROFILE="smoke" into a temporary
results folder, then we check the numbers its last cell recorded."""

import json
import os
import subprocess
import sys

import pytest

from s2d_utils import paths

pytestmark = pytest.mark.notebook

RAR_ROWS = ["System 1", "System 2: 1-step RaR", "System 2: 2-step RaR", "Distill System 1",
            "Distill System 2 (2-step RaR)", "Distill System 2 without filter"]


def run_notebook(name: str, tmp_path) -> dict:
    env = {**os.environ, "S2D_RESULTS": str(tmp_path / "results"), "S2D_FIGURES": str(tmp_path / "figures"),
           "HF_HUB_OFFLINE": "1"}
    out = tmp_path / f"{name}.ipynb"
    subprocess.run([sys.executable, "-m", "papermill", str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                    "-p", "PROFILE", "smoke", "--cwd", str(paths.NOTEBOOKS), "--log-level", "WARNING"],
                   env=env, check=True, timeout=900)
    return json.loads((tmp_path / "results" / "metrics" / f"{name}.smoke.json").read_text())


@pytest.mark.parametrize("name,task", [("01_rar_last_letter", "last_letter"), ("02_rar_coin_flip", "coin_flip")])
def test_rar_notebook_records_every_table1_row(name, task, tmp_path):
    m = run_notebook(name, tmp_path)
    rows = m["rows"]
    assert list(rows) == RAR_ROWS
    for r in rows.values():
        assert r["n"] == 6
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0
        assert 0.0 <= r["parse_failures"] <= 1.0 and r["tokens"] >= 0
    assert rows["System 2: 2-step RaR"]["tokens"] > rows["System 1"]["tokens"]
    assert m["paper"]["System 1"]["accuracy"] in (30.0, 56.1)
    f = m["filters"]["Distill System 2 (2-step RaR)"]
    assert f["inputs"] == 6 and 0 <= f["kept"] <= 6 and f["yield"] == f["kept"] / 6
    assert m["filters"]["Distill System 2 without filter"]["kept"] >= f["kept"]
    manifest = m["manifest"]
    assert manifest["parameters"]["PROFILE"] == "smoke" and len(manifest["model_fingerprint"]) == 64
    assert set(manifest["stage_seconds"]) >= {"evaluate System 1 and System 2", "sample distillation data", "fine-tune"}
    figures = tmp_path / "figures"
    assert (figures / f"table1_{task}.smoke.md").read_text().count("\n| ") == 7  # header + 6 rows
    assert (figures / f"fig_{task}_acc_vs_tokens.smoke.png").stat().st_size > 10_000
