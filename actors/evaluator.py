"""The evaluation actor: the global model of round r evaluated while round r+1 trains.

It builds the split model from the config (like the server actor: same seed, same
weights, nothing large crosses the network), holds the test set, and runs
`platform.loop.evaluation.Evaluator`, the evaluation the local backend runs, with the
thread count of every actor (`run.threads` when set), so the numbers are the same. When the method trains the
body, each request brings the round's body (the server's, fetched after its clients).

It takes no CPU from the scheduler: it works while the round's clients do, on the same
cores, filling the gaps they leave (waiting on the server, on the coordinator). Ray
restarts it when its process dies and retries the request: evaluation is a pure
function of its inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import ray
import torch

from sfprompt.actors.wire import state_from_wire
from sfprompt.platform.config.schema import Config
from sfprompt.platform.loop.evaluation import Evaluator
from sfprompt.platform.model.build import build_split


class EvaluationActor:
    """Wraps `Evaluator`; create with `ray.remote(EvaluationActor).options(...)`."""

    def __init__(self, cfg: Config, num_classes: int, norm: dict, images: np.ndarray,
                 labels: np.ndarray, threads: int) -> None:
        torch.set_num_threads(threads)  # the count cluster.actor_threads chose
        split, _ = build_split(cfg, num_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # object-store arrays: read only
            images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
        self.evaluator = Evaluator(cfg, split, images_t, labels_t, norm)

    def evaluate(self, global_state: dict, body: dict | None) -> tuple[float, float]:
        return self.evaluator(state_from_wire(global_state),
                              None if body is None else state_from_wire(body))

    def placement(self) -> dict:
        """Node and torch threads of this actor; also the readiness probe."""
        return {"node": ray.get_runtime_context().get_node_id(),
                "threads": torch.get_num_threads(), "device": "cpu"}
