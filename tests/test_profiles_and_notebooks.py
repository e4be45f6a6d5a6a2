import json

import pytest

from s2d_utils import paper, paths, pipeline, profiles, tables


def test_profiles_validate_and_name_what_is_valid():
    assert profiles.rar_sizes("last_letter", "paper").n_train == 200
    assert profiles.rar_sizes("coin_flip", "paper").n_answer == 8
    assert profiles.model_for("cpu") == "qwen2.5-coder-0.5b-instruct"
    assert profiles.model_for("smoke") == "smollm2-135m-instruct"
    assert profiles.model_for("cpu", "some/model") == "some/model"
    with pytest.raises(ValueError, match=r"PROFILE='fast': expected one of \['cpu', 'gpu', 'paper', 'smoke'\]"):
        profiles.rar_sizes("coin_flip", "fast")
    with pytest.raises(ValueError, match=r"method='nope': expected one of \[.*'rar'.*\]"):
        profiles.sizes("nope", "gsm8k", "cpu")
    with pytest.raises(ValueError, match=r"task='gsm8k': expected one of \['coin_flip', 'last_letter'\]"):
        profiles.sizes("rar", "gsm8k", "cpu")
    with pytest.raises(ValueError, match="n_test=-3: must be an integer of at least 1"):
        profiles.rar_sizes("coin_flip", "cpu", n_test=-3)
    with pytest.raises(ValueError, match="samples=0: must be an integer of at least 1"):
        profiles.rar_sizes("last_letter", "cpu", samples=0)
    with pytest.raises(ValueError, match=r"top_p=1.5: must be in \(0, 1\]"):
        profiles.rar_sizes("last_letter", "cpu", top_p=1.5)
    with pytest.raises(ValueError, match=r"unknown size fields \['n_tset'\]"):
        profiles.rar_sizes("last_letter", "cpu", n_tset=3)


@pytest.mark.parametrize("bad,message", [
    (dict(PROFILE="fast"), "PROFILE='fast': expected one of"),
    (dict(MODEL="no-such-model"), "MODEL='no-such-model': not an embedded model"),
    (dict(FILTER_RULE="mode"), "FILTER_RULE='mode': expected one of"),
    (dict(DATA_SOURCE="/no/such/file.json"), "DATA_SOURCE='/no/such/file.json': expected None"),
    (dict(SEED="0"), "SEED='0': expected an integer"),
    (dict(DEVICE="tpu"), "DEVICE='tpu': expected one of"),
])
def test_bad_parameters_are_named(bad, message):
    params = dict(MODEL=None, PROFILE="smoke", SEED=0, DEVICE="auto", DATA_SOURCE=None, FILTER_RULE="majority")
    with pytest.raises(ValueError, match=message):
        pipeline.check_parameters(**{**params, **bad})


def test_paper_tables_are_keyed_by_row_and_column():
    t = paper.paper_table("table1", "coin_flip")
    assert t.value("Distill System 2 (2-step RaR)", "accuracy") == 75.7
    assert t.value("Distill System 1", "tokens") is None
    with pytest.raises(KeyError, match="no row 'Distill System 3'"):
        t.row("Distill System 3")
    with pytest.raises(KeyError, match="no column 'agreement'"):
        t.value("System 1", "agreement")
    with pytest.raises(KeyError, match="no paper figures"):
        paper.paper_table("table9", "coin_flip")


def test_output_names_keep_the_cpu_profile_on_the_committed_files(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "FIGURES", tmp_path)
    assert tables.output_path("table1_coin_flip", "cpu", "md") == tmp_path / "table1_coin_flip.md"
    assert tables.output_path("table1_coin_flip", "smoke", "csv") == tmp_path / "table1_coin_flip.smoke.csv"
    assert tables.output_path("fig_x", "paper", "png") == tmp_path / "fig_x.paper.png"


NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"01_rar_last_letter.ipynb", "02_rar_coin_flip.ipynb"}


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_one_parameters_cell(nb_path):
    """(Their outputs: tests/test_house.py.)"""
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) <= 16, f"{nb_path.name}: {len(code)} code cells; shared steps belong in s2d_utils.pipeline"
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    params = "".join(nb["cells"][tagged[0]]["source"])
    needed = ("MODEL =", "PROFILE =") + (() if nb_path.name in ("06_summary.ipynb", "07_routing.ipynb") else ("SEED =",))  # no sampling
    for name in needed:
        assert name in params
    # the parameters cell holds commented literals only: every line is NAME = literal  # comment
    for line in params.splitlines():
        assert " = " in line and "#" in line, line
    assert nb["cells"][0]["cell_type"] == "markdown"
