"""One client's round in progress: from the model's arrival to the upload.

A `Session` holds the round's link (every tensor that crosses is counted there), its
FLOP counter, its seeded generator and its optimizer, so a method's client round is
only its steps. Under `fed.aggregation = "fedprox"` the optimizer also carries FedProx's
proximal gradient, so every method's every step (`steps.apply_step`) gets it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.trainable import make_optimizer
from sfprompt.platform.wire.codecs import cut_codecs
from sfprompt.platform.wire.flops import Flops, trainable_signature
from sfprompt.platform.wire.link import Link


class Session:
    """One client's round in progress: its link, FLOP counter, seeded generator and
    optimizer, from the model's arrival to the upload. `federated=False` (pooled data,
    nothing to send) loads and returns the state without crossing any link."""

    def __init__(self, cfg: Config, worker: ClientWorker, task: ClientTask, global_state: State,
                 federated: bool = True) -> None:
        self.cfg, self.worker, self.task, self.federated = cfg, worker, task, federated
        self.link = Link(cut_codecs(cfg.compress))
        self.flops = Flops(worker.flop_cache, trainable_signature(worker.parameters))
        if federated:
            frozen = worker.frozen_state() if task.first_visit else {}
            if frozen:
                self.link.send_held("frozen_download", frozen)
            global_state = self.link.send("download", global_state)
        worker.load(global_state)
        self.generator = torch.Generator().manual_seed(task.seed)
        self.optimizer = make_optimizer(cfg, worker)
        mu = cfg.fed.prox_mu if cfg.fed.aggregation == "fedprox" else 0.0
        if mu > 0:  # mu = 0 adds nothing: no hook, and FedAvg's numbers bit for bit
            # Pooled data has no download copy; the caller's state may be these very
            # parameters, so the anchor is a copy of it.
            anchor = global_state if federated else {k: v.clone() for k, v in global_state.items()}
            add_proximal_gradient(self.optimizer, worker.named_parameters, anchor, mu)

    def batches(self, indices: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of `indices`, shuffled by the round's generator."""
        return self.worker.batches(indices, self.cfg.train.batch_size, self.generator)

    def result(self, kept: int, train_loss: float, local_loss: float = math.nan) -> ClientResult:
        state = self.worker.state()
        state = (self.link.send("upload", state) if self.federated
                 else {k: v.clone() for k, v in state.items()})
        return ClientResult(client=self.task.client, state=state,
                            num_samples=len(self.task.indices), num_kept=kept,
                            train_loss=train_loss, local_loss=local_loss,
                            bytes=dict(self.link.bytes), messages=dict(self.link.messages),
                            client_flops=self.flops["client"])


def add_proximal_gradient(optimizer: torch.optim.Optimizer,
                          parameters: dict[str, torch.nn.Parameter], anchor: State,
                          mu: float) -> None:
    """FedProx (Li et al. 2020): the client minimises loss + mu/2 ||w − w_global||² over
    the parameters it trains and uploads. Its gradient is the loss's plus mu (w − w_global),
    added to each such parameter's gradient just before every `optimizer.step` (a step
    pre-hook): the same step as adding the term to the loss, without a second backward
    through it. A parameter without a gradient is one the optimizer skips anyway."""
    pairs = [(p, anchor[name]) for name, p in parameters.items()
             if p.requires_grad and name in anchor]

    @torch.no_grad()
    def pull_toward_global(opt, args, kwargs) -> None:
        for p, g in pairs:
            if p.grad is not None:
                p.grad.add_(p - g, alpha=mu)

    optimizer.register_step_pre_hook(pull_toward_global)
