"""A tiny run configuration for the Ray tests (a small random ViT on 8x8 digits), its
rounds through both backends, and the local Ray instance the tests share."""

from pathlib import Path

import pandas as pd
import pytest
import ray
import torch

from sfprompt.actors.backend import RayBackend
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=160", "data.test_fraction=0.05", "fed.num_clients=6",
        "fed.clients_per_round=4", "fed.rounds=2", "fed.partition=iid", "train.batch_size=16",
        "prompt.length=2", "prune.keep=0.5", "profiles.sigma=0.3"]


@pytest.fixture
def tiny() -> list[str]:
    """Dotted overrides of the tiny run (a fresh list: tests may extend it)."""
    return list(TINY)


@pytest.fixture
def rounds_both_ways():
    """`run(cfg) -> (local, ray, backend)`: the rounds of `cfg` (which sets run.threads)
    through the in-process reference and through a fresh RayBackend, closed after."""
    def run(cfg):
        torch.set_num_threads(cfg.run.threads)
        world = build_world(cfg)
        local = pd.DataFrame([row for row, _ in run_rounds(world, LocalBackend(world))])
        world = build_world(cfg)
        backend = RayBackend(world)
        try:
            remote = pd.DataFrame([row for row, _ in run_rounds(world, backend)])
        finally:
            backend.close()
        return local, remote, backend
    return run


HERE = Path(__file__).resolve().parent


@pytest.fixture
def ray_instance():
    """A local Ray instance of 2 CPUs, shared by this folder's tests (a start costs
    seconds on a busy 2-core host): started by the first test that asks for it, left up
    for the next, shut down after the folder's last test (below) or by a test that
    needs a Ray of its own (test_cluster.py, test_gpu.py)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After this folder's last test, shut the shared instance down: tests elsewhere
    start their own Ray (or none), and connect() would join a leftover one."""
    try:
        return (yield)
    finally:
        if ray.is_initialized() and (nextitem is None
                                     or HERE not in Path(nextitem.path).resolve().parents):
            ray.shutdown()
