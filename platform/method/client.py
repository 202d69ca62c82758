"""A client's work order and report, and the `ClientWorker` that runs any client's work.

A simulated client is *state* (its shard of sample indices, later its profile) plus
*work*. The work runs on a `ClientWorker`: one copy of the client-side model parts and of
the training set, reloaded with the global state for each client. So one process (or one
Ray actor) serves any number of simulated clients.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from sfprompt.platform.data.datasets import to_model_input
from sfprompt.platform.model.split import SplitModel

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientTask:
    """What the coordinator hands out: who, which round, which samples, which seed."""

    client: int
    round: int
    indices: np.ndarray  # (n,) positions in the training set
    seed: int
    first_visit: bool  # the client has never received the frozen head
    crash: bool = False  # injected fault: the client's process dies on receiving this
    kept: np.ndarray | None = None  # prune.once: the subset its first round kept
    split: tuple[int, int] | None = None  # its split under a split plan (method/planned.py)


@dataclass
class ClientResult:
    """What comes back: the uploaded state and everything measured on the way."""

    client: int
    state: State
    num_samples: int
    num_kept: int
    train_loss: float  # mean loss of the last training phase that ran
    local_loss: float  # mean loss of the local-loss update (nan if it did not run)
    bytes: dict[str, int] = field(default_factory=dict)  # by traffic kind
    messages: dict[str, int] = field(default_factory=dict)  # by traffic kind
    client_flops: int = 0
    server_flops: int = 0  # filled in by the coordinator from the server's counter
    kept: np.ndarray | None = None  # prune.once: the subset it trained on, to keep


def parameters_by_name(named: Mapping[str, torch.nn.Parameter], trainable: bool) -> State:
    """The (detached) parameters of `named` that train, or those that do not."""
    return {n: p.detach() for n, p in named.items() if p.requires_grad == trainable}


# Buffers learned from data (split.ProbeNorm's): they travel and are averaged like weights.
STATISTICS = ("running_mean", "running_var")


def is_statistic(name: str) -> bool:
    """A buffer (or state entry) that is one of the `STATISTICS`."""
    return name.rsplit(".", 1)[-1] in STATISTICS


def trained_state(parameters: Mapping[str, torch.nn.Parameter],
                  buffers: Mapping[str, torch.Tensor]) -> State:
    """The state a client trains and uploads, by name (`head.prompts`, `tail.*`): the
    trainable `parameters` and the running statistics among `buffers`."""
    state = parameters_by_name(parameters, trainable=True)
    state.update({n: b.detach() for n, b in buffers.items() if is_statistic(n)})
    return state


def client_state(model: torch.nn.Module) -> State:
    """`trained_state` of `model`."""
    return trained_state(dict(model.named_parameters()), dict(model.named_buffers()))


class ClientWorker:
    """Client-side model parts and training data; `load` then train then `state`."""

    def __init__(self, split: SplitModel, images: torch.Tensor, labels: torch.Tensor, *,
                 img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.split = split
        self.images = images  # (N, C, H, W) uint8: the raw set stays small in memory
        self.labels = labels  # (N,) int64
        self.norm = dict(img_size=img_size, mean=tuple(mean), std=tuple(std))
        self.client_model = split.client()
        self.parameters = list(self.client_model.parameters())
        # By name, walked once: every client's load, state and optimizer look them up,
        # and walking the modules each time costs more than a small client's step.
        self.named_parameters = dict(self.client_model.named_parameters())
        self._buffers = dict(self.client_model.named_buffers())
        self._loadable = {**self.named_parameters, **self._buffers}
        # FLOPs of each distinct step, counted once for every client this worker serves
        # (wire.flops.Flops); None counts every step afresh.
        self.flop_cache: dict | None = {}

    def batches(self, indices: np.ndarray, batch_size: int,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Model-ready batches of `indices`, shuffled by `generator` when given."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if generator is not None:
            idx = idx[torch.randperm(len(idx), generator=generator)]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            yield to_model_input(self.images[chunk], **self.norm), self.labels[chunk]

    def state(self) -> State:
        """What trains on the client and travels (client_state)."""
        return trained_state(self.named_parameters, self._buffers)

    def frozen_state(self) -> State:
        """The client-side parameters that never train: sent once, on a first visit."""
        return parameters_by_name(self.named_parameters, trainable=False)

    @torch.no_grad()
    def load(self, state: State) -> None:
        for name, value in state.items():
            self._loadable[name].copy_(value)
