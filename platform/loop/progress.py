"""What the round loop carries from round to round, and so what a checkpoint holds.

No random-number state carries over: every draw comes from a generator seeded by
(seed, round[, client]), and the model's initial state from `run.seed` when the world
is rebuilt. What the backends hold between rounds is either rebuilt from the config
(the frozen model parts) or kept here: the global trainable state, the aggregation
rule's server optimizer state (fedavgm, fedadam, ...), and the server's body and
optimizer when the method trains it (sfl).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sfprompt.platform.method.client import ClientResult, State
from sfprompt.platform.sim.clock import ClientTime
from sfprompt.platform.sim.faults import MessageFaults


@dataclass(frozen=True)
class InFlight:
    """A client of the buffered protocol that ran but is still training in simulated
    time when a round ends: what it will upload, and when."""

    client: int
    version: int  # the global version (aggregations so far) it started from
    result: ClientResult
    time: ClientTime
    faults: MessageFaults
    left: float  # seconds after its start that it goes offline; nan if it stays
    start: float = 0.0  # when it started, in seconds from the current round's start (<= 0)

    @property
    def event(self) -> float:
        """When, from the current round's start, it arrives (or leaves)."""
        return self.start + (self.time.finish if math.isnan(self.left) else self.left)


@dataclass
class Progress:
    """The round loop's state between rounds (run_rounds updates it in place)."""

    global_state: State
    round: int = 0  # rounds finished
    visited: set[int] = field(default_factory=set)  # clients that received the frozen head
    elapsed: float = 0.0  # simulated seconds so far
    # BodyServer.state_dict() when the method trains the body, else None.
    server: dict[str, Any] | None = None
    # The aggregation rule's memory (fed/aggregation.py: server momentum, moments by
    # name); empty for the rules that keep none (fedavg, fedprox).
    aggregator: dict[str, torch.Tensor] = field(default_factory=dict)
    # prune.once: each client's subset from its first round (sample indices), by client.
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    # The buffered protocol: clients still training, and the global state of every
    # version one of them started from (to rebase its update: fed/staleness.py).
    in_flight: list[InFlight] = field(default_factory=list)
    bases: dict[int, State] = field(default_factory=dict)
