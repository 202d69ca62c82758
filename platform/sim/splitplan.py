"""Split planning: which (head_blocks, tail_blocks) each kind of device of a fleet
should hold, from the cost model, the memory footprint and the clock, in seconds.

For each candidate split, the cost model runs one client's round on meta tensors
(platform/sim/costmodel.py: bytes and messages by kind, client FLOPs, the server FLOPs
it causes) and the footprint says what the device must hold (platform/sim/memory.py).
Those depend on the split and not on the device, so a fleet costs one pass per
candidate. The virtual clock's formulas (clock.py) then give the round's simulated
seconds on each distinct device of the fleet (its tier's figures, `profiles.sigma`
left out; one row per tier, or per distinct trace row, not per client):

    compute = client FLOPs / flops_per_s
    comm    = sum over kinds of m * (latency + jitter) + 8 * bytes / bandwidth
    server  = server FLOPs / one server slot's speed
    round   = compute + comm + server

with the jitter at its mean and no server queue and no faults: one client alone. The
round is a later visit's (the one-off frozen download is its own column). A device's
plan is the fastest split whose footprint fits `memory_fraction` of its memory (ties:
the first candidate).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.model.plans import Split, parse_splits, parse_tiers
from sfprompt.platform.sim.clock import comm_seconds
from sfprompt.platform.sim.costmodel import client_cost
from sfprompt.platform.sim.memory import client_memory_bytes
from sfprompt.platform.sim.profiles import Profile, make_profiles, server_profile


def fleet_devices(cfg: Config) -> Counter[Profile]:
    """The fleet's distinct devices at their tiers' figures, with how many clients are
    each."""
    profiles = dataclasses.replace(cfg.profiles, sigma=0.0)
    return Counter(make_profiles(profiles, cfg.fed.num_clients, cfg.run.seed))


def plan_splits(cfg: Config, splits: Sequence[tuple[int, int]], samples: int,
                num_classes: int = 10, memory_fraction: float = 1.0) -> list[dict]:
    """One row per (device, split), devices in fleet order and splits in the given
    order: footprint, whether it fits, counts and seconds; `chosen` marks each device's
    plan (none where nothing fits)."""
    if not 0 < memory_fraction <= 1:
        raise SfpromptError(f"--memory-fraction: must be in (0, 1], got {memory_fraction}")
    server = server_profile(cfg.profiles)
    slot = server.flops_per_s / server.concurrency
    candidates = []
    for head, tail in splits:
        # No revalidation (config loading is a layer above): the split refuses a cut
        # that does not fit the model, in one line.
        split_cfg = dataclasses.replace(cfg, split=dataclasses.replace(
            cfg.split, head_blocks=head, tail_blocks=tail, plan="fixed"))
        first = client_cost(split_cfg, samples, num_classes)
        candidates.append((head, tail, client_cost(split_cfg, samples, num_classes,
                                                   first_visit=False),
                           first.bytes.get("frozen_download", 0),
                           sum(client_memory_bytes(split_cfg).values())))
    rows = []
    for device, clients in fleet_devices(cfg).items():
        plan = []
        for head, tail, cost, frozen, memory in candidates:
            # The clock's own sum without jitter draws, plus the jitter's mean per message.
            comm = (comm_seconds(dataclasses.replace(device, jitter_s=0.0), cost.bytes,
                                 cost.messages, rng=None)
                    + sum(cost.messages.values()) * device.jitter_s)
            compute = cost.client_flops / device.flops_per_s
            server_s = cost.server_flops / slot
            plan.append({"tier": device.tier, "clients": clients,
                         "split.head_blocks": head, "split.tail_blocks": tail,
                         "memory_bytes": memory,
                         "fits": memory <= memory_fraction * device.memory_bytes,
                         "flops.client": cost.client_flops, "flops.server": cost.server_flops,
                         "bytes.round": sum(cost.bytes.values()),
                         "bytes.frozen_download": frozen, "sim.compute_seconds": compute,
                         "sim.comm_seconds": comm, "sim.server_seconds": server_s,
                         "sim.round_seconds": compute + comm + server_s, "chosen": False})
        fitting = [r for r in plan if r["fits"]]
        if fitting:
            min(fitting, key=lambda r: r["sim.round_seconds"])["chosen"] = True
        rows.extend(plan)
    return rows


def client_splits(cfg: Config, profiles: Sequence[Profile], samples: int,
                  num_classes: int) -> list[Split]:
    """Each client's (head_blocks, tail_blocks) under `split.plan` (model/plans.py): the
    fixed split, its tier's under `by_tier`, or under `fit` its device's plan from
    `plan_splits` (devices at their tiers' figures, `samples` per client)."""
    fixed = (cfg.split.head_blocks, cfg.split.tail_blocks)
    if cfg.split.plan == "by_tier":
        tiers = parse_tiers(cfg.split.tiers)
        return [tiers.get(p.tier, fixed) for p in profiles]
    if cfg.split.plan != "fit":
        return [fixed] * len(profiles)
    candidates = parse_splits("split.candidates", cfg.split.candidates)
    rows = plan_splits(cfg, candidates, samples, num_classes, cfg.split.memory_fraction)
    chosen: dict[Profile, Split] = {}
    for i, device in enumerate(fleet_devices(cfg)):
        plan = rows[i * len(candidates):(i + 1) * len(candidates)]
        best = [r for r in plan if r["chosen"]]
        if not best:
            least = min(r["memory_bytes"] for r in plan)
            raise ConfigError(
                f"split.candidates: no candidate fits {cfg.split.memory_fraction:g} of the "
                f"{device.memory_bytes / 2**20:.0f} MiB of tier {device.tier!r} (the smallest "
                f"needs {least / 2**20:.0f} MiB); add a smaller split or raise "
                f"split.memory_fraction")
        chosen[device] = (best[0]["split.head_blocks"], best[0]["split.tail_blocks"])
    devices = make_profiles(dataclasses.replace(cfg.profiles, sigma=0.0), cfg.fed.num_clients,
                            cfg.run.seed)
    return [chosen[d] for d in devices]
