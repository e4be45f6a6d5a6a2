"""What `tests/test_cuda.py` needs on a GPU machine without this environment, gathered into `.device/`.

Such a machine (a GPU image with torch, accelerate and pytest) may have an older transformers, none
of this project's pins, and no embedded SmolLM2 (whose tokenizer the tiny test models use; its
wheel is too large for the kit). This writes, into `.device/` (ignored by git):

- ``tiny-llama/`` and ``tiny-qwen2/``: the tests' tiny random models (`tests/tiny_models.py`), in
  bf16 to halve their size (the tests load them in the dtype each needs);
- ``whl/``: the wheels of transformers, peft, tokenizers and safetensors at the versions
  requirements.txt pins, and of regex (transformers checks its version at import) at the version
  this environment runs, for the GPU machine's Python (3.12, x86-64 Linux).

It prints the kit's size with the repository's tracked files and fails when they weigh more than
``--max-mb`` (default 64): the most the kit may weigh, with the working tree, for the GPU machine.

    .venv/bin/python benchmarks/device_kit.py [--max-mb 64]
    # then, on the GPU machine, in a copy of the repository with .device/ beside its files:
    bash benchmarks/device_check.sh

`device_check.sh` installs the wheels beside the machine's packages, points the fixtures at the
tiny models (``S2D_TINY_MODELS``) and runs the GPU tests, their log and versions under the folder it is given, or ``S2D_LOG_DIR``
(else ``results/device/``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import tiny_models  # noqa: E402

PINNED = ("transformers", "peft", "tokenizers", "safetensors")  # in the kit at requirements.txt's pins
# what transformers checks at import beyond those (not pinned here: the version this environment
# runs). Not huggingface_hub: the GPU image the kit is made for has 1.33, which meets
# transformers' >= 1.31, and the 2.x this environment runs needs packages that image lacks (httpx2)
ALSO = ("regex",)
MAX_MB = 64  # default of --max-mb: the most the kit, with the working tree, may weigh


def pins(names=PINNED) -> list[str]:
    """``name==version`` of ``names`` as requirements.txt pins them."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if m and m.group(1).lower() in names:
            found[m.group(1).lower()] = f"{m.group(1)}=={m.group(2)}"
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"requirements.txt pins no {missing}")
    return [found[n] for n in names]


def kit_requirements() -> list[str]:
    """``name==version`` of every wheel in the kit: the pins, and the versions this
    environment runs of what transformers checks at import (torch and accelerate: the machine's)."""
    from importlib.metadata import version

    return pins() + [f"{name}=={version(name)}" for name in ALSO]


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def build_kit(out: Path, wheels: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in tiny_models.NAMES:
        tiny_models.build(name, out / name, dtype="bfloat16")
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                        "-d", str(out / "whl"), *kit_requirements()], check=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".device")
    ap.add_argument("--no-wheels", action="store_true", help="the tiny models only")
    ap.add_argument("--max-mb", type=float, default=MAX_MB,
                    help=f"the most the kit may weigh, with the repository's tracked files, for a GPU machine "
                         f"without this environment (MB; default {MAX_MB})")
    args = ap.parse_args()
    out = build_kit(args.out, wheels=not args.no_wheels)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tree = sum((ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (ROOT / f).is_file()) / 2**20
    total = tree + size_mb(out)
    print(f"{out}: {size_mb(out):.1f} MB; with the working tree ({tree:.1f} MB) {total:.1f} MB of at most "
          f"{args.max_mb:g} MB (--max-mb)")
    if total > args.max_mb:
        print(f"over --max-mb {args.max_mb:g}: a copy of the working tree adds its untracked files too (git status)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
