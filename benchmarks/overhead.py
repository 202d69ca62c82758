"""What the Ray backend costs over the in-process reference, on the same workload.

    python benchmarks/overhead.py [--pairs 2] [key=value ...]

Runs the default SFPrompt configuration (8 clients per round unless overridden) through
backend local, ray, local, ray, ... in one process and one Ray instance, so a busy or
throttled host hurts both alike. Prints wall seconds per round, the ratio ray/local,
where the time went, and whether the two backends' metrics are identical. Ray actor
start-up is reported apart: it is paid once per run, not per round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

import ray
import torch

from sfprompt.actors.backend import RayBackend
from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world

WORKLOAD = ["fed.num_clients=40", "fed.clients_per_round=8", "fed.rounds=3"]
METRICS = ("accuracy", "loss", "train_loss", "kept_samples", "flops.client", "flops.server",
           "bytes.up", "bytes.down")


def timed(fn, seconds: Counter, key: str):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start
    return call


def run(cfg, kind: str) -> dict:
    """One run; per-round wall seconds and, per round, where they went."""
    world = build_world(cfg)
    start = time.perf_counter()
    backend = RayBackend(world) if kind == "ray" else LocalBackend(world)
    startup = time.perf_counter() - start
    seconds: Counter = Counter()
    backend.run_clients = timed(backend.run_clients, seconds, "clients phase")
    backend.evaluate = timed(backend.evaluate, seconds, "evaluate")
    if kind == "local":  # the server runs inside the clients phase
        backend.server.forward = timed(backend.server.forward, seconds, "server compute")
        backend.server.backward = timed(backend.server.backward, seconds, "server compute")
    rows = []
    try:
        for row, _ in run_rounds(world, backend):
            rows.append(row)
    finally:
        if kind == "ray":
            seconds.update({"client actors": backend.seconds["client_round"],
                            "server wait": backend.seconds["server_wait"],
                            "server compute": backend.seconds["server_busy"]})
            backend.close()
    actors = len(backend.client_placements) if kind == "ray" else 1
    return {"kind": kind, "startup": startup, "rows": rows, "seconds": seconds, "actors": actors}


def breakdown(result: dict) -> dict[str, float]:
    """Seconds per round by where they went."""
    n = len(result["rows"])
    s = {k: v / n for k, v in result["seconds"].items()}
    wall = sum(r["wall_seconds"] for r in result["rows"]) / n
    out = {"round wall": wall, "clients phase": s["clients phase"], "evaluate": s["evaluate"],
           "coordinator other": wall - s["clients phase"] - s["evaluate"],
           "server compute": s["server compute"]}
    if result["kind"] == "local":
        out["client compute"] = s["clients phase"] - s["server compute"]
    else:
        out["client compute"] = s["client actors"] - s["server wait"]
        out["server transport"] = s["server wait"] - s["server compute"]
        # Clients phase not covered by client rounds running on the actors.
        out["actors idle"] = s["clients phase"] - s["client actors"] / result["actors"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="local+ray pairs to run")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    cfg = load_config(None, WORKLOAD + args.overrides)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    print(f"{cfg.model.name} {cfg.model.img_size}px on {cfg.data.name}, "
          f"{cfg.fed.clients_per_round} clients/round, {cfg.fed.rounds} rounds/run, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs", flush=True)
    results = []
    for _ in range(args.pairs):
        for kind in ("local", "ray"):
            results.append(run(cfg, kind))
            r = results[-1]
            print(f"{kind:>5}: start-up {r['startup']:6.1f} s, rounds "
                  + " ".join(f"{row['wall_seconds']:6.1f}" for row in r["rows"]) + " s", flush=True)

    by_kind = {k: [r for r in results if r["kind"] == k] for k in ("local", "ray")}
    same = all([{m: row[m] for m in METRICS} for row in r["rows"]]
               == [{m: row[m] for m in METRICS} for row in results[0]["rows"]] for r in results)
    print(f"\nmetrics identical across all runs and both backends: {same}")
    walls = {k: [row["wall_seconds"] for r in rs for row in r["rows"]] for k, rs in by_kind.items()}
    later = {k: [row["wall_seconds"] for r in rs for row in r["rows"][1:]]
             for k, rs in by_kind.items()}
    print(f"wall s/round, mean: local {statistics.mean(walls['local']):.2f}, "
          f"ray {statistics.mean(walls['ray']):.2f}, ratio ray/local "
          f"{statistics.mean(walls['ray']) / statistics.mean(walls['local']):.3f}")
    sim = [row["sim.round_seconds"] for row in results[0]["rows"]]
    print(f"simulated s/round (profiles.source={cfg.profiles.source}, same in both backends): "
          + " ".join(f"{x:.1f}" for x in sim))
    if later["local"]:
        print(f"without each run's first round: ratio "
              f"{statistics.mean(later['ray']) / statistics.mean(later['local']):.3f}")
    print("\nwhere the time went, s/round (mean over runs):")
    tables = {k: [breakdown(r) for r in rs] for k, rs in by_kind.items()}
    keys = list(dict.fromkeys(key for rows in tables.values() for row in rows for key in row))
    print(f"{'':<20}{'local':>9}{'ray':>9}")
    for key in keys:
        cells = [statistics.mean(row[key] for row in tables[k]) if key in tables[k][0] else None
                 for k in ("local", "ray")]
        print(f"{key:<20}" + "".join(f"{c:>9.2f}" if c is not None else f"{'':>9}" for c in cells))
    print("ray start-up (actors), s: "
          + ", ".join(f"{r['startup']:.1f}" for r in by_kind["ray"]))
    ray.shutdown()


if __name__ == "__main__":
    main()
