"""Real-time network emulation: sleep every message's emulated delay.

In "simulated" mode (the default) nothing sleeps; the clock computes time. In
"realtime" mode a client's work sleeps each message's delay x `network.time_scale` as
the message crosses the Link, so wall-clock behaviour follows the profile's network
(in the Ray backend, concurrent clients then reach the server as they would over real
links). Compute still runs at the host's speed, not the profile's. Jitter is drawn per
message from its own seeded stream: the sleeps follow the clock's distribution, not
its exact draws, and the simulated times recorded are the clock's either way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sfprompt.platform.config.schema import NetworkConfig
from sfprompt.platform.seeds import stream
from sfprompt.platform.sim.clock import message_seconds
from sfprompt.platform.sim.profiles import Profile
from sfprompt.platform.wire.link import on_send

_REALTIME_STREAM = 0x5EE9  # keeps realtime jitter apart from every other seeded stream


@contextlib.contextmanager
def emulate_network(cfg: NetworkConfig, profile: Profile, seed: int) -> Iterator[None]:
    """Around one client's work (`seed`: its task's seed): sleep per message in realtime
    mode, nothing otherwise."""
    if cfg.mode != "realtime":
        yield
        return
    rng = stream(seed, _REALTIME_STREAM)

    def sleep(kind: str, nbytes: int) -> None:
        jitter = rng.exponential(profile.jitter_s) if profile.jitter_s > 0 else 0.0
        time.sleep((message_seconds(profile, kind, nbytes) + jitter) * cfg.time_scale)

    with on_send(sleep):
        yield
