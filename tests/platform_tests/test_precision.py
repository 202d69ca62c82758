"""`run.precision = "bf16"`: autocast compute with fp32 weights; the same FLOPs and
bytes as fp32, other rounding."""

import torch

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world, initial_progress

TINY_CFG = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
            "data.name=digits", "data.max_samples=60", "prompt.length=2", "fed.num_clients=2",
            "fed.clients_per_round=2", "fed.rounds=1", "run.backend=local", "train.batch_size=8"]


def _round(method, precision):
    world = build_world(load_config(None, TINY_CFG + [f"train.method={method}",
                                                      f"run.precision={precision}"]))
    progress = initial_progress(world)
    (row, _), = run_rounds(world, LocalBackend(world), progress)
    return row, progress.global_state


def test_bf16_counts_the_same_and_rounds_differently():
    for method in ("sfprompt", "fl_prompt"):
        fp32, _ = _round(method, "fp32")
        bf16, bf16_state = _round(method, "bf16")
        same = [k for k in fp32 if k.startswith(("flops.", "bytes.", "sim."))]
        assert same and {k: bf16[k] for k in same} == {k: fp32[k] for k in same}
        assert bf16["train_loss"] != fp32["train_loss"]  # autocast really ran
        assert abs(bf16["train_loss"] - fp32["train_loss"]) < 0.01
        # Master weights stay fp32: FedAvg returns the uploads' dtype.
        assert bf16_state and all(t.dtype == torch.float32 for t in bf16_state.values())
