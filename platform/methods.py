"""Methods: what trains, where the model lives, and what one client does in one round.

A method is one registered `Method`: a predicate over client-side parameter names (the
inspectable set of what trains: `head.prompts`, `tail.*`), whether the server's body
trains, whether the whole model sits on the client (nothing split), whether the model
has prompts, whether the data is pooled, and the client's round as a function. The
round loop, backends and accounting are shared, so every method is measured the same
way.

    sfprompt     prompts + tail on the client, body frozen on the server; EL2N pruning,
                 local-loss update, split training (DESIGN.md section 1)
    sfl          SplitFed with the same cut, no prompts: head and tail train on the
                 client and are FedAvg'd, the server's body trains too. One body shared
                 by all clients and stepped after each client batch, in the order the
                 requests arrive: SplitFed-V2 (Thapa et al. 2022); V1 would keep a body
                 copy per client and average them.
    fl           FedAvg full fine-tuning: the whole model on the client, no prompts,
                 every parameter trains and travels down and up each round
    fl_prompt    federated VPT: the whole frozen model on the client (sent once, as the
                 one-off head_download), prompts + classifier train and travel
    centralized  VPT on the pooled data: one client holding the whole training set,
                 every round, with no federation traffic (an upper bound)

The baselines have no pruning and no local-loss update (SFPrompt's additions): each
round they train `train.split_epochs` epochs on all their samples on the full path,
split (sfl) or in one place, the same full-path epochs SFPrompt's split phase runs.
SFPrompt's ablations are configuration (`prune.keep = 1`, `train.local_epochs = 0`,
`prompt.length = 0`), not methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sfprompt.platform.accounting import Flops, Link, trainable_signature
from sfprompt.platform.client import ClientResult, ClientTask, Device, State
from sfprompt.platform.compression import cut_codecs
from sfprompt.platform.config import Config, replace
from sfprompt.platform.pruning import SCORES, select_hardest
from sfprompt.platform.split import SplitModel
from sfprompt.platform.steps import (full_update, kept_positions, local_loss_update,
                                     score_samples, split_update)

ClientRound = Callable[[Config, Device, ClientTask, State, object], ClientResult]


@dataclass(frozen=True)
class Method:
    trains: Callable[[str], bool]  # client-side parameter name -> trained on the client?
    client_round: ClientRound
    server_trains: bool = False    # does the server's body train?
    client_body: bool = False      # the whole model is on the client: nothing is split
    prompts: bool = True           # the model gets `prompt.length` prompts
    pooled: bool = False           # one client holds all training data (no federation)


METHODS: dict[str, Method] = {}


def register_method(name: str, trains: Callable[[str], bool], **options):
    """Register the decorated client round as method `name` (options: Method's fields)."""
    def add(fn: ClientRound) -> ClientRound:
        METHODS[name] = Method(trains, fn, **options)
        return fn
    return add


def set_trainable(split: SplitModel, method: Method) -> None:
    """Place the body where `method` runs it, then set what trains: on the client by
    `method.trains`, and the body, when it stays on the server, by `server_trains`."""
    split.client_body = method.client_body
    for name, param in split.client().named_parameters():
        param.requires_grad_(method.trains(name))
    if not method.client_body:
        for param in split.body.parameters():
            param.requires_grad_(method.server_trains)


def prompt_length(cfg: Config) -> int:
    """Prompts of the model `cfg` trains: none for the methods that fine-tune weights."""
    return cfg.prompt.length if METHODS[cfg.train.method].prompts else 0


def world_config(cfg: Config) -> Config:
    """The config the world is built from: a pooled method sees one client holding the
    whole training set (the partition of one client is everything) in every round."""
    if not METHODS[cfg.train.method].pooled:
        return cfg
    return replace(cfg, **{"fed.num_clients": 1, "fed.clients_per_round": 1,
                           "fed.partition": "iid", "fed.protocol": "wait_all"})


def parameter_kind(name: str) -> str:
    """prompts | classifier (both start from scratch) | pretrained."""
    if name == "head.prompts":
        return "prompts"
    return "classifier" if name.startswith("tail.head.") else "pretrained"


def is_new(name: str) -> bool:
    """Parameters that start from scratch rather than from the pretrained model."""
    return parameter_kind(name) != "pretrained"


OPTIMIZERS: dict[str, Callable[[list[dict], Config], torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, momentum=cfg.train.momentum,
                                               weight_decay=cfg.train.weight_decay),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, weight_decay=cfg.train.weight_decay),
}


def make_optimizer(cfg: Config, device: Device) -> torch.optim.Optimizer:
    """`train.optimizer`, fresh every round (clients keep no optimizer state between
    rounds), with one learning rate per kind of parameter: `train.prompt_lr` for the
    prompts, `train.lr` for the classifier, `train.pretrained_lr` for pretrained ones."""
    named = [(n, p) for n, p in device.client_model.named_parameters() if p.requires_grad]
    rates = {"prompts": cfg.train.prompt_lr, "classifier": cfg.train.lr,
             "pretrained": cfg.train.pretrained_lr}
    groups = [{"params": [p for n, p in named if parameter_kind(n) == kind], "lr": lr}
              for kind, lr in rates.items()]
    return OPTIMIZERS[cfg.train.optimizer]([g for g in groups if g["params"]], cfg)


class Session:
    """One client's round in progress: its link, FLOP counter, seeded generator and
    optimizer, from the model's arrival to the upload. `federated=False` (pooled data,
    nothing to send) loads and returns the state without crossing any link."""

    def __init__(self, cfg: Config, device: Device, task: ClientTask, global_state: State,
                 federated: bool = True) -> None:
        self.cfg, self.device, self.task, self.federated = cfg, device, task, federated
        self.link = Link(cut_codecs(cfg.compress))
        self.flops = Flops(device.flop_cache, trainable_signature(device.parameters))
        if federated:
            frozen = device.frozen_state() if task.first_visit else {}
            if frozen:
                self.link.send_held("head_download", frozen)
            global_state = self.link.send("download", global_state)
        device.load(global_state)
        self.generator = torch.Generator().manual_seed(task.seed)
        self.optimizer = make_optimizer(cfg, device)

    def batches(self, indices: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of `indices`, shuffled by the round's generator."""
        return self.device.batches(indices, self.cfg.train.batch_size, self.generator)

    def result(self, kept: int, train_loss: float, local_loss: float = math.nan) -> ClientResult:
        state = self.device.state()
        state = (self.link.send("upload", state) if self.federated
                 else {k: v.clone() for k, v in state.items()})
        return ClientResult(client=self.task.client, state=state,
                            num_samples=len(self.task.indices), num_kept=kept,
                            train_loss=train_loss, local_loss=local_loss,
                            bytes=dict(self.link.bytes), messages=dict(self.link.messages),
                            client_flops=self.flops["client"])


def _prompts_and_tail(name: str) -> bool:
    return name == "head.prompts" or name.startswith("tail.")


def _everything(name: str) -> bool:
    return True


@register_method("sfprompt", trains=_prompts_and_tail)
def sfprompt_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
                   server) -> ClientResult:
    """Download, EL2N pruning, local-loss update, split training, upload (DESIGN §1)."""
    s = Session(cfg, device, task, global_state)
    kept = task.indices
    if cfg.prune.keep < 1.0:
        scores = score_samples(device.split, device.batches(task.indices, cfg.train.eval_batch_size),
                               SCORES[cfg.prune.score], s.generator, s.flops)
        kept = task.indices[kept_positions(select_hardest(scores, cfg.prune.keep, s.generator))]
    local_loss = train_loss = math.nan
    for _ in range(cfg.train.local_epochs):
        local_loss = train_loss = local_loss_update(device.split, s.batches(kept), s.optimizer,
                                                    s.flops)
    for _ in range(cfg.train.split_epochs):
        train_loss = split_update(device.split, s.batches(kept), s.optimizer, server, s.link,
                                  task.client, s.flops)
    return s.result(len(kept), train_loss, local_loss)


@register_method("sfl", trains=_everything, server_trains=True, prompts=False)
def sfl_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
              server) -> ClientResult:
    """Download head and tail, split training with the body training on the server,
    upload head and tail."""
    s = Session(cfg, device, task, global_state)
    train_loss = math.nan
    for _ in range(cfg.train.split_epochs):
        train_loss = split_update(device.split, s.batches(task.indices), s.optimizer, server,
                                  s.link, task.client, s.flops, server_trains=True)
    return s.result(len(task.indices), train_loss)


def _unsplit_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
                   federated: bool) -> ClientResult:
    s = Session(cfg, device, task, global_state, federated)
    train_loss = math.nan
    for _ in range(cfg.train.split_epochs):
        train_loss = full_update(device.split, s.batches(task.indices), s.optimizer, s.flops)
    return s.result(len(task.indices), train_loss)


@register_method("fl", trains=_everything, client_body=True, prompts=False)
def fl_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
             server) -> ClientResult:
    """Download the trainable state, train on the full path in one place, upload it
    (fl: the whole model; fl_prompt: prompts and classifier)."""
    return _unsplit_round(cfg, device, task, global_state, federated=True)


register_method("fl_prompt", trains=is_new, client_body=True)(fl_round)


@register_method("centralized", trains=is_new, client_body=True, pooled=True)
def centralized_round(cfg: Config, device: Device, task: ClientTask, global_state: State,
                      server) -> ClientResult:
    """VPT on everything at once: the round's one client holds the whole training set."""
    return _unsplit_round(cfg, device, task, global_state, federated=False)
