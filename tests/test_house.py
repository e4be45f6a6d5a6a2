"""House habits: notebooks committed without outputs, one set of pins (requirements.txt,
environment.yml, pyproject.toml agree), a Makefile that never forces the network off or reaches
outside the clone, and `make lab` on the project's kernel."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from s2d_utils import paths

ROOT = paths.ROOT


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#;]+)\s*(?:#.*)?$", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def requirements() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


# the notebooks at notebooks/*.ipynb only (glob is not recursive): the executed copies under
# notebooks/executed/ keep their outputs on purpose
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebooks_are_committed_without_outputs_or_execution_counts(name):
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{name} cell {i}: run `make nbstripout`"
    assert "widgets" not in nb["metadata"], name


def test_environment_yml_pins_exactly_what_requirements_txt_pins():
    text = (ROOT / "environment.yml").read_text()
    pip_section = text[text.index("- pip:"):].splitlines()[1:]
    assert all(line.strip().startswith("- ") for line in pip_section if line.strip() and not line.strip().startswith("#"))
    assert pins(pip_section) == requirements()
    assert re.search(r"^\s+- python=3\.11$", text, re.M)


def test_pyproject_ranges_hold_the_pins_and_every_import_is_pinned():
    req = requirements()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    for spec in map(Requirement, declared):
        name = spec.name.lower()
        assert name in req, f"pyproject names {name}, requirements.txt does not pin it"
        assert spec.specifier.contains(req[name], prereleases=True), f"{name}=={req[name]} outside {spec.specifier}"
    assert {"psutil", "ipywidgets", "nbstripout"} <= set(req)  # peak_rss.py; widget progress bars; the git filter


def test_the_makefile_reads_nothing_beside_the_clone_and_leaves_the_network_alone():
    make = (ROOT / "Makefile").read_text()
    assert "HF_HUB_OFFLINE" not in make and "../shared" not in make and "S2D_DATA ?=" not in make
    assert "nbstripout --install" in make and "JUPYTER_PREFER_ENV_PATH" in make
    attrs = (ROOT / ".gitattributes").read_text()
    assert "*.ipynb filter=nbstripout" in attrs and "data/** -text" in attrs
    assert "figures/*.smoke.*" in (ROOT / ".gitignore").read_text()


def test_lab_and_papermill_take_the_venvs_kernel_over_a_users_own(tmp_path):
    """`make lab` exports JUPYTER_PREFER_ENV_PATH=1: a user-level "python3" kernel pointing at
    another Python must not win over .venv's."""
    user_kernel = tmp_path / "kernels" / "python3"
    user_kernel.mkdir(parents=True)
    (user_kernel / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/false", "-f", "{connection_file}"],
                                                         "display_name": "someone else's", "language": "python"}))
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path), "JUPYTER_PREFER_ENV_PATH": "1"}
    code = ("from jupyter_client.kernelspec import KernelSpecManager as K; import json; "
            "s = K().get_kernel_spec('python3'); print(json.dumps(s.argv))")
    argv = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve()
