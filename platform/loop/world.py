"""The world of a run: what a config determines before any training.

Data, shards, the split model, client profiles and the server's, built the same way
in every process from the config and its seed. A pooled method (centralized) sees one
client holding all the training data (`world_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.data.datasets import ImageData, load_dataset
from sfprompt.platform.data.partition import partition
from sfprompt.platform.loop.progress import Progress
from sfprompt.platform.method.client import client_state
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.model.build import build_split
from sfprompt.platform.model.split import SplitModel
from sfprompt.platform.sim.availability import Schedule, make_schedule
from sfprompt.platform.sim.splitplan import client_splits
from sfprompt.platform.sim.profiles import Profile, ServerProfile, make_profiles, server_profile


@dataclass
class World:
    """What a config determines before any training: data, shards, the split model."""

    cfg: Config
    data: ImageData
    shards: list[np.ndarray]
    split: SplitModel
    norm: dict  # img_size, mean, std for to_model_input
    profiles: list[Profile]  # one per registered client
    server: ServerProfile
    availability: Schedule | None = None  # None: per_round (sim/availability.py)
    # Each client's (head_blocks, tail_blocks) under split.plan (model/plans.py).
    splits: list[tuple[int, int]] | None = None

    def split_of(self, client: int) -> tuple[int, int] | None:
        """What a client's task names as its split: None under the fixed plan, where
        every client holds the run's split itself."""
        return None if self.cfg.split.plan == "fixed" else self.held_split(client)

    def held_split(self, client: int) -> tuple[int, int]:
        """The (head_blocks, tail_blocks) a client holds."""
        if self.splits is None:
            return self.cfg.split.head_blocks, self.cfg.split.tail_blocks
        return self.splits[client]


def build_world(cfg: Config) -> World:
    cfg = world_config(cfg)  # a pooled method (centralized) sees one client with all data
    # First, being the cheapest: a bad trace file fails before data or a model is loaded.
    profiles = make_profiles(cfg.profiles, cfg.fed.num_clients, cfg.run.seed)
    availability = make_schedule(cfg.availability, profiles, cfg.run.seed)
    data = load_dataset(cfg.data.name, root=cfg.data.root or None,
                        test_fraction=cfg.data.test_fraction, seed=cfg.run.seed,
                        max_samples=cfg.data.max_samples or None, download=cfg.data.download)
    shards = partition(cfg.fed.partition, data.train_labels.numpy(), cfg.fed.num_clients,
                       seed=cfg.run.seed, alpha=cfg.fed.alpha,
                       shards_per_client=cfg.fed.shards_per_client,
                       min_samples=cfg.fed.min_samples)
    split, norm = build_split(cfg, data.num_classes)
    # A fit plan costs each candidate split once, at the mean shard's size.
    splits = client_splits(cfg, profiles, round(float(np.mean([len(s) for s in shards]))),
                           data.num_classes)
    return World(cfg, data, shards, split, norm, profiles, server_profile(cfg.profiles),
                 availability, splits)


def initial_progress(world: World) -> Progress:
    """The loop's state before round 1: the model's own trainable state as global state."""
    return Progress({k: v.clone() for k, v in client_state(world.split.client()).items()})


def world_config(cfg: Config) -> Config:
    """The config the world is built from: a pooled method sees one client holding the
    whole training set (the partition of one client is everything) in every round."""
    if not METHODS[cfg.train.method].pooled:
        return cfg
    return replace(cfg, **{"fed.num_clients": 1, "fed.clients_per_round": 1,
                           "fed.partition": "iid", "fed.protocol": "wait_all"})
