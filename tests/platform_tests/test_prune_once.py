"""`prune.once`: a client scores its samples in its first round only and trains on that
subset in its later rounds, without scoring; checked against pruning-free training on
the same subset, the cost model and an interrupted run's resume."""

import dataclasses

import numpy as np
import torch
from platform_tests.test_checkpoint import TINY, _same_tables, cut_after_round_1
from platform_tests.test_costmodel import REAL

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world
from sfprompt.platform.method.client import ClientTask, ClientWorker
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.method.sfprompt import sfprompt_round
from sfprompt.platform.model.build import build_split
from sfprompt.results.checkpoint import load_checkpoint
from sfprompt.results.experiment import resume_experiment, run_experiment

SMALL = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
         "data.name=digits", "prompt.length=2", "train.batch_size=4", "prune.keep=0.5"]


def _round(extra, worker, task, state, server):
    return sfprompt_round(load_config(None, SMALL + extra), worker, task, state, server)


def test_a_later_round_trains_on_the_first_rounds_subset_without_scoring():
    split, norm = build_split(load_config(None, SMALL), num_classes=5)
    gen = torch.Generator().manual_seed(4)
    worker = ClientWorker(split, torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8,
                                               generator=gen),
                          torch.randint(0, 5, (12,), generator=gen), **norm)
    server = BodyServer(split.body)
    state = {k: v.clone() for k, v in worker.state().items()}
    task = ClientTask(client=0, round=1, indices=np.arange(12), seed=3, first_visit=True)
    first = _round(["prune.once=true"], worker, task, state, server)
    every = _round([], worker, task, state, server)
    # The first round is every round's: same subset, same arithmetic, same counts.
    assert every.kept is None and len(first.kept) == first.num_kept == 6
    assert all(torch.equal(first.state[k], every.state[k]) for k in state)
    assert first.client_flops == every.client_flops
    later_task = dataclasses.replace(task, round=2, seed=9, first_visit=False, kept=first.kept)
    later = _round(["prune.once=true"], worker, later_task, state, server)
    # Later: training on that subset as if it were the whole shard and nothing pruned.
    alone = _round(["prune.keep=1"], worker, dataclasses.replace(
        later_task, indices=first.kept, kept=None), state, server)
    assert np.array_equal(later.kept, first.kept) and later.num_kept == alone.num_kept
    assert all(torch.equal(later.state[k], alone.state[k]) for k in state)
    assert later.client_flops == alone.client_flops < first.client_flops


def test_the_cost_model_equals_a_later_round_and_a_resume_continues_the_subsets(tmp_path):
    from sfprompt.platform.sim.costmodel import client_cost
    cfg = load_config(None, REAL + ["fed.rounds=2", "prune.once=true"])
    world = build_world(cfg)
    rounds = list(run_rounds(world, LocalBackend(world)))
    first = {o.client: o.result for o in rounds[0][1]}
    for o in rounds[1][1]:
        real = o.result
        assert np.array_equal(real.kept, first[o.client].kept)
        dry = client_cost(world.cfg, real.num_samples, world.data.num_classes, first_visit=False)
        assert (dry.bytes, dry.messages) == (real.bytes, real.messages)
        assert (dry.client_flops, dry.server_flops) == (real.client_flops, real.server_flops)
        assert dry.num_kept == real.num_kept

    overrides = TINY + [f"run.out_dir={tmp_path}", "prune.once=true", "fed.clients_per_round=3"]
    reference = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    run_dir = cut_after_round_1(overrides, tmp_path)
    saved = load_checkpoint(run_dir)[0].kept
    assert saved and all(k.dtype == np.int64 and len(k) for k in saved.values())
    resume_experiment(run_dir)
    _same_tables(run_dir, reference)
    final, whole = load_checkpoint(run_dir)[0].kept, load_checkpoint(reference)[0].kept
    assert final.keys() == whole.keys() and all(np.array_equal(final[c], whole[c]) for c in whole)
