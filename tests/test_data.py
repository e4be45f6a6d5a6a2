"""The evaluation data in the repository: every file checksummed, licensed and described, and a
loader refuses a changed copy (naming the file and both hashes) before reading it."""

import hashlib
import json
import re

import pytest

from s2d_utils import paths
from s2d_utils.tasks import DataChecksumError, data_problems, gsm8k, judge, read_checksums, verify_data

FOLDERS = ("gsm8k", "mt_bench", "rephrase_and_respond")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fake_data(tmp_path):
    """A two-file data folder with its SHA256SUMS, in the repository's layout."""
    rows = {"gsm8k/test.jsonl": json.dumps({"question": "2+2?", "answer": "4\n#### 4"}) + "\n",
            "gsm8k/train.jsonl": "".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"}) + "\n"
                                         for i in range(10))}
    for rel, text in rows.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "SHA256SUMS").write_text("".join(f"{sha(t)}  {rel}\n" for rel, t in sorted(rows.items())))
    return tmp_path


def test_every_data_file_is_listed_with_its_sha256_and_matches():
    sums = read_checksums()
    on_disk = {p.relative_to(paths.DATA).as_posix() for p in paths.DATA.rglob("*")
               if p.is_file() and p.suffix in (".json", ".jsonl")}
    assert set(sums) == on_disk and {r.split("/")[0] for r in sums} == set(FOLDERS)
    for folder in FOLDERS:
        assert data_problems(folder) == [], folder
    assert sums["gsm8k/test.jsonl"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"


def test_each_folder_carries_its_license_and_the_readme_gives_each_files_origin_and_hash():
    readme = (paths.DATA / "README.md").read_text()
    for folder in FOLDERS:
        text = (paths.DATA / folder / "LICENSE").read_text()
        assert ("MIT License" in text) if folder != "mt_bench" else ("Apache License" in text and "Version 2.0" in text)
    for rel, digest in read_checksums().items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{rel}` |")), None)
        assert row is not None and re.search(r"@ `[0-9a-f]{40}`", row) and ("MIT" in row or "Apache-2.0" in row), rel
        assert f"{digest}  {rel}" in readme


def test_a_changed_file_is_an_error_naming_it_and_both_hashes(fake_data):
    assert verify_data("gsm8k", fake_data) == fake_data / "gsm8k"
    path = fake_data / "gsm8k" / "test.jsonl"
    expected = sha(path.read_text())
    path.write_text(path.read_text().replace("#### 4", "#### 5"))
    with pytest.raises(DataChecksumError) as err:
        verify_data("gsm8k", fake_data)
    msg = str(err.value)
    assert f"{path}: sha256 {sha(path.read_text())}, expected {expected}" in msg and "git checkout --" in msg
    assert "train.jsonl" not in msg  # only the file at fault


def test_a_missing_or_unlisted_file_is_an_error_too(fake_data):
    (fake_data / "gsm8k" / "train.jsonl").unlink()
    (fake_data / "gsm8k" / "extra.jsonl").write_text("{}\n")
    problems = data_problems("gsm8k", fake_data)
    assert len(problems) == 2
    assert problems[0].startswith(f"{fake_data / 'gsm8k' / 'train.jsonl'}: missing")
    assert problems[1].startswith(f"{fake_data / 'gsm8k' / 'extra.jsonl'}: not listed")
    assert data_problems("mt_bench", fake_data) == [f"{fake_data / 'SHA256SUMS'}: lists no file of mt_bench/"]
    (fake_data / "SHA256SUMS").unlink()
    assert "SHA256SUMS: missing" in data_problems("gsm8k", fake_data)[0]


def test_loaders_check_the_default_copy_before_reading_it_and_take_overrides_as_given(fake_data, monkeypatch):
    monkeypatch.delenv(gsm8k.DATA_ENV, raising=False)
    monkeypatch.setattr(paths, "DATA", fake_data)
    assert [e.gold for e in gsm8k.load("test")] == ["4"]
    (fake_data / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "#### 5"}) + "\n")
    with pytest.raises(DataChecksumError, match="test.jsonl: sha256"):
        gsm8k.load("test")
    with pytest.raises(DataChecksumError, match="lists no file of mt_bench/"):
        judge.data_folder()
    assert [e.gold for e in gsm8k.load("test", source=fake_data / "gsm8k")] == ["5"]  # DATA_SOURCE: as given
    monkeypatch.setenv(gsm8k.DATA_ENV, str(fake_data))  # S2D_DATA: one's own copy, as given
    assert [e.gold for e in gsm8k.load("test")] == ["5"]


def test_a_hub_id_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="needs network access"):
        gsm8k.load("test", source="nobody-s2d/no-such-dataset")


def test_jsonl_rows_are_read_with_errors_naming_the_file_the_line_and_the_field(tmp_path):
    from s2d_utils.files import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "n": 1}\n\n{"id": "b", "n": null}\n')
    assert read_jsonl(path) == [{"id": "a", "n": 1}, {"id": "b", "n": None}]
    assert read_jsonl(path, {"id": str, "n": (int, type(None))}) == read_jsonl(path, ("id", "n"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} line 3: field 'n' must be int, got None$"):
        read_jsonl(path, {"id": str, "n": int})  # lines count from 1, the blank one included
    with pytest.raises(ValueError, match=r"line 1: field 'x' is missing"):
        read_jsonl(path, ("id", "x"))
    with pytest.raises(ValueError, match=r"line 3: n is null"):
        read_jsonl(path, check=lambda row: "n is null" if row["n"] is None else None)
    path.write_text('{"id": "a"}\n[1, 2]\n')
    assert read_jsonl(path)[1] == [1, 2]  # no fields asked for: any JSON value is a row
    with pytest.raises(ValueError, match=r"line 2: expected an object, got list"):
        read_jsonl(path, ("id",))
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"rows.jsonl line 2: not valid JSON"):
        read_jsonl(path)


def test_files_are_written_whole_or_not_at_all(tmp_path):
    from s2d_utils.files import staged_folder, write_atomic

    path = tmp_path / "metrics.json"
    assert write_atomic(path, "one") == path and path.read_text() == "one"
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"

    class Unwritable(str):
        def encode(self, *args):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomic(path, Unwritable("three"))
    assert path.read_bytes() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    out = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with staged_folder(out) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not out.exists() and (tmp_path / "adapter.partial" / "weights").exists()
    with staged_folder(out) as tmp:
        assert list(tmp.iterdir()) == []  # a fresh folder: the killed run's half is gone
        (tmp / "weights").write_text("whole")
    assert (out / "weights").read_text() == "whole" and not (tmp_path / "adapter.partial").exists()
