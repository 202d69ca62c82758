"""Aggregation rules: pure functions from client states and weights to the next global
state. FedAvg weights each client by the number of samples it trained on (its kept
samples in SFPrompt), as McMahan et al. weight by local data size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sfprompt.platform.registry import Registry

State = dict[str, torch.Tensor]
Aggregation = Callable[[Sequence[State], Sequence[float]], State]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")
register_aggregation = AGGREGATIONS.register


@register_aggregation("fedavg")
def fedavg(states: Sequence[State], weights: Sequence[float]) -> State:
    """sum_k w_k * state_k / sum_k w_k, tensor by tensor, in float64 then back to dtype."""
    if not states:
        raise ValueError("fedavg needs at least one client state")
    if len(states) != len(weights):
        raise ValueError(f"fedavg got {len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("fedavg weights must sum to a positive number")
    names = states[0].keys()
    for state in states[1:]:
        if state.keys() != names:
            raise ValueError("fedavg states have different parameter names")
    out: State = {}
    for name in names:
        acc = sum(s[name].double() * (w / total) for s, w in zip(states, weights))
        out[name] = acc.to(states[0][name].dtype)
    return out
