"""SFPrompt (arXiv 2407.17533): one client's round, the paper's steps in order.

    1. download   the global prompts and tail (and, on a first visit, the frozen head)
    2. prune      EL2N: score every local sample on the local path, keep the hardest
                  `prune.keep` of them
    3. local loss `train.local_epochs` epochs on the local path head -> tail, no server
    4. split      `train.split_epochs` epochs on the full path head -> server's frozen
                  body -> tail: smashed data up, activations down, gradients up and
                  (the prompts being in the head) back down
    5. upload     the trained prompts and tail, for FedAvg with the other clients'

Only the prompts (in the head) and the tail train; the body stays frozen on the server.
The open choices this implements are in docs/design.md.
"""

from __future__ import annotations

import math

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.pruning import SCORES, select_hardest
from sfprompt.platform.method.registry import register_method
from sfprompt.platform.method.session import Session
from sfprompt.platform.method.steps import (class_labels, kept_positions, local_loss_update,
                                            score_samples, split_update)
from sfprompt.platform.method.trainable import scaled_lr


def _prompts_and_tail(name: str) -> bool:
    return name == "head.prompts" or name.startswith("tail.")


@register_method("sfprompt", trains=_prompts_and_tail, local_path=True)
def sfprompt_round(cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
                   server) -> ClientResult:
    """Download, EL2N pruning, local-loss update, split training, upload (docs/design.md,
    The method)."""
    s = Session(cfg, worker, task, global_state)  # 1. download
    kept = task.indices
    if cfg.prune.keep < 1.0 and task.kept is not None:  # 2. prune: once, done before
        kept = task.kept
    elif cfg.prune.keep < 1.0:  # 2. prune
        batches = worker.batches(task.indices, cfg.train.eval_batch_size)
        scores = score_samples(worker.split, batches, SCORES[cfg.prune.score], s.generator,
                               s.flops)
        labels = class_labels(worker.labels[task.indices]) if cfg.prune.per_class else None
        kept = task.indices[kept_positions(select_hardest(
            scores, cfg.prune.keep, s.generator, cfg.prune.skip_hardest, labels))]
    local_loss = train_loss = math.nan
    with scaled_lr(s.optimizer, cfg.train.local_lr_scale):
        for _ in range(cfg.train.local_epochs):  # 3. local loss
            local_loss = train_loss = local_loss_update(
                worker.split, s.batches(kept), s.optimizer, s.flops,
                frozen_classifier=cfg.train.local_classifier == "frozen")
    for _ in range(cfg.train.split_epochs):  # 4. split
        train_loss = split_update(worker.split, s.batches(kept), s.optimizer, server, s.link,
                                  task.client, s.flops)
    result = s.result(len(kept), train_loss, local_loss)  # 5. upload
    if cfg.prune.once and cfg.prune.keep < 1.0:
        result.kept = kept  # the client keeps its subset for its later rounds
    return result
