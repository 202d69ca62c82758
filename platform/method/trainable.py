"""What trains, and how: the trainable set of a method, parameter kinds, optimizers.

Parameters that start from scratch (prompts, the classifier) and pretrained ones get
their own learning rates; the optimizer is made fresh every round, since clients keep
no optimizer state between rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientWorker
from sfprompt.platform.method.registry import Method
from sfprompt.platform.model.split import SplitModel
from sfprompt.platform.registry import Registry


def set_trainable(split: SplitModel, method: Method) -> None:
    """Place the body where `method` runs it, then set what trains: on the client by
    `method.trains`, and the body, when it stays on the server, by `server_trains`."""
    split.client_body = method.client_body
    for name, param in split.client().named_parameters():
        param.requires_grad_(method.trains(name))
    if not method.client_body:
        for param in split.body.parameters():
            param.requires_grad_(method.server_trains)


def parameter_kind(name: str) -> str:
    """prompts | classifier (both start from scratch; the local path's own classifier
    too) | pretrained."""
    if name == "head.prompts":
        return "prompts"
    classifier = name.startswith(("tail.classifier.", "tail.local_classifier."))
    return "classifier" if classifier else "pretrained"


def is_new(name: str) -> bool:
    """Parameters that start from scratch rather than from the pretrained model."""
    return parameter_kind(name) != "pretrained"


MakeOptimizer = Callable[[list[dict], Config], torch.optim.Optimizer]  # (param groups, cfg)
# foreach: one C++ loop over the parameters instead of Python's (torch's default on the
# CPU), the same element-wise arithmetic and so the same floats (test_trainable.py).
OPTIMIZERS: Registry[MakeOptimizer] = Registry("optimizer", {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, momentum=cfg.train.momentum,
                                               weight_decay=cfg.train.weight_decay, foreach=True),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, weight_decay=cfg.train.weight_decay,
                                                 foreach=True),
})


def make_optimizer(cfg: Config, worker: ClientWorker) -> torch.optim.Optimizer:
    """`train.optimizer`, fresh every round (clients keep no optimizer state between
    rounds), with one learning rate per kind of parameter: `train.prompt_lr` for the
    prompts, `train.lr` for the classifier, `train.pretrained_lr` for pretrained ones."""
    named = [(n, p) for n, p in worker.named_parameters.items() if p.requires_grad]
    rates = {"prompts": cfg.train.prompt_lr, "classifier": cfg.train.lr,
             "pretrained": cfg.train.pretrained_lr}
    groups = [{"params": [p for n, p in named if parameter_kind(n) == kind], "lr": lr}
              for kind, lr in rates.items()]
    return OPTIMIZERS[cfg.train.optimizer]([g for g in groups if g["params"]], cfg)


@contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, scale: float) -> Iterator[None]:
    """Every group of `optimizer` at `scale` times its learning rate while inside (at 1,
    the same floats: x * 1.0 is x)."""
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * scale
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
