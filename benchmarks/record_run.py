"""Record one `make reproduce` run's times and peak memory as a committed file the README shows.

    .venv/bin/python benchmarks/peak_rss.py -- make reproduce 2>&1 | tee reproduce.log
    .venv/bin/python benchmarks/record_run.py reproduce.log            # the cold run
    .venv/bin/python benchmarks/peak_rss.py -- make reproduce 2>&1 | tee warm.log
    .venv/bin/python benchmarks/record_run.py --warm warm.log          # the rerun from the cache

Reads each notebook's wall time from the make loop's lines ("   01_rar_last_letter: 1170 s"),
the peak resident memory from `peak_rss.py`'s report, and each notebook's stage times from its
run manifest (``results/metrics/<notebook>.<profile>.json``), and writes (or, with ``--warm``,
adds to) ``figures/reproduce_<profile>.json``, checked against the limits the project set for the
profile. Run it right after the run it records: a later run overwrites the manifests. The record
names the machine ("machine", and "cpu": model, cores, the ISA flags that decide the bf16 kernels,
torch's and transformers' versions), since another CPU kind gives other tables (docs/machines.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the cpu job's limits (issue 18): cold run, each notebook cold, each notebook warm, peak memory
LIMITS = {"cold_total_s": 90 * 60, "notebook_cold_s": 20 * 60, "notebook_warm_s": 2 * 60, "peak_rss_gb": 8.0}

_NOTEBOOK = re.compile(r"^\s+(\d\d_[A-Za-z0-9_]+): (\d+) s\s*$")
_STARTED = re.compile(r"^== (\d\d_[A-Za-z0-9_]+) \(profile")
_PEAK = re.compile(r"^\s+([\d.]+) GB\s+(.*)$")


def parse_log(text: str) -> dict:
    """Per-notebook seconds, the peak memory lines and the profile, from a reproduce log."""
    text = text.replace("\r", "\n")
    seconds = {m.group(1): int(m.group(2)) for m in map(_NOTEBOOK.match, text.splitlines()) if m}
    started = [m.group(1) for m in map(_STARTED.match, text.splitlines()) if m]
    profile = re.search(r"\(profile (\w+)\)", text)
    peaks = []
    if "peak resident memory" in text:
        for line in text.split("peak resident memory", 1)[1].splitlines()[1:]:
            m = _PEAK.match(line)
            if not m:
                break
            peaks.append((float(m.group(1)), m.group(2).strip()))
    if not seconds:
        raise ValueError("no notebook times in the log: expected make's lines like '   01_rar_last_letter: 1170 s'")
    if not peaks:
        raise ValueError("no peak memory in the log: run `make reproduce` under benchmarks/peak_rss.py")
    tree = [gb for gb, what in peaks if what.startswith("whole process tree")]
    notebooks = {what.split(None, 1)[1]: gb for gb, what in peaks if what.startswith("notebook ")}
    process = [gb for gb, what in peaks if not what.startswith(("whole process tree", "notebook "))]
    return {"profile": profile.group(1) if profile else None, "notebook_s": seconds,
            "unfinished": [name for name in started if name not in seconds],
            "peak_process_gb": max(process) if process else None, "peak_tree_gb": tree[0] if tree else None,
            "peak_notebook_gb": notebooks}


def _stages(profile: str) -> dict:
    out = {}
    for path in sorted((ROOT / "results" / "metrics").glob(f"*.{profile}.json")):
        manifest = json.loads(path.read_text()).get("manifest", {})
        out[path.name.split(".")[0]] = {k: round(v) for k, v in manifest.get("stage_seconds", {}).items()}
    return out


# the CPU flags that decide which bf16 / fp32 matrix kernels torch runs (oneDNN picks AMX tiles, then
# AVX-512 BF16, then AVX-512, then AVX2/FMA): two CPUs that differ here round bf16 products differently,
# so their tables differ (docs/machines.md)
KERNEL_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2", "fma")


def _cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of `KERNEL_FLAGS` the CPU has, from /proc/cpuinfo's first "flags" line (all False
    where there is none, e.g. off Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.split(":", 1)[0].strip() == "flags":
            flags = set(line.split(":", 1)[1].split())
            break
    return {f: f in flags for f in KERNEL_FLAGS}


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu() -> dict:
    """This machine's CPU as a record's "cpu" field: model, cores, the kernel-deciding flags, and
    the versions of torch and transformers (both change the kernels a table's numbers come from)."""
    return {"model": _cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(),
            "torch": _version("torch"), "transformers": _version("transformers")}


def machine() -> str:
    """This machine's CPU model and core count, for a measurement's record."""
    return f"{_cpu_model()}, {os.cpu_count()} cores"


def _commit() -> str | None:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


def record(log_text: str, out: Path, warm: bool = False, stopped_after: int | None = None) -> dict:
    """``stopped_after``: seconds the unfinished notebook (one the run was stopped in) had run."""
    run = parse_log(log_text)
    profile = run.pop("profile") or "cpu"
    if run["unfinished"] and stopped_after is None:
        raise ValueError(f"{run['unfinished']} did not finish: give --stopped-after SECONDS (how long it ran)")
    run["stopped_after_s"] = stopped_after if run["unfinished"] else None
    if warm:
        if not out.exists():
            raise FileNotFoundError(f"{out}: record the cold run first")
        data = json.loads(out.read_text())
        data["warm"] = {"notebook_s": run["notebook_s"], "peak_process_gb": run["peak_process_gb"],
                        "peak_notebook_gb": run["peak_notebook_gb"]}
        if data.get("cpu") != (here := cpu()):  # the rerun ran elsewhere: say where
            data["warm"]["cpu"] = here
    else:
        data = {"profile": profile, "commit": _commit(), "date": datetime.date.today().isoformat(),
                "machine": machine(), "cpu": cpu(), "limits": LIMITS, "cold": {**run, "stage_s": _stages(profile)}}
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path, help="the output of `benchmarks/peak_rss.py -- make reproduce`")
    ap.add_argument("--warm", action="store_true", help="the log is a rerun from the cache: add its times")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--stopped-after", type=int, default=None,
                    help="the run was stopped in a notebook: how many seconds that notebook had run")
    args = ap.parse_args()
    out = ROOT / "figures" / f"reproduce_{args.profile}.json"
    data = record(args.log.read_text(errors="replace"), out, warm=args.warm, stopped_after=args.stopped_after)
    print(f"{out}: {json.dumps(data)[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
