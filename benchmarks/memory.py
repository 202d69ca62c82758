"""Where a run's memory goes: the peak PSS of the whole process tree of a command, and
each process's own peak PSS and USS (memory no other process shares).

    python benchmarks/memory.py                      the default run (Ray, 5 rounds)
    python benchmarks/memory.py -- sfprompt run fed.rounds=2 run.backend=local

This process runs the command and samples its tree every `--interval` seconds at the
lowest priority; it is not part of the tree it measures. A process is named by its
title (Ray's workers rename themselves `ray::ClientActor` and so on), so one process
seen under several titles is listed once, under the title of its largest sample.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil

from pss import tree_memory  # benchmarks/pss.py
from sfprompt.results.markdown import markdown_table

MIB = 2**20


def _title(proc: psutil.Process) -> str:
    words = proc.cmdline()
    if words and words[0].startswith("ray::"):
        return words[0]
    return " ".join(os.path.basename(w) if i < 2 else w for i, w in enumerate(words))[:60]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("command", nargs="*", help="default: sfprompt run (the default run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = args.command or [os.path.join(os.path.dirname(sys.executable), "sfprompt"),
                                   "run", f"run.out_dir={out}"]
        os.nice(19)
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        root, peak, by_pid = psutil.Process(child.pid), 0, {}
        while child.poll() is None:
            total = 0
            for proc, mem in tree_memory(root):
                try:
                    title = _title(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += mem.pss
                if mem.pss >= by_pid.get(proc.pid, (0, 0, ""))[0]:
                    by_pid[proc.pid] = (mem.pss, mem.uss, title)
            peak = max(peak, total)
            time.sleep(args.interval)
    print(f"exit {child.returncode}; peak PSS of the whole tree: {peak / MIB:,.0f} MiB")
    print(markdown_table(["process", "peak PSS MiB", "its USS MiB"],
                         [(title, pss // MIB, uss // MIB)
                          for pss, uss, title in sorted(by_pid.values(), reverse=True)]))


if __name__ == "__main__":
    main()
