"""Many registered clients on one small machine: memory and wall time per round.

    python benchmarks/scale.py [--clients 100,1000,10000] [--per-round 100] [key=value ...]

Each registered-client count runs in a fresh process with its own local Ray instance
(the ray backend's default), so memory figures do not carry over. A client is a shard
of indices plus a profile in the coordinator, never a process: the pool stays (CPUs - 1)
client actors (holding the frozen body, ray.body = auto) whatever the count.

Every client holds the same amount of data at every count (`--samples-per-client`), so
that wall time per round compares registration, not work. The 4,000 MNIST training
digits are not enough for 10,000 clients; the benchmark registers "mnist_x5", the same
digits five times (20,000), in its coordinator only (the actors get the data from the
object store, they never load it). Memory: RSS and PSS (proportional set size, which
splits shared pages such as the object store and libraries among the processes that
map them) and USS (pages only that process maps) of the driver and of every process of
the Ray instance. The torch build here (CUDA wheels, docs/design.md, Environment) maps about
700 MiB on import, mostly shared libraries: RSS counts them in every process, PSS once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import psutil

from sfprompt.platform.data.datasets import DATASETS, register_dataset

MODEL = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=32",
         "data.name=mnist_x5", "data.test_fraction=0.05", "fed.partition=iid", "fed.rounds=3",
         "prompt.length=2"]
MIB = 2**20


@register_dataset("mnist_x5")
def _mnist_x5(root, *, test_fraction: float, seed: int, download: bool):
    base = DATASETS["mnist"](root, test_fraction=test_fraction, seed=seed, download=download)
    return dataclasses.replace(base, train_images=base.train_images.repeat(5, 1, 1, 1),
                               train_labels=base.train_labels.repeat(5))  # (5N, 1, 28, 28), (5N,)


def idle_bytes(shards: list[np.ndarray], profiles: list) -> float:
    """Bytes the coordinator keeps per registered client: its index array (object and
    data) and its profile (object, and its float fields, which are objects of their own)."""
    total = sum(sys.getsizeof(s) for s in shards)
    for p in profiles:
        values = [getattr(p, f.name) for f in dataclasses.fields(p)]
        total += sys.getsizeof(p) + sum(sys.getsizeof(v) for v in values if isinstance(v, float))
    return total / len(shards)


def memory() -> dict[str, dict[str, float]]:
    """RSS, PSS and USS in MiB of this process and of every descendant, by role."""
    groups: dict[str, dict[str, float]] = {}
    me = psutil.Process()
    for proc in [me] + me.children(recursive=True):
        try:
            info = proc.memory_full_info()
            title = " ".join(proc.cmdline())[:60]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        role = ("driver" if proc.pid == me.pid else
                "client actors" if "ClientActor" in title else
                "server actor" if "ServerActor" in title else
                "idle workers" if "ray::IDLE" in title else "ray system")
        group = groups.setdefault(role, {"rss": 0.0, "pss": 0.0, "uss": 0.0, "n": 0})
        group["rss"] += info.rss / MIB
        group["pss"] += info.pss / MIB
        group["uss"] += info.uss / MIB
        group["n"] += 1
    return groups


def one(num_clients: int, per_round: int, samples: int, overrides: list[str]) -> dict:
    """One count, in this process: build, run, measure while the actors are alive."""
    from sfprompt.actors.backend import RayBackend
    from sfprompt.platform.config.load import load_config
    from sfprompt.platform.loop.rounds import run_rounds
    from sfprompt.platform.loop.world import build_world

    cfg = load_config(None, MODEL + [f"fed.num_clients={num_clients}",
                                     f"fed.clients_per_round={per_round}",
                                     f"data.max_samples={samples * num_clients}", *overrides])
    world = build_world(cfg)
    start = time.perf_counter()
    backend = RayBackend(world)
    startup = time.perf_counter() - start
    try:
        walls = [row["wall_seconds"] for row, _ in run_rounds(world, backend)]
        mem = memory()
    finally:
        backend.close()
    return {"clients": num_clients, "per_round": per_round, "walls": walls, "startup": startup,
            "idle_bytes": idle_bytes(world.shards, world.profiles), "memory": mem,
            "actors": len(backend.client_placements)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,1000,10000", help="comma-separated counts")
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--samples-per-client", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.clients), args.per_round, args.samples_per_client,
                             args.overrides)))
        return
    roles = ("driver", "server actor", "client actors", "idle workers", "ray system")
    print("memory: RSS MiB (USS MiB) [processes] per role")
    print(f"{'clients':>8}{'actors':>7}{'start s':>8}{'s/round':>18}{'idle B/client':>14}"
          + "".join(f"{r:>22}" for r in roles) + f"{'total RSS':>11}{'total PSS':>11}")
    for n in (int(c) for c in args.clients.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", "--clients", str(n),
                               "--per-round", str(args.per_round), "--samples-per-client",
                               str(args.samples_per_client), *args.overrides],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{n} clients failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mem = r["memory"]
        rounds = "/".join(f"{w:.1f}" for w in r["walls"])
        cells = "".join(f"{mem[role]['rss']:>9.0f} ({mem[role]['uss']:4.0f}) [{mem[role]['n']}]"
                        if role in mem else f"{'-':>22}" for role in roles)
        print(f"{n:>8}{r['actors']:>7}{r['startup']:>8.1f}{rounds:>18}{r['idle_bytes']:>14.0f}"
              f"{cells}{sum(g['rss'] for g in mem.values()):>11.0f}"
              f"{sum(g['pss'] for g in mem.values()):>11.0f}", flush=True)


if __name__ == "__main__":
    main()
