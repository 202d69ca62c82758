"""The round loop, written once, and the in-process backend.

    for each round:
        sample clients -> backend runs each client's round (method.client_round)
        -> aggregate the uploaded states (weights = kept samples) -> evaluate -> one row

The coordinator owns the global trainable state, client sampling and seeds; a backend
only executes client work and evaluation. `LocalBackend` does that in this process and
is the reference any other backend (Ray) must reproduce number for number.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sfprompt.platform.accounting import DOWN, KINDS
from sfprompt.platform.aggregation import AGGREGATIONS
from sfprompt.platform.client import ClientResult, ClientTask, Device, State, parameters_by_name
from sfprompt.platform.config import Config
from sfprompt.platform.datasets import ImageData, load_dataset
from sfprompt.platform.methods import METHODS, set_trainable
from sfprompt.platform.partition import partition
from sfprompt.platform.server import BodyServer
from sfprompt.platform.split import SplitModel, split_vit
from sfprompt.platform.steps import evaluate
from sfprompt.platform.weights import create_vit

log = logging.getLogger(__name__)


@dataclass
class World:
    """What a config determines before any training: data, shards, the split model."""

    cfg: Config
    data: ImageData
    shards: list[np.ndarray]
    split: SplitModel
    norm: dict  # img_size, mean, std for to_model_input


def build_split(cfg: Config, num_classes: int) -> tuple[SplitModel, dict]:
    """The split model with the method's trainable set; same seed => same initial state
    in every process (classifier and prompt init draw from the seeded torch RNG)."""
    torch.manual_seed(cfg.run.seed)
    vit = create_vit(cfg.model.name, num_classes=num_classes, img_size=cfg.model.img_size,
                     weights=cfg.model.weights)
    vit.eval()  # no dropout or drop-path: the parts are trained, the model is not sampled
    split = split_vit(vit, cfg.split.head_blocks, cfg.split.tail_blocks, cfg.prompt.length,
                      cfg.split.local_pool)
    set_trainable(split, METHODS[cfg.train.method])
    pcfg = vit.pretrained_cfg
    norm = dict(img_size=cfg.model.img_size, mean=tuple(pcfg.get("mean", (0.5,) * 3)),
                std=tuple(pcfg.get("std", (0.5,) * 3)))
    return split, norm


def build_world(cfg: Config) -> World:
    data = load_dataset(cfg.data.name, root=cfg.data.root or None,
                        test_fraction=cfg.data.test_fraction, seed=cfg.run.seed,
                        max_samples=cfg.data.max_samples or None, download=cfg.data.download)
    shards = partition(cfg.fed.partition, data.train_labels.numpy(), cfg.fed.num_clients,
                       seed=cfg.run.seed, alpha=cfg.fed.alpha,
                       shards_per_client=cfg.fed.shards_per_client)
    split, norm = build_split(cfg, data.num_classes)
    return World(cfg, data, shards, split, norm)


class Backend(Protocol):
    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]: ...
    def evaluate(self, global_state: State) -> tuple[float, float]: ...


class LocalBackend:
    """Runs every client's work, the server and evaluation in this process, in order."""

    def __init__(self, world: World) -> None:
        cfg = world.cfg
        self.cfg = cfg
        self.method = METHODS[cfg.train.method]
        self.device = Device(world.split, world.data.train_images, world.data.train_labels,
                             **world.norm)
        self.server = BodyServer(world.split.body, trains=self.method.server_trains, lr=cfg.train.lr)
        self.test = Device(world.split, world.data.test_images, world.data.test_labels, **world.norm)
        self._test_indices = np.arange(len(world.data.test_labels))

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]:
        results = []
        for task in tasks:
            result = self.method.client_round(self.cfg, self.device, task, global_state, self.server)
            result.server_flops = self.server.take_flops(task.client)
            results.append(result)
        return results

    def evaluate(self, global_state: State) -> tuple[float, float]:
        self.test.load(global_state)
        return evaluate(self.test.split,
                        self.test.batches(self._test_indices, self.cfg.train.eval_batch_size))


def client_seed(seed: int, round_: int, client: int) -> int:
    """Independent stream per (run, round, client), the same in every backend."""
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


def sample_clients(cfg: Config, round_: int) -> list[int]:
    rng = np.random.default_rng([cfg.run.seed, round_])
    chosen = rng.choice(cfg.fed.num_clients, size=cfg.fed.clients_per_round, replace=False)
    return sorted(int(c) for c in chosen)


def round_row(round_: int, results: list[ClientResult], accuracy: float, loss: float,
              wall: float) -> dict:
    """One row of rounds.parquet: metrics and measured costs, summed over clients."""
    kept = sum(r.num_kept for r in results)
    row = {"round": round_, "accuracy": accuracy, "loss": loss, "wall_seconds": wall,
           "participants": len(results),
           "train_loss": sum(r.train_loss * r.num_kept for r in results) / max(kept, 1),
           "samples": sum(r.num_samples for r in results), "kept_samples": kept,
           "flops.client": sum(r.client_flops for r in results),
           "flops.server": sum(r.server_flops for r in results)}
    for kind in KINDS:
        row[f"bytes.{kind}"] = sum(r.bytes.get(kind, 0) for r in results)
    row["bytes.down"] = sum(row[f"bytes.{k}"] for k in DOWN)
    row["bytes.up"] = sum(row[f"bytes.{k}"] for k in KINDS if k not in DOWN)
    return row


def run_rounds(world: World, backend: Backend) -> Iterator[tuple[dict, list[ClientResult]]]:
    """The federated loop; yields each round's row and its client results."""
    cfg = world.cfg
    aggregate = AGGREGATIONS[cfg.fed.aggregation]
    global_state = {k: v.clone() for k, v in
                    parameters_by_name(world.split.client(), trainable=True).items()}
    visited: set[int] = set()
    for round_ in range(1, cfg.fed.rounds + 1):
        start = time.perf_counter()
        tasks = [ClientTask(c, round_, world.shards[c], client_seed(cfg.run.seed, round_, c),
                            first_visit=c not in visited)
                 for c in sample_clients(cfg, round_)]
        visited.update(t.client for t in tasks)
        results = sorted(backend.run_clients(tasks, global_state), key=lambda r: r.client)
        global_state = aggregate([r.state for r in results], [r.num_kept for r in results])
        accuracy, loss = backend.evaluate(global_state)
        row = round_row(round_, results, accuracy, loss, time.perf_counter() - start)
        if not math.isfinite(row["train_loss"]):
            log.warning("round %d: training loss is %s", round_, row["train_loss"])
        yield row, results
