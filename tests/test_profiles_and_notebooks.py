import json

import pytest

from s2d_utils import paths, profiles


def test_profiles_validate():
    assert profiles.rar_sizes("last_letter", "paper").n_train == 200
    assert profiles.rar_sizes("coin_flip", "paper").n_answer == 8
    with pytest.raises(ValueError, match="PROFILE='fast'"):
        profiles.rar_sizes("coin_flip", "fast")
    with pytest.raises(ValueError, match="n_test=-3: sizes must be non-negative"):
        profiles.rar_sizes("coin_flip", "cpu", n_test=-3)
    with pytest.raises(ValueError, match="samples=0: must be at least 1"):
        profiles.rar_sizes("last_letter", "cpu", samples=0)


NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"01_rar_last_letter.ipynb", "02_rar_coin_flip.ipynb"}


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs_and_one_parameters_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    params = "".join(nb["cells"][tagged[0]]["source"])
    for name in ("MODEL =", "PROFILE =", "SEED ="):
        assert name in params
    # the parameters cell holds commented literals only: every line is NAME = literal  # comment
    for line in params.splitlines():
        assert " = " in line and "#" in line, line
    assert nb["cells"][0]["cell_type"] == "markdown"
