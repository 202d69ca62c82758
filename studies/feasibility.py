"""Does a trial's split fit its clients? Checked before the trial trains anything.

A point of the search space can be impossible: head + tail deeper than the model (the
config rejects it), or a client part whose training footprint exceeds the memory of
some client in the fleet (`Profile.memory_bytes`). Such a trial is recorded as failed
with the reason, never run, and the study goes on.

The footprint is measured on the meta device (platform/sim/memory.py).
"""

from __future__ import annotations

import dataclasses
import logging

from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.model.plans import parse_tiers
from sfprompt.platform.sim.memory import MIB, client_memory_bytes
from sfprompt.platform.sim.profiles import make_profiles

log = logging.getLogger(__name__)


class Infeasible(SfpromptError):
    """This point of the space cannot run; the message says why (a trial user attr)."""


def check_memory(cfg: Config, memory_fraction: float) -> None:
    """Raise Infeasible if some client cannot hold the footprint in `memory_fraction`
    of its memory; every registered client may be sampled, so all of them must fit."""
    if memory_fraction <= 0 or cfg.split.plan == "fit":  # fit chooses splits that fit
        return
    profiles = make_profiles(cfg.profiles, cfg.fed.num_clients, cfg.run.seed)
    fixed = (cfg.split.head_blocks, cfg.split.tail_blocks)
    tiers = parse_tiers(cfg.split.tiers) if cfg.split.plan == "by_tier" else {}
    # Each split's footprint once; every client against its own split's.
    by_split = {}
    for profile in profiles:
        split = tiers.get(profile.tier, fixed)
        if split not in by_split:
            by_split[split] = client_memory_bytes(dataclasses.replace(cfg, split=dataclasses.replace(
                cfg.split, plan="fixed", head_blocks=split[0], tail_blocks=split[1])))
    need = [sum(by_split[tiers.get(p.tier, fixed)].values()) for p in profiles]
    worst = max(range(len(profiles)), key=lambda i: need[i] / max(profiles[i].memory_bytes, 1))
    profile, split = profiles[worst], tiers.get(profiles[worst].tier, fixed)
    allowed = memory_fraction * profile.memory_bytes
    log.info("client footprint %.1f MiB at split %d:%d (%s); client %d has %.1f MiB",
             need[worst] / MIB, *split,
             ", ".join(f"{k} {v / MIB:.1f}" for k, v in by_split[split].items()), worst,
             profile.memory_bytes / MIB)
    if need[worst] > allowed:
        raise Infeasible(
            f"client memory: the split {split[0]}:{split[1]} needs {need[worst] / MIB:.1f} MiB "
            f"per client but client {worst} ({profile.tier}) may use {allowed / MIB:.1f} MiB "
            f"({memory_fraction:g} of {profile.memory_bytes / MIB:.1f} MiB)")
