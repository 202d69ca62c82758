"""Does a trial's split fit its clients? Checked before the trial trains anything.

A point of the search space can be impossible: head + tail deeper than the model (the
config rejects it), or a client part whose training footprint exceeds the memory of
some client in the fleet (`Profile.memory_bytes`). Such a trial is recorded as failed
with the reason, never run, and the study goes on.

The footprint is measured on the meta device (platform/sim/memory.py).
"""

from __future__ import annotations

import logging

from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.sim.memory import MIB, client_memory_bytes
from sfprompt.platform.sim.profiles import make_profiles

log = logging.getLogger(__name__)


class Infeasible(SfpromptError):
    """This point of the space cannot run; the message says why (a trial user attr)."""


def check_memory(cfg: Config, memory_fraction: float) -> None:
    """Raise Infeasible if some client cannot hold the footprint in `memory_fraction`
    of its memory; every registered client may be sampled, so all of them must fit."""
    if memory_fraction <= 0:
        return
    parts = client_memory_bytes(cfg)
    need = sum(parts.values())
    profiles = make_profiles(cfg.profiles, cfg.fed.num_clients, cfg.run.seed)
    smallest = min(range(len(profiles)), key=lambda i: profiles[i].memory_bytes)
    allowed = memory_fraction * profiles[smallest].memory_bytes
    log.info("client footprint %.1f MiB (%s); smallest client %d has %.1f MiB",
             need / MIB, ", ".join(f"{k} {v / MIB:.1f}" for k, v in parts.items()), smallest,
             profiles[smallest].memory_bytes / MIB)
    if need > allowed:
        raise Infeasible(
            f"client memory: the split needs {need / MIB:.1f} MiB per client but client "
            f"{smallest} ({profiles[smallest].tier}) may use {allowed / MIB:.1f} MiB "
            f"({memory_fraction:g} of {profiles[smallest].memory_bytes / MIB:.1f} MiB)")
