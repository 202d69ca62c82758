"""Evaluation of the global model: which rounds, which test samples, and the pass itself.

`Evaluator` is the one evaluation every backend runs, in the coordinator or on an
evaluation actor (`eval.worker`), so all give the same numbers: the full path (head -> body -> tail) over a fixed set of test samples, with
the global trainable state loaded and, when the method trains the body, the round's body.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.data.datasets import stratified_subset
from sfprompt.platform.method.client import ClientWorker, State
from sfprompt.platform.method.steps import evaluate
from sfprompt.platform.model.precision import autocast
from sfprompt.platform.model.split import SplitModel

# What a backend's `evaluate` returns: a call that waits for (accuracy, loss).
PendingEvaluation = Callable[[], tuple[float, float]]


def evaluation_indices(cfg: Config, test_labels: np.ndarray) -> np.ndarray:
    """The test samples every evaluation uses: all, or `eval.max_samples` of them in a
    stratified subset drawn once from run.seed (the same in every process)."""
    if 0 < cfg.eval.max_samples < len(test_labels):
        return stratified_subset(test_labels, cfg.eval.max_samples, cfg.run.seed)
    return np.arange(len(test_labels))


def evaluates(cfg: Config, round_: int) -> bool:
    """Whether round `round_` ends with an evaluation: every `eval.every`, and the last."""
    return round_ % cfg.eval.every == 0 or round_ == cfg.fed.rounds


class Evaluator:
    """The full path of `split` over the evaluation's test samples."""

    def __init__(self, cfg: Config, split: SplitModel, images: torch.Tensor,
                 labels: torch.Tensor, norm: dict) -> None:
        self.test = ClientWorker(split, images, labels, **norm)
        self.indices = evaluation_indices(cfg, labels.numpy())
        self.batch_size = cfg.train.eval_batch_size
        self.precision = cfg.run.precision

    def __call__(self, global_state: State, body: State | None = None) -> tuple[float, float]:
        """(accuracy, loss) with `global_state` loaded, and `body` when given (a trained
        body that lives elsewhere: the ray backend's server)."""
        self.test.load(global_state)
        if body is not None:
            self.test.split.body.load_state_dict(body)
        with autocast(self.precision):
            return evaluate(self.test.split, self.test.batches(self.indices, self.batch_size))
