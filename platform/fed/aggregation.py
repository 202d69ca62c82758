"""Aggregation rules: pure functions from client states and weights to the next global
state. Every rule weights each client by the number of samples it trained on (its kept
samples in SFPrompt), as McMahan et al. weight by local data size.

A registered rule is one function

    rule(states, weights, global_state, memory, fed) -> (new_global_state, new_memory)

`memory` is the server optimizer's state, tensors by name, carried by the round loop
in `Progress.aggregator` (and so in checkpoints); `fed` is the FedConfig holding the
server optimizer's settings.

    fedavg      the weighted average (McMahan et al. 2017); no memory
    fedprox     FedAvg on the server; the proximal term lives in the clients' training
                (method/session.py), since FedProx (Li et al. 2020) changes only the
                local objective
    fedavgm     FedAvg with server momentum (Hsu et al. 2019)
    fedadagrad, fedadam, fedyogi
                adaptive server optimizers (Reddi et al. 2021, Algorithm 2)

The server optimizers treat Δ = average − global as a pseudo-gradient (it points the way
the clients moved). They step the trained parameters only: the probe norm's running
statistics are estimates of a mean and a variance, so they take the clients' average,
as in FedAvg; a momentum or adaptive step on them has no meaning and can push a
variance below zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.method.client import is_statistic
from sfprompt.platform.registry import Registry

State = dict[str, torch.Tensor]
Memory = dict[str, torch.Tensor]  # server optimizer state: "<moment>/<parameter name>"
_MOMENTS = ("m", "v")  # the moments the server optimizers below keep
Aggregation = Callable[[Sequence[State], Sequence[float], State, Memory, FedConfig],
                       tuple[State, Memory]]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")
register_aggregation = AGGREGATIONS.register


def _average64(states: Sequence[State], weights: Sequence[float]) -> State:
    """sum_k w_k * state_k / sum_k w_k, tensor by tensor, in float64."""
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
        # ((0 + w_1 x_1) + w_2 x_2) + ..., each product rounded once in float64, in place:
        # a round of 1,000 clients would otherwise allocate two temporaries per client.
        acc = torch.zeros(states[0][name].shape, dtype=torch.float64)
        term = torch.empty_like(acc)
        for state, w in zip(states, weights):
            acc.add_(term.copy_(state[name]).mul_(w / total))
        out[name] = acc
    return out


def aggregate_held(rule: Aggregation, states: Sequence[State], weights: Sequence[float],
                   global_state: State, memory: Memory, fed: FedConfig) -> tuple[State, Memory]:
    """`rule` where clients may hold different parts of the global state (split plans,
    model/plans.py): every entry is aggregated over the clients that hold it, with their
    weights, and one that no client holds keeps its global value and its memory. Every
    rule here treats entries one by one, so this is the rule itself when every client
    holds everything."""
    extra = sorted(set().union(*states) - set(global_state))
    if extra:
        raise ValueError(f"client states hold {extra}, which the global state lacks")
    if all(len(state) == len(global_state) for state in states):
        return rule(states, weights, global_state, memory, fed)
    groups: dict[tuple[int, ...], list[str]] = {}  # clients holding an entry -> entries
    for name in global_state:
        holders = tuple(i for i, state in enumerate(states) if name in state)
        if holders:
            groups.setdefault(holders, []).append(name)
    held = {name for names in groups.values() for name in names}
    new_state = dict(global_state)
    new_memory = {k: v for k, v in memory.items() if k.split("/", 1)[1] not in held}
    for holders, names in groups.items():
        mine = set(names)
        part, part_memory = rule([{n: states[i][n] for n in names} for i in holders],
                                 [weights[i] for i in holders],
                                 {n: global_state[n] for n in names},
                                 {k: v for k, v in memory.items() if k.split("/", 1)[1] in mine},
                                 fed)
        new_state.update(part)
        new_memory.update(part_memory)
    return new_state, new_memory


def fedavg(states: Sequence[State], weights: Sequence[float]) -> State:
    """sum_k w_k * state_k / sum_k w_k, tensor by tensor, in float64 then back to dtype."""
    return {name: acc.to(states[0][name].dtype)
            for name, acc in _average64(states, weights).items()}


def fedavg_rule(states: Sequence[State], weights: Sequence[float], global_state: State,
                memory: Memory, fed: FedConfig) -> tuple[State, Memory]:
    """FedAvg as a rule: the average is the next global state; nothing to remember."""
    return fedavg(states, weights), {}


register_aggregation("fedavg")(fedavg_rule)
register_aggregation("fedprox")(fedavg_rule)


# One server optimizer's step on one tensor: (x, Δ, its moments by name, or {} before
# the first step, fed) -> (new x, new moments), all float64.
Step = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], FedConfig],
                tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _server_optimizer(step: Step) -> Aggregation:
    """A rule that averages the clients' states, then moves the global state by `step`
    with the pseudo-gradient Δ = average − global; statistics take the average."""
    def rule(states: Sequence[State], weights: Sequence[float], global_state: State,
             memory: Memory, fed: FedConfig) -> tuple[State, Memory]:
        average = _average64(states, weights)
        missing = sorted(set(average) - set(global_state))
        if missing:
            raise ValueError(f"client states hold {missing}, which the global state lacks")
        new_state: State = {}
        new_memory: Memory = {}
        for name, avg in average.items():
            dtype = states[0][name].dtype
            if is_statistic(name):
                new_state[name] = avg.to(dtype)
                continue
            x = global_state[name].double()
            moments = {k: memory[f"{k}/{name}"] for k in _MOMENTS if f"{k}/{name}" in memory}
            x, moments = step(x, avg - x, moments, fed)
            new_state[name] = x.to(dtype)
            new_memory.update({f"{key}/{name}": value for key, value in moments.items()})
        return new_state, new_memory
    return rule


def _momentum_step(x: torch.Tensor, delta: torch.Tensor, moments: dict[str, torch.Tensor],
                   fed: FedConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """v <- beta v + Δ (v starts at 0); x <- x + lr v. Hsu et al. write Δ = x − average and
    subtract; the step is the same."""
    v = fed.server_momentum * moments.get("v", torch.zeros_like(delta)) + delta
    return x + fed.server_lr * v, {"v": v}


SecondMoment = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _adaptive_step(second_moment: SecondMoment) -> Step:
    """Reddi et al.'s Algorithm 2 with `second_moment(v, Δ², beta2)` as v's update:
    m <- b1 m + (1 − b1) Δ (m starts at 0); v starts at tau²; x <- x + lr m / (√v + tau).
    No bias correction, as in the paper (and Flower's strategies)."""
    def step(x: torch.Tensor, delta: torch.Tensor, moments: dict[str, torch.Tensor],
             fed: FedConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        beta1, tau = fed.server_momentum, fed.server_tau
        m = beta1 * moments.get("m", torch.zeros_like(delta)) + (1 - beta1) * delta
        v = second_moment(moments.get("v", torch.full_like(delta, tau ** 2)), delta ** 2,
                          fed.server_beta2)
        return x + fed.server_lr * m / (v.sqrt() + tau), {"m": m, "v": v}
    return step


AGGREGATIONS.add("fedavgm", _server_optimizer(_momentum_step))
AGGREGATIONS.add("fedadagrad", _server_optimizer(_adaptive_step(
    lambda v, d2, beta2: v + d2)))
AGGREGATIONS.add("fedadam", _server_optimizer(_adaptive_step(
    lambda v, d2, beta2: beta2 * v + (1 - beta2) * d2)))
AGGREGATIONS.add("fedyogi", _server_optimizer(_adaptive_step(
    lambda v, d2, beta2: v - (1 - beta2) * d2 * torch.sign(v - d2))))
