"""The cost model against what a real run measures (exactly) and against hand counts."""

import pytest

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.sim.costmodel import client_cost, cost_table

# Dirichlet shards of unequal sizes and a batch size that leaves partial batches, so
# every count depends on the exact batching and on pruning's rounding.
REAL = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
        "data.name=digits", "data.max_samples=30", "prompt.length=2", "fed.num_clients=2",
        "fed.clients_per_round=2", "fed.rounds=1", "fed.alpha=1.0", "run.backend=local",
        "train.batch_size=8", "train.eval_batch_size=16", "prune.keep=0.6", "run.threads=1"]
# Every method, and both directions of the cut compressed (bytes counted as encoded).
CASES = [(m, ()) for m in sorted(METHODS) if m != "sfl"] + [
    ("sfprompt", ("compress.activations=int8", "compress.gradients=fp16")),
    ("sfl", ("compress.activations=bf16", "compress.gradients=int8")),
    # DeiT distilled: a second prefix token and a second classifier (each with its probe norm).
    ("sfprompt", ("model.name=deit_tiny_distilled_patch16_224",)),
    # The local path's own classifier: it travels with the tail and trains on the local path.
    ("sfprompt", ("train.local_classifier=separate",)),
]


@pytest.mark.parametrize("method,extra", CASES)
def test_cost_model_equals_the_measured_accounting_of_a_real_run(method, extra):
    cfg = load_config(None, REAL + [f"train.method={method}", *extra])
    world = build_world(cfg)
    (row, outcomes), = list(run_rounds(world, LocalBackend(world)))
    assert outcomes
    for o in outcomes:
        real = o.result
        dry = client_cost(world.cfg, real.num_samples, world.data.num_classes, first_visit=True)
        assert dry.bytes == real.bytes
        assert dry.messages == real.messages
        assert (dry.client_flops, dry.server_flops) == (real.client_flops, real.server_flops)
        assert dry.num_kept == real.num_kept


def test_later_rounds_cost_the_same_without_the_one_off_frozen_download():
    cfg = load_config(None, REAL + ["train.method=sfprompt"])
    first, later = client_cost(cfg, 13), client_cost(cfg, 13, first_visit=False)
    assert first.bytes.pop("frozen_download") > 0 and first.messages.pop("frozen_download") == 1
    assert (first.bytes, first.messages) == (later.bytes, later.messages)
    assert first.client_flops == later.client_flops


def test_vit_base_at_224_by_hand():
    # ViT-B/16, 224 px: 196 patches + CLS + 10 prompts, D = 768; 64 samples, keep 0.5.
    cfg = load_config(None, ["model.name=vit_base_patch16_224", "model.img_size=224",
                             "prompt.length=10", "prune.keep=0.5", "split.head_blocks=1",
                             "split.tail_blocks=1", "train.batch_size=32"])
    table, = cost_table(cfg, ["sfprompt"], samples=64, num_classes=10)
    d, tokens = 768, 1 + 10 + 196
    assert table["kept_samples"] == 32
    for kind in ("smashed_up", "activations_down", "gradients_up", "gradients_down"):
        assert table[f"bytes.{kind}"] == 32 * tokens * d * 4
    block = 12 * d * d + 13 * d  # qkv, proj, fc1, fc2 weights and biases, two norms
    trainable = 10 * d + block + 2 * d + (d * 10 + 10)  # prompts, tail block, norm, classifier
    trainable += 2 * d  # the probe norm's running mean and variance travel with them
    trainable += (d * 10 + 10) + 2 * d  # the local path's own classifier and probe norm
    assert table["bytes.download"] == table["bytes.upload"] == trainable * 4


def test_cost_command_prints_every_method_with_ratios_to_fl(capsys):
    from sfprompt.cli import main
    assert main(["cost", "--samples", "8", "--methods", "sfprompt,fl", "model.name=vit_tiny_patch16_224",
                 "model.img_size=16", "prompt.length=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vit_tiny_patch16_224 at 16 px, split 1/1, 2 prompts, keep 0.5")
    sfprompt, fl = lines[2].split(), lines[3].split()
    assert (sfprompt[0], sfprompt[1], fl[0], fl[1]) == ("sfprompt", "4", "fl", "8")
    assert fl[-2:] == ["1", "1"] and float(sfprompt[-1]) > 0
    assert main(["cost", "--methods", "sfprompt,nope"]) == 2
