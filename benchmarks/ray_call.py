"""What one client-round's trip through Ray costs, apart from the client's work.

    python benchmarks/ray_call.py [--calls 400] [--clients-per-call 8] [key=value ...]

The Ray backend hands client rounds to client actors in calls of several clients
(ClientPool: two calls out per actor; ray.clients_per_call, at most 8 by default) and
gets each call's uploaded states back through the object store. This times that trip
alone, with actors that do no work, in one Ray instance, alternating, with one client
per call and with --clients-per-call:

    empty    the call and a reply of nothing
    state    the reply is an uploaded state of the configured model (part (b) of
             throughput.py by default: vit_tiny at 32 px, sfprompt's default split), as
             numpy arrays, released as it arrives
    held     the same, every reply kept until the end, as the coordinator keeps a
             round's states until aggregation

Prints wall and CPU milliseconds per client-round (CPU: this process and all its
descendants, Ray's own processes included) and each divided by the empty reply's with one
client per call. On a host with C CPUs and C actors, CPU per client-round / C is the wall
time per client-round it costs at best.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psutil
import ray

from sfprompt.actors.wire import state_to_wire
from sfprompt.platform.config.load import load_config
from sfprompt.platform.method.client import client_state
from sfprompt.platform.model.build import build_split
from measure import table  # benchmarks/measure.py
from throughput import PART_B  # benchmarks/throughput.py

CPUS = os.cpu_count()


class Replier:
    """A client actor that does no work: replies with nothing or with a state."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def run(self, tasks: list[dict], global_state: dict, kind: str):
        return [(({} if kind == "empty" else {k: v.copy() for k, v in self.state.items()}), {})
                for _ in tasks]


def cpu_seconds() -> float:
    me = psutil.Process()
    total = 0.0
    for proc in [me] + me.children(recursive=True):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def calls(actors: list, global_ref: ray.ObjectRef, kind: str, n: int,
          per_call: int) -> tuple[float, float]:
    """Wall and CPU seconds per client-round of `n` client-rounds in calls of `per_call`,
    two calls out per actor, as ClientPool."""
    pending: dict[ray.ObjectRef, int] = {}
    loads, held, left = [0] * len(actors), [], n // per_call
    cpu, start = cpu_seconds(), time.perf_counter()
    while left or pending:
        while left and len(pending) < 2 * len(actors):
            i = loads.index(min(loads))
            tasks = [{"client": left, "indices": np.arange(8)}] * per_call
            pending[actors[i].run.remote(tasks, global_ref, kind)] = i
            loads[i] += 1
            left -= 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        reply = ray.get(ready[0])
        loads[pending.pop(ready[0])] -= 1
        if kind == "held":
            held.append(reply)
    done = n // per_call * per_call
    return (time.perf_counter() - start) / done, (cpu_seconds() - cpu) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400,
                        help="client-rounds per measurement")
    parser.add_argument("--clients-per-call", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="alternating passes")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    # The model's settings of part (b); its dataset is registered only there, and unused here.
    cfg = load_config(None, [o for o in PART_B if not o.startswith("data.")] + args.overrides)
    split, _ = build_split(cfg, 10)
    state = state_to_wire(client_state(split.client()))
    nbytes = sum(a.nbytes for a in state.values())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=CPUS, include_dashboard=False, logging_level="WARNING")
    try:
        actors = [ray.remote(Replier).options(num_cpus=1).remote(state) for _ in range(CPUS)]
        global_ref = ray.put(state)  # what each call reads, as the round's global state
        calls(actors, global_ref, "state", 20, 1)  # warm-up
        sizes = (1, args.clients_per_call)
        seen = {(kind, size): [] for size in sizes for kind in ("empty", "state", "held")}
        for _ in range(args.repeats):
            for kind, size in seen:
                seen[kind, size].append(calls(actors, global_ref, kind, args.calls, size))
    finally:
        ray.shutdown()
    wall0 = min(w for w, _ in seen["empty", 1])
    cpu0 = min(c for _, c in seen["empty", 1])
    rows = [{"reply": kind, "clients per call": size,
             "wall ms/client-round": f"{1e3 * min(w for w, _ in v):.2f}",
             "CPU ms/client-round": f"{1e3 * min(c for _, c in v):.2f}",
             "wall ÷ empty, 1 per call": f"{min(w for w, _ in v) / wall0:.2f}",
             "CPU ÷ empty, 1 per call": f"{min(c for _, c in v) / cpu0:.2f}"}
            for (kind, size), v in seen.items()]
    print(f"\n{CPUS} actors, {args.calls} client-rounds each way, uploaded state "
          f"{nbytes / 1e6:.2f} MB in {len(state)} arrays (best of {args.repeats})\n")
    print(table(rows))


if __name__ == "__main__":
    main()
