"""The virtual clock: simulated seconds from counted FLOPs and bytes, never wall time.

One client's round, under its profile (all its steps run one after another: the split
phase's round trips serialise client and server, so nothing overlaps):

    compute = client FLOPs / profile.flops_per_s
    comm    = sum over messages of  latency + jitter + 8 x bytes / bandwidth
              (downlink for wire.link.DOWN kinds, uplink for the rest)
    server  = server FLOPs for this client / speed of one server slot
    queue   = extra wait because other clients' requests share the server
    finish  = compute + comm + server + queue

Server queue. The server runs `concurrency` requests side by side, each slot at
`flops_per_s / concurrency`; with more clients than slots, all of them share the server
equally (processor sharing). The model takes every client's server work of the round
as one job arriving at time 0. Real split phases interleave server work with client
compute and transfers, so requests overlap less than that: the queue here is an upper
bound on contention, exact when the server is the bottleneck. It depends only on the
round's counted server FLOPs, so it is deterministic and the same on any host.

Jitter. Each message adds an exponential delay of mean `jitter_s`; the sum over a
kind's m messages is drawn as one Gamma(m, jitter_s) from a generator seeded by (run
seed, round, client), so a run's times repeat exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.seeds import stream
from sfprompt.platform.sim.profiles import Profile, ServerProfile
from sfprompt.platform.wire.link import DOWN, KINDS

_JITTER_STREAM = 0x717E  # keeps jitter draws apart from every other seeded stream


@dataclass(frozen=True)
class ClientTime:
    """Simulated seconds of one client's round, by where they went."""

    compute: float
    comm: float
    server: float
    queue: float

    @property
    def finish(self) -> float:
        return self.compute + self.comm + self.server + self.queue


def bandwidth(profile: Profile, kind: str) -> float:
    """Bit/s of the direction `kind` travels in."""
    return profile.downlink_bps if kind in DOWN else profile.uplink_bps


def message_seconds(profile: Profile, kind: str, nbytes: int) -> float:
    """One message without jitter: latency + transfer over its direction's bandwidth."""
    return profile.latency_s + 8 * nbytes / bandwidth(profile, kind)


def comm_seconds(profile: Profile, nbytes: Mapping[str, int], messages: Mapping[str, int],
                 rng: np.random.Generator | None) -> float:
    """All of a client's traffic: per kind, m messages carrying `nbytes[kind]` in total
    (the latency is paid per message, the transfer per byte, so m x latency + bytes);
    `rng` draws the jitter (None only for a profile without jitter)."""
    total = 0.0
    for kind in KINDS:  # fixed order: the same draws in the same order on every host
        m = messages.get(kind, 0)
        if m == 0:
            continue
        total += m * profile.latency_s + 8 * nbytes.get(kind, 0) / bandwidth(profile, kind)
        if profile.jitter_s > 0:
            total += float(rng.gamma(m, profile.jitter_s))
    return total


def server_queue(service: Sequence[float], concurrency: int) -> list[float]:
    """Wait of each job beyond its `service` seconds when all start at once on
    `concurrency` slots under processor sharing.

    Jobs finish in order of size. Between two completions, m jobs are active and each
    progresses at min(1, concurrency / m) slot-seconds per second, so finishing the next
    job's remaining work takes (its service - work already done) x max(m, c) / c.
    """
    order = sorted(range(len(service)), key=lambda i: service[i])
    waits = [0.0] * len(service)
    now = done = 0.0
    for rank, i in enumerate(order):
        active = len(service) - rank
        now += (service[i] - done) * max(active, concurrency) / concurrency
        done = service[i]
        waits[i] = max(now - service[i], 0.0)  # 0 up to rounding when nobody queues
    return waits


def jitter_rng(seed: int, round_: int, client: int) -> np.random.Generator:
    return stream(seed, round_, client, _JITTER_STREAM)


def client_times(results: Sequence[ClientResult], profiles: Sequence[Profile],
                 server: ServerProfile, seed: int, round_: int) -> list[ClientTime]:
    """Simulated times of the clients that ran in one round (profiles in the same order)."""
    slot = server.flops_per_s / server.concurrency
    service = [r.server_flops / slot for r in results]
    queue = server_queue(service, server.concurrency)
    return [ClientTime(compute=r.client_flops / p.flops_per_s,
                       comm=comm_seconds(p, r.bytes, r.messages, jitter_rng(seed, round_, r.client)),
                       server=s, queue=q)
            for r, p, s, q in zip(results, profiles, service, queue)]
