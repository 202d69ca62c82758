"""FLOPs counted once per distinct computation (wire.flops.Flops) equal FLOPs counted
at every step: for every method, several splits, a last partial batch, batch size 1."""

import pytest

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world
from sfprompt.platform.method.registry import METHODS

TINY_CFG = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
            "data.name=digits", "data.max_samples=40", "prompt.length=2", "fed.num_clients=3",
            "fed.clients_per_round=2", "fed.rounds=1", "run.backend=local",
            "fed.partition=iid", "train.eval_batch_size=7"]


def _flops_by_client(world, backend) -> list[tuple[int, int, int]]:
    # FLOPs depend on shapes, not values: a second pass over the same (trained) world
    # must count the same.
    return [(o.client, o.result.client_flops, o.result.server_flops)
            for _, outcomes in run_rounds(world, backend) for o in outcomes]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("split,batch", [((1, 1), 4), ((0, 0), 1), ((2, 1), 3)])
def test_cached_flops_equal_counting_every_step(method, split, batch):
    # 32 training digits over 3 clients: 10 or 11 each, so batches of 3 and 4 end partial.
    # Batch size 1 gains nothing from more samples: 20 digits, a step per sample.
    cfg = load_config(None, TINY_CFG + [f"train.method={method}", f"train.batch_size={batch}",
                                        f"split.head_blocks={split[0]}",
                                        f"split.tail_blocks={split[1]}"]
                      + (["data.max_samples=20"] if batch == 1 else []))
    world = build_world(cfg)
    backend = LocalBackend(world)
    cached = _flops_by_client(world, backend)
    assert all(c > 0 for _, c, _ in cached)
    assert backend.workers.worker.flop_cache  # the cache was used, so the comparison means something
    backend.workers.worker.flop_cache = backend.server.flops.cache = None
    assert cached == _flops_by_client(world, backend)
