"""What the benchmarks measure with: the peak PSS of a process tree, the FLOP rate of a
step in a tight loop, steady-state means and Markdown tables of results."""

from __future__ import annotations

import math
import statistics
import sys
import threading
import time
from collections.abc import Callable

import psutil

from sfprompt.results.markdown import markdown_table

MIB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PeakPss:
    """Largest total PSS in MiB of this process and its descendants while inside."""

    def __init__(self) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            me, total = psutil.Process(), 0
            for proc in [me] + me.children(recursive=True):
                try:
                    total += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak = max(self.peak, total / MIB)
            if self._stop.wait(1.0):
                return

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rate(step: Callable[[], object], flops: float, seconds: float = 3.0) -> float:
    """FLOP/s of `step` (doing `flops`) in a tight loop of at least `seconds`."""
    step(), step()  # warm-up: allocator, kernels
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        step()
        reps += 1
    return flops * reps / (time.perf_counter() - start)


def steady(values: list[float]) -> float:
    return statistics.mean(values[1:]) if len(values) > 1 else math.nan


def table(rows: list[dict]) -> str:
    """Markdown table of rows of formatted cells."""
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows])
