"""Evaluation settings: `eval.every` (rounds between evaluations, always the last) and
`eval.max_samples` (a fixed stratified subset of the test set)."""

import math

import numpy as np

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.evaluation import evaluation_indices
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world

TINY_CFG = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
            "data.name=digits", "data.max_samples=100", "prompt.length=2", "fed.num_clients=2",
            "fed.clients_per_round=2", "run.backend=local", "train.batch_size=8"]


def _rows(*extra):
    world = build_world(load_config(None, TINY_CFG + list(extra)))
    return [row for row, _ in run_rounds(world, LocalBackend(world))]


def test_every_n_rounds_and_always_the_last():
    every = _rows("fed.rounds=5", "eval.every=2")
    each = _rows("fed.rounds=5")
    assert [not math.isnan(r["accuracy"]) for r in every] == [False, True, False, True, True]
    assert all(not math.isnan(r["accuracy"]) for r in each)
    for a, b in zip(every, each):  # evaluating fewer rounds changes nothing else
        if not math.isnan(a["accuracy"]):
            assert (a["accuracy"], a["loss"]) == (b["accuracy"], b["loss"])
        assert a["train_loss"] == b["train_loss"] and a["flops.client"] == b["flops.client"]


def test_max_samples_is_a_fixed_stratified_subset():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    cfg = load_config(None, ["eval.max_samples=20"])
    picked = evaluation_indices(cfg, labels)
    assert len(picked) == 20 and len(set(picked)) == 20 and np.all(np.diff(picked) > 0)
    assert np.bincount(labels[picked]).tolist() == [10, 6, 3, 1]  # proportions kept
    assert np.array_equal(picked, evaluation_indices(cfg, labels))  # the same every time
    other = evaluation_indices(load_config(None, ["eval.max_samples=20", "run.seed=1"]), labels)
    assert not np.array_equal(picked, other)
    assert np.array_equal(evaluation_indices(load_config(None, []), labels), np.arange(100))


def test_max_samples_evaluates_that_many():
    rows = _rows("fed.rounds=1", "eval.max_samples=7")
    assert rows[0]["accuracy"] * 7 == round(rows[0]["accuracy"] * 7)
    world = build_world(load_config(None, TINY_CFG + ["eval.max_samples=7"]))
    assert len(LocalBackend(world).evaluator.indices) == 7
