"""What the benchmarks measure with: the peak PSS of a process tree, CPU time by role,
the FLOP rate of a step in a tight loop (in this process, or in one 1-thread process per
CPU at once), steady-state means and Markdown tables of results."""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import torch

from sfprompt.results.markdown import markdown_table

MIB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PeakPss:
    """Largest total PSS in MiB of this process and its descendants while inside,
    sampled every `interval_s` by a niced process of its own (pss.py says why); an
    interval of 0 samples nothing (peak NaN): a sample walks the page tables of every
    process in the tree, which costs the measured run time when it holds much memory."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.peak, self.interval_s = math.nan, interval_s
        self._sampler: subprocess.Popen | None = None

    def __enter__(self) -> PeakPss:
        if self.interval_s > 0:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pss.py")
            self._sampler = subprocess.Popen(
                [sys.executable, script, str(os.getpid()), str(self.interval_s)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            out, _ = self._sampler.communicate("")  # closing its stdin ends it
            self.peak = int(out) / MIB


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of this process ("coordinator"), of Ray's client actors
    ("client actors") and of every other process below it ("ray system": the GCS, the
    raylet, Ray's agents and monitors), summed over each role's processes."""
    me = psutil.Process()
    out = {"coordinator": 0.0, "client actors": 0.0, "ray system": 0.0}
    for proc in [me] + me.children(recursive=True):
        try:
            times, words = proc.cpu_times(), proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(w.endswith("pss.py") for w in words):  # the benchmark's own sampler
            continue
        role = ("coordinator" if proc.pid == me.pid else
                "client actors" if words and words[0].startswith("ray::ClientActor")
                else "ray system")
        out[role] += times.user + times.system
    return out


def rate(step: Callable[[], object], flops: float, seconds: float = 3.0) -> float:
    """FLOP/s of `step` (doing `flops`) in a tight loop of at least `seconds`."""
    step(), step()  # warm-up: allocator, kernels
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        step()
        reps += 1
    return flops * reps / (time.perf_counter() - start)


def _rate_in_child(make_step: Callable, args: tuple, start, seconds: float, out) -> None:
    torch.set_num_threads(1)
    step, flops = make_step(*args)
    step(), step()  # warm-up before the common start, so all measure at once
    start.wait()
    out.put(rate(step, flops, seconds))


def concurrent_rate(make_step: Callable, args: tuple, procs: int, seconds: float = 3.0) -> float:
    """Total FLOP/s of `procs` processes of 1 thread each running the step that
    `make_step(*args)` returns ((step, flops), a picklable top-level function) at the same
    time: what a machine reaches on small steps, where one process's threads wait on
    each other more than they compute."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding OpenMP threads
    start, out = ctx.Barrier(procs), ctx.Queue()
    children = [ctx.Process(target=_rate_in_child, args=(make_step, args, start, seconds, out))
                for _ in range(procs)]
    for child in children:
        child.start()
    total = sum(out.get() for _ in children)
    for child in children:
        child.join()
    return total


def steady(values: list[float]) -> float:
    return statistics.mean(values[1:]) if len(values) > 1 else math.nan


def table(rows: list[dict]) -> str:
    """Markdown table of rows of formatted cells."""
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows])
