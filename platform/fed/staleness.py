"""Stale updates of the buffered protocol (FedBuff, Nguyen et al. 2022).

A client that started from global version v (the state after v aggregations) and is
aggregated when the global state is at version v' carries an update of staleness
s = v' - v: it moved away from a model the others have since moved on from. Its state
is rebased onto the current global state, its movement discounted by the staleness
weighting w(s):

    rebased = global + w(s) * (state - base)        base: the global state at version v

and the aggregation rule then takes the rebased state like a fresh one (weights: kept
samples), so FedBuff's discounted mean of updates is the rule's FedAvg. A fresh
update (s = 0: its base is the global state) needs no rebasing, and w(0) = 1 for every
weighting, so a buffer of fresh updates aggregates exactly as a synchronous round does.
The probe norm's running statistics are estimates of a mean and a variance, not steps:
they are taken as the client measured them (a discounted difference of variances can
fall below zero).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.method.client import State, is_statistic
from sfprompt.platform.registry import Registry

# (fed, staleness s >= 0) -> the factor on the update's movement; 1 at s = 0.
Weighting = Callable[[FedConfig, int], float]
STALENESS: Registry[Weighting] = Registry("staleness weighting")


@STALENESS.register("constant")
def constant(fed: FedConfig, staleness: int) -> float:
    """Every update counts in full, however old its model."""
    return 1.0


@STALENESS.register("polynomial")
def polynomial(fed: FedConfig, staleness: int) -> float:
    """(1 + s)^-a: FedBuff's 1/sqrt(1 + s) at a = 0.5; a = 0 is constant."""
    return float((1 + staleness) ** -fed.staleness_exponent)


def rebase(state: State, base: State, global_state: State, weight: float) -> State:
    """global + weight * (state - base) for every trained tensor (in float64, then back
    to its dtype); running statistics as the client measured them."""
    out: State = {}
    for name, value in state.items():
        if is_statistic(name):
            out[name] = value
            continue
        moved = value.to(torch.float64) - base[name].to(torch.float64)
        out[name] = (global_state[name].to(torch.float64) + weight * moved).to(value.dtype)
    return out
