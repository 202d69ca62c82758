"""Round protocols: how many clients a round samples, which of those that ran are
aggregated, and when the round ends in simulated time.

A protocol is one registered `Protocol`: `sample_size(fed)` and `select(fed, finish,
gone)`, where `finish` holds the simulated finish time of every client that ran
(clock.py), or for one that went offline first (`gone`, availability.py) when it left.
Each client of a round ends with one status:

    ok        aggregated
    late      over `fed.deadline_s` under the deadline protocol; not aggregated
    dropped   beyond the first `clients_per_round` to finish under over-commit, or
              gone offline before it finished (availability over time, availability.py)
    offline   not there when sampled (probability 1 - availability, per_round); runs nothing
    failed    its work was lost (its process crashed, injected or not): not
              aggregated, nothing of it counted

and under the buffered protocol a client still training when the round's buffer fills
is carried to the next round (`training`), and ends there or later with one of these.

The simulation's dilemma: a real coordinator learns that a client is late while it is
still working, but here a client's time is known only after its work has run, because
its FLOPs and bytes are counted by running it. So late and dropped clients run in full
and their cost is counted (it was spent: the round's bytes and FLOPs include it); only
their updates are discarded. Offline clients are decided before any work, from a
generator seeded by (run seed, round, client), so they cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.registry import Registry
from sfprompt.platform.seeds import stream

_AVAILABILITY_STREAM = 0xA7A1  # keeps availability draws apart from other seeded streams

# (fed, finish time of each client that ran, whether it left before finishing: then its
# "finish" is when it left) -> (statuses, round seconds). A client that left is dropped.
Select = Callable[[FedConfig, Sequence[float], Sequence[bool] | None], tuple[list[str], float]]


@dataclass(frozen=True)
class Protocol:
    sample_size: Callable[[FedConfig], int]
    select: Select


PROTOCOLS: Registry[Protocol] = Registry("round protocol")


def _clients_per_round(fed: FedConfig) -> int:
    return fed.clients_per_round


def register_protocol(name: str, sample_size: Callable[[FedConfig], int] = _clients_per_round):
    def add(fn: Select) -> Select:
        PROTOCOLS.add(name, Protocol(sample_size, fn))
        return fn
    return add


def _dropped_if_gone(statuses: list[str], gone: Sequence[bool] | None) -> list[str]:
    return statuses if gone is None else ["dropped" if g else s for s, g in zip(statuses, gone)]


@register_protocol("wait_all")
def wait_all(fed: FedConfig, finish: Sequence[float],
             gone: Sequence[bool] | None = None) -> tuple[list[str], float]:
    """Everyone is aggregated; the round lasts until its slowest client finishes (or
    leaves)."""
    return _dropped_if_gone(["ok"] * len(finish), gone), max(finish, default=0.0)


@register_protocol("deadline")
def deadline(fed: FedConfig, finish: Sequence[float],
             gone: Sequence[bool] | None = None) -> tuple[list[str], float]:
    """Clients finishing after `fed.deadline_s` are late; the coordinator waits for the
    deadline only when someone misses it."""
    statuses = ["ok" if t <= fed.deadline_s else "late" for t in finish]
    end = fed.deadline_s if "late" in statuses else max(finish, default=0.0)
    return _dropped_if_gone(statuses, gone), end


def over_commit_size(fed: FedConfig) -> int:
    """ceil(c x K); rounded first so that 1.3 x 10 = 13.000000000000002 samples 13."""
    return math.ceil(round(fed.over_commit * fed.clients_per_round, 9))


@register_protocol("over_commit", sample_size=over_commit_size)
def over_commit(fed: FedConfig, finish: Sequence[float],
                gone: Sequence[bool] | None = None) -> tuple[list[str], float]:
    """The first `clients_per_round` to finish are aggregated (ties: lower position
    first) and the round ends with the last of them; the others are dropped. A client
    that left takes no place; when too few finish, the round waits for everyone."""
    gone = gone or [False] * len(finish)
    order = sorted((i for i in range(len(finish)) if not gone[i]), key=lambda i: (finish[i], i))
    kept = set(order[:fed.clients_per_round])
    statuses = ["ok" if i in kept else "dropped" for i in range(len(finish))]
    if len(kept) < fed.clients_per_round:
        return statuses, max(finish, default=0.0)
    return statuses, max((finish[i] for i in kept), default=0.0)


def concurrency(fed: FedConfig) -> int:
    """Clients the buffered protocol keeps training (0: clients_per_round)."""
    return fed.concurrency or fed.clients_per_round


def buffer_size(fed: FedConfig) -> int:
    """Arrivals per aggregation of the buffered protocol (0: clients_per_round)."""
    return fed.buffer_size or fed.clients_per_round


@register_protocol("buffered", sample_size=concurrency)
def buffered(fed: FedConfig, finish: Sequence[float],
             gone: Sequence[bool] | None = None) -> tuple[list[str], float]:
    """FedBuff's buffer (Nguyen et al. 2022): clients arrive in order of finish (ties:
    lower position first), and the first `buffer_size` to arrive are aggregated; the
    round ends with the last of them. A client that leaves before then is dropped when
    it leaves; the others are still `training` and arrive in a later round. When fewer
    arrive, the round waits for everyone. The loop keeps `concurrency` clients training:
    each round it samples as many as arrived, left or failed in the one before."""
    gone = gone or [False] * len(finish)
    statuses = ["training"] * len(finish)
    arrived, end = 0, 0.0
    for i in sorted(range(len(finish)), key=lambda i: (finish[i], i)):
        if arrived == buffer_size(fed):
            break
        statuses[i] = "dropped" if gone[i] else "ok"
        arrived += not gone[i]
        end = finish[i]
    return statuses, end


def is_online(seed: int, round_: int, client: int, availability: float) -> bool:
    """Whether a sampled client is there: its own draw, so it does not depend on who
    else was sampled or on the backend."""
    draw = stream(seed, round_, client, _AVAILABILITY_STREAM).random()
    return bool(draw < availability)
