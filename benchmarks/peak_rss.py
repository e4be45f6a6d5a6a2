"""Peak resident memory of a command and every process it starts (e.g. the notebook kernels).

    .venv/bin/python benchmarks/peak_rss.py -- make reproduce

Polls the process tree every 0.2 s and prints, when the command ends, the largest resident set
of any single process (with its command line) and of the whole tree at one moment. Sampling can
miss a spike shorter than the interval; the kernel's own high-water mark (VmHWM) of each process
is read too, so a process's peak is exact as long as it was seen alive once.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def _hwm_bytes(proc: psutil.Process) -> int:
    """The kernel's record of the process's peak RSS (Linux), else its current RSS."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return proc.memory_info().rss


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    child = subprocess.Popen(argv)
    root = psutil.Process(child.pid)
    peak_one: dict[int, tuple[int, str]] = {}  # pid -> (peak bytes, command line)
    peak_tree = 0
    while child.poll() is None:
        total = 0
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                rss = p.memory_info().rss
                hwm = _hwm_bytes(p)
                if hwm > peak_one.get(p.pid, (0, ""))[0]:
                    peak_one[p.pid] = (hwm, " ".join(p.cmdline())[:120])
                total += rss
            except psutil.Error:
                continue
        peak_tree = max(peak_tree, total)
        time.sleep(0.2)
    code = child.wait()
    top = sorted(peak_one.values(), reverse=True)[:3]
    print("\npeak resident memory")
    for size, cmd in top:
        print(f"  {size / 1e9:6.2f} GB  {cmd}")
    print(f"  {peak_tree / 1e9:6.2f} GB  whole process tree at one moment (sampled)")
    return code


if __name__ == "__main__":
    sys.exit(main())
