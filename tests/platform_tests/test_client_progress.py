"""Progress inside a round: every backend reports each client as its work settles."""

import pytest
import torch

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend, on_client_done
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world

TINY = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
        "data.name=digits", "data.max_samples=60", "prompt.length=2", "run.backend=local",
        "fed.num_clients=4", "fed.clients_per_round=4", "fed.rounds=2", "train.batch_size=8"]


@pytest.mark.parametrize("crash", [0.0, 0.5])
def test_the_local_backend_reports_every_client_of_every_round_in_turn(crash):
    torch.set_num_threads(1)
    world = build_world(load_config(None, TINY + [f"faults.client_crash={crash}"]))
    calls = []
    with on_client_done(lambda settled, total: calls.append((settled, total))):
        rows = [row for row, _ in run_rounds(world, LocalBackend(world))]
    ran = [row["participants"] + row["failed"] for row in rows]  # online clients, crashed too
    assert calls == [(i, n) for n in ran for i in range(1, n + 1)]
    assert crash == 0 or sum(row["failed"] for row in rows) > 0
    calls.clear()
    list(run_rounds(world, LocalBackend(world)))
    assert calls == []  # outside the context nobody is called
