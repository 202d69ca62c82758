"""Methods: what trains, and what one client does in one round.

A method is one registered `Method`: a predicate over client-side parameter names (the
inspectable set of what trains: `head.prompts`, `tail.*`), whether the server's body
trains, and the client's round as a function. The round loop, backends and accounting
are shared, so every method is measured the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from sfprompt.platform.accounting import Link
from sfprompt.platform.client import ClientResult, ClientTask, Device, State
from sfprompt.platform.config import Config
from sfprompt.platform.pruning import SCORES, select_hardest
from sfprompt.platform.split import SplitModel
from sfprompt.platform.steps import local_loss_update, score_samples, split_update

ClientRound = Callable[[Config, Device, ClientTask, State, object], ClientResult]


@dataclass(frozen=True)
class Method:
    trains: Callable[[str], bool]  # client-side parameter name -> trained on the client?
    server_trains: bool            # does the server's body train?
    client_round: ClientRound


METHODS: dict[str, Method] = {}


def register_method(name: str, trains: Callable[[str], bool], server_trains: bool = False):
    def add(fn: ClientRound) -> ClientRound:
        METHODS[name] = Method(trains, server_trains, fn)
        return fn
    return add


def set_trainable(split: SplitModel, method: Method) -> None:
    """Freeze the split model, then unfreeze what `method` trains (client and server)."""
    for name, param in split.client().named_parameters():
        param.requires_grad_(method.trains(name))
    for param in split.body.parameters():
        param.requires_grad_(method.server_trains)


def is_new(name: str) -> bool:
    """Parameters that start from scratch rather than from the pretrained model."""
    return name == "head.prompts" or name.startswith("tail.head.")


def make_optimizer(cfg: Config, device: Device) -> torch.optim.Optimizer:
    """Adam, fresh every round (clients keep no optimizer state between rounds), with
    `train.lr` for new parameters and `train.pretrained_lr` for pretrained ones."""
    named = [(n, p) for n, p in device.client_model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if is_new(n)], "lr": cfg.train.lr},
              {"params": [p for n, p in named if not is_new(n)], "lr": cfg.train.pretrained_lr}]
    return torch.optim.Adam([g for g in groups if g["params"]],
                            weight_decay=cfg.train.weight_decay)


def _prompts_and_tail(name: str) -> bool:
    return name == "head.prompts" or name.startswith("tail.")


@register_method("sfprompt", trains=_prompts_and_tail)
def sfprompt_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
                   server) -> ClientResult:
    """Download, EL2N pruning, local-loss update, split training, upload (DESIGN §1)."""
    link, flops = Link(), Counter()
    if task.first_visit:
        link.send("head_download", device.frozen_state())
    device.load(link.send("download", global_state))
    generator = torch.Generator().manual_seed(task.seed)
    batch = cfg.train.batch_size

    kept = task.indices
    if cfg.prune.keep < 1.0:
        scores = score_samples(device.split, device.batches(task.indices, cfg.train.eval_batch_size),
                               SCORES[cfg.prune.score], generator, flops)
        kept = task.indices[select_hardest(scores, cfg.prune.keep).numpy()]

    optimizer = make_optimizer(cfg, device)
    local_loss = train_loss = math.nan
    for _ in range(cfg.train.local_epochs):
        local_loss = train_loss = local_loss_update(
            device.split, device.batches(kept, batch, generator), optimizer, flops)
    key: Hashable = task.client
    for _ in range(cfg.train.split_epochs):
        train_loss = split_update(device.split, device.batches(kept, batch, generator), optimizer,
                                  server, link, key, flops)

    state = link.send("upload", device.state())
    return ClientResult(client=task.client, state=state, num_samples=len(task.indices),
                        num_kept=len(kept), train_loss=train_loss, local_loss=local_loss,
                        bytes=dict(link.bytes), messages=dict(link.messages),
                        client_flops=flops["client"])
