"""Peak resident memory of a command and every process it starts (e.g. the notebook kernels).

    .venv/bin/python benchmarks/peak_rss.py -- make reproduce

Polls the process tree every 0.2 s and prints, when the command ends, the largest resident set
of any single process (with its command line), of each notebook (the processes under a command
that names an ``.ipynb``, e.g. papermill and its kernel) and of the whole tree at one moment. Sampling can
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


def notebook_of(proc: psutil.Process, known: dict[int, str | None]) -> str | None:
    """The notebook a process works for: the stem of the first ``.ipynb`` on its own command line
    or an ancestor's (papermill's), None if there is none. ``known`` caches it per pid."""
    chain = []
    p = proc
    while p is not None and p.pid not in known:
        chain.append(p)
        try:
            names = [a for a in p.cmdline() if a.endswith(".ipynb")]
            if names:
                known[p.pid] = names[0].rsplit("/", 1)[-1][: -len(".ipynb")]
                break
            p = p.parent()
        except psutil.Error:
            p = None
    found = known.get(p.pid) if p is not None else None
    for c in chain:
        known[c.pid] = found
    return found


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
    peak_notebook: dict[str, int] = {}  # notebook -> peak bytes of one of its processes
    owner: dict[int, str | None] = {}
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
                nb = notebook_of(p, owner)
                if nb is not None:
                    peak_notebook[nb] = max(peak_notebook.get(nb, 0), hwm)
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
    for nb, size in peak_notebook.items():
        print(f"  {size / 1e9:6.2f} GB  notebook {nb}")
    print(f"  {peak_tree / 1e9:6.2f} GB  whole process tree at one moment (sampled)")
    return code


if __name__ == "__main__":
    sys.exit(main())
