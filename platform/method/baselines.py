"""The baselines SFPrompt is compared with, each one client's round.

    sfl          SplitFed with the same cut, no prompts: head and tail train on the
                 client and are FedAvg'd, the server's body trains too. One body shared
                 by all clients and stepped after each client batch, in the order the
                 requests arrive: SplitFed-V2 (Thapa et al. 2022); V1 would keep a body
                 copy per client and average them.
    fl           FedAvg full fine-tuning: the whole model on the client, no prompts,
                 every parameter trains and travels down and up each round
    fl_prompt    federated VPT: the whole frozen model on the client (sent once, as the
                 one-off frozen download), prompts + classifier train and travel
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

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.registry import register_method
from sfprompt.platform.method.session import Session
from sfprompt.platform.method.steps import full_update, split_update
from sfprompt.platform.method.trainable import is_new


def _everything(name: str) -> bool:
    return True


@register_method("sfl", trains=_everything, server_trains=True, prompts=False)
def sfl_round(cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
              server) -> ClientResult:
    """Download head and tail, split training with the body training on the server,
    upload head and tail."""
    s = Session(cfg, worker, task, global_state)
    train_loss = math.nan
    for _ in range(cfg.train.split_epochs):
        train_loss = split_update(worker.split, s.batches(task.indices), s.optimizer, server,
                                  s.link, task.client, s.flops, server_trains=True)
    return s.result(len(task.indices), train_loss)


def _unsplit_round(cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
                   federated: bool) -> ClientResult:
    s = Session(cfg, worker, task, global_state, federated)
    train_loss = math.nan
    for _ in range(cfg.train.split_epochs):
        train_loss = full_update(worker.split, s.batches(task.indices), s.optimizer, s.flops)
    return s.result(len(task.indices), train_loss)


@register_method("fl", trains=_everything, client_body=True, prompts=False)
def fl_round(cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
             server) -> ClientResult:
    """Download the trainable state, train on the full path in one place, upload it
    (fl: the whole model; fl_prompt: prompts and classifier)."""
    return _unsplit_round(cfg, worker, task, global_state, federated=True)


register_method("fl_prompt", trains=is_new, client_body=True)(fl_round)


@register_method("centralized", trains=is_new, client_body=True, pooled=True)
def centralized_round(cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
                      server) -> ClientResult:
    """VPT on everything at once: the round's one client holds the whole training set."""
    return _unsplit_round(cfg, worker, task, global_state, federated=False)
