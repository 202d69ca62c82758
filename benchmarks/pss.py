"""The largest PSS of a process tree, sampled by a process of its own at the lowest
priority (measure.PeakPss starts it): `python pss.py ROOT_PID INTERVAL_S`, prints the
peak in bytes when its stdin closes.

Why a process of its own: reading a process's PSS makes the kernel walk its page tables,
which costs in proportion to its mapped memory (Ray's object store included). From a
thread of the measured process, under its GIL and at its priority, that cost lands on
the work being timed and grows with the memory the run holds; at nice 19 the sampler
only takes time the measured processes leave idle. It leaves itself out of the sum.
"""

from __future__ import annotations

import os
import sys
import threading

import psutil


def tree_memory(root: psutil.Process, skip: int = 0):
    """(process, its memory_full_info) for `root` and each live descendant but `skip`."""
    for proc in [root] + root.children(recursive=True):
        if proc.pid == skip:
            continue
        try:
            yield proc, proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def tree_pss(root: psutil.Process, skip: int) -> int:
    """Total PSS in bytes of `root` and its descendants but process `skip`."""
    return sum(mem.pss for _, mem in tree_memory(root, skip))


def main() -> None:
    root, interval = psutil.Process(int(sys.argv[1])), float(sys.argv[2])
    os.nice(19)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    peak = 0
    while True:
        peak = max(peak, tree_pss(root, os.getpid()))
        if done.wait(interval):
            break
    print(peak, flush=True)


if __name__ == "__main__":
    main()
