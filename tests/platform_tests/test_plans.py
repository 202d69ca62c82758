"""Split plans (model/plans.py): each client at its own split of one model, tails of
different depths aggregated entry by entry, the server's body at the aggregated
values, and the accounting of each client equal to the cost model at its split."""

import dataclasses

import numpy as np
import pytest
import torch

from sfprompt.platform.config.load import load_config, replace
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.fed.aggregation import AGGREGATIONS, aggregate_held
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.rows import client_rows
from sfprompt.platform.loop.world import build_world, initial_progress
from sfprompt.platform.method.client import ClientTask
from sfprompt.platform.model.plans import (holds, parse_splits, parse_tiers, reference_split,
                                           to_client_name, to_reference_name)
from sfprompt.platform.sim.costmodel import client_cost
from sfprompt.platform.sim.splitplan import client_splits, plan_splits

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=120", "fed.num_clients=4",
        "fed.clients_per_round=4", "fed.rounds=2", "fed.partition=iid", "train.batch_size=16",
        "prompt.length=2", "run.threads=1", "run.backend=local", "profiles.source=mix",
        "profiles.mix=low_phone:0.5,flagship_phone:0.5"]
MIXED = ["split.plan=by_tier", "split.tiers=low_phone=0:0,flagship_phone=2:2"]


def _world(*overrides):
    torch.set_num_threads(1)
    return build_world(load_config(None, TINY + list(overrides)))


def _run(world, capture=None):
    """Rows and client rows of a local run; `capture` collects every round's uploads."""
    backend = LocalBackend(world)
    if capture is not None:
        run = backend.run_clients

        def recording(tasks, global_state):
            results = run(tasks, global_state)
            capture.append(({k: v.clone() for k, v in global_state.items()},
                            {r.client: ({k: v.clone() for k, v in r.state.items()}, r.num_kept)
                             for r in results}))
            return results
        backend.run_clients = recording
    rows, clients = [], []
    for row, outcomes in run_rounds(world, backend):
        rows.append(row)
        clients.extend(client_rows(row, outcomes))
    return rows, clients


def _drop_wall(rows):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def test_names_move_between_a_client_and_the_reference_by_hand():
    # Reference tail 3: a client with 1 tail block trains the reference's tail.blocks.2.
    assert to_client_name("tail.blocks.2.mlp.fc1.weight", 1, 3) == "tail.blocks.0.mlp.fc1.weight"
    assert to_reference_name("tail.blocks.0.mlp.fc1.weight", 1, 3) == "tail.blocks.2.mlp.fc1.weight"
    assert to_reference_name("tail.blocks.1.norm1.bias", 2, 3) == "tail.blocks.2.norm1.bias"
    assert [holds(f"tail.blocks.{i}.x", 1, 3) for i in range(3)] == [False, False, True]
    assert holds("head.prompts", 0, 3) and holds("tail.classifier.linear.weight", 0, 3)
    assert to_client_name("tail.norm.weight", 0, 3) == "tail.norm.weight"
    assert parse_splits("split.candidates", "0:0, 2:1") == [(0, 0), (2, 1)]
    assert parse_tiers("low_phone=0:0,laptop=3:2") == {"low_phone": (0, 0), "laptop": (3, 2)}
    split = load_config(None, MIXED + ["split.head_blocks=1", "split.tail_blocks=1"]).split
    assert reference_split(split) == (0, 2)
    fit = load_config(None, ["split.plan=fit", "split.candidates=1:0,2:2,0:1"]).split
    assert reference_split(fit) == (0, 2)  # the candidates', not the fixed 1:1
    for bad in ("1", "a:b", "1:2:3"):
        with pytest.raises(ConfigError, match=rf"^split.candidates: '{bad}' is not head:tail "
                                              r"\(two integers >= 0\)$"):
            parse_splits("split.candidates", bad)
    with pytest.raises(ConfigError, match=r"^split.candidates: needs at least one head:tail "
                                          r"split, got ' , '$"):
        parse_splits("split.candidates", " , ")
    for bad, says in (("low_phone", "'low_phone' is not tier=head:tail"),
                      ("low_phone=1", "'1' is not head:tail \\(two integers >= 0\\)"),
                      ("a=0:0,a=1:1", "tier 'a' is given twice")):
        with pytest.raises(ConfigError, match=f"^split.tiers: {says}$"):
            parse_tiers(bad)


def test_entries_held_by_some_clients_are_averaged_over_those_alone():
    # Client 0 holds a and b, client 1 only b, with kept samples 1 and 3; c no one.
    states = [{"a": torch.tensor([2.0]), "b": torch.tensor([4.0])}, {"b": torch.tensor([8.0])}]
    global_state = {"a": torch.tensor([0.0]), "b": torch.tensor([0.0]), "c": torch.tensor([5.0])}
    fed = load_config(None, []).fed
    new, memory = aggregate_held(AGGREGATIONS["fedavg"], states, [1, 3], global_state, {}, fed)
    assert new == {"a": torch.tensor([2.0]), "b": torch.tensor([7.0]), "c": torch.tensor([5.0])}
    assert list(new) == ["a", "b", "c"] and memory == {}
    # A server optimizer's memory moves only for the entries someone held.
    fed = dataclasses.replace(fed, server_momentum=0.5, server_lr=1.0)
    old = {"v/a": torch.tensor([1.0]), "v/c": torch.tensor([9.0])}
    new, memory = aggregate_held(AGGREGATIONS["fedavgm"], states, [1, 3], global_state, old, fed)
    # v_a = 0.5 * 1 + (2 - 0) = 2.5, a = 0 + 2.5; v_b = 7, b = 7; c and v/c as they were
    assert new["a"].item() == 2.5 and new["b"].item() == 7.0 and new["c"].item() == 5.0
    assert {k: v.item() for k, v in memory.items()} == {"v/a": 2.5, "v/b": 7.0, "v/c": 9.0}
    with pytest.raises(ValueError, match=r"client states hold \['z'\]"):
        aggregate_held(AGGREGATIONS["fedavg"], [{"z": torch.tensor([1.0])}], [1],
                       global_state, {}, fed)


def test_by_tier_with_every_tier_at_the_fixed_split_equals_fixed_bit_for_bit():
    fixed_uploads, planned_uploads = [], []
    fixed = _run(_world("split.head_blocks=2", "split.tail_blocks=1"), fixed_uploads)
    planned = _run(_world("split.head_blocks=2", "split.tail_blocks=1", "split.plan=by_tier",
                          "split.tiers=low_phone=2:1,flagship_phone=2:1"), planned_uploads)
    assert _drop_wall(fixed[0]) == _drop_wall(planned[0])
    assert fixed[1] == planned[1]
    for (g1, u1), (g2, u2) in zip(fixed_uploads, planned_uploads):
        assert g1.keys() == g2.keys() and all(torch.equal(g1[k], g2[k]) for k in g1)
        for c in u1:
            assert u1[c][0].keys() == u2[c][0].keys()
            assert all(torch.equal(u1[c][0][k], u2[c][0][k]) for k in u1[c][0])


def test_tails_of_different_depths_are_aggregated_entry_by_entry():
    world = _world(*MIXED)
    assert world.splits == [(2, 2), (0, 0), (2, 2), (0, 0)]  # the mix's tiers, by_tier
    uploads = []
    rows, clients = _run(world, uploads)
    assert [(c["split.head_blocks"], c["split.tail_blocks"]) for c in clients] == \
        world.splits * 2
    (g0, u0), (g1, _) = uploads
    deep = [c for c in u0 if world.splits[c] == (2, 2)]
    # A 0-block tail uploads no block; a 2-block tail uploads the reference's two.
    assert not any(k.startswith("tail.blocks.") for c in u0 if c not in deep for k in u0[c][0])
    assert {k for k in u0[deep[0]][0] if k.startswith("tail.blocks.")} == \
        {k for k in g0 if k.startswith("tail.blocks.")}
    for name in g0:
        holders = [c for c in u0 if name in u0[c][0]]
        total = sum(u0[c][1] for c in holders)
        expect = sum(u0[c][0][name].double() * u0[c][1] / total for c in holders)
        assert torch.equal(g1[name], expect.to(g1[name].dtype)), name
    # The downloads differ with the tail and the head: bytes as the cut is.
    first = {c["client"]: c for c in clients if c["round"] == 1}
    assert first[0]["bytes.download"] > first[1]["bytes.download"]
    assert first[0]["bytes.frozen_download"] > first[1]["bytes.frozen_download"]


def test_the_server_runs_a_shallow_clients_body_at_the_aggregated_blocks():
    # Round 2 of client 1 (0:0) runs the reference's two tail blocks in its body: they
    # must be round 1's aggregate. The independent route: a fixed 0:0 world whose
    # blocks are set by hand to that aggregate computes the same upload.
    world = _world(*MIXED)
    uploads = []
    _run(world, uploads)
    g1, u1 = uploads[1]
    fixed = _world("split.head_blocks=0", "split.tail_blocks=0")
    vit_blocks = list(fixed.split.body.blocks)  # all 12 blocks are the body at 0:0
    depth = len(vit_blocks)
    with torch.no_grad():
        for name, value in g1.items():
            if name.startswith("tail.blocks."):
                index, rest = name[len("tail.blocks."):].split(".", 1)
                vit_blocks[depth - 2 + int(index)].get_parameter(rest).copy_(value)
    own = {k: v for k, v in g1.items() if not k.startswith("tail.blocks.")}
    backend = LocalBackend(fixed)
    task = ClientTask(1, 2, fixed.shards[1], _seed(world, 2, 1), first_visit=False)
    result, = backend.run_clients([task], own)
    assert result.state.keys() == u1[1][0].keys()
    assert all(torch.equal(result.state[k], u1[1][0][k]) for k in result.state)


def _seed(world, round_, client):
    from sfprompt.platform.fed.sampling import client_seed
    return client_seed(world.cfg.run.seed, round_, client)


def test_each_clients_accounting_equals_the_cost_model_at_its_split():
    world = _world(*MIXED, "fed.rounds=1")
    _, clients = _run(world)
    for row in clients:
        head, tail = world.splits[row["client"]]
        cfg = replace(world.cfg, **{"split.plan": "fixed", "split.head_blocks": head,
                                    "split.tail_blocks": tail})
        cost = client_cost(cfg, row["samples"], world.data.num_classes)
        assert row["flops.client"] == cost.client_flops
        assert row["flops.server"] == cost.server_flops
        assert {k: v for k, v in row.items() if k.startswith("bytes.") and v} == \
            {f"bytes.{k}": v for k, v in cost.bytes.items() if v}


def test_fit_gives_each_device_the_plan_sfprompt_plan_chooses():
    cfg = load_config(None, TINY + ["split.plan=fit", "split.candidates=0:0,2:2",
                                    "fed.num_clients=6"])
    world = _world("split.plan=fit", "split.candidates=0:0,2:2", "fed.num_clients=6")
    samples = round(float(np.mean([len(s) for s in world.shards])))
    rows = plan_splits(replace(cfg, **{"split.plan": "fixed"}), [(0, 0), (2, 2)], samples)
    chosen = {r["tier"]: (r["split.head_blocks"], r["split.tail_blocks"])
              for r in rows if r["chosen"]}
    assert len(chosen) == 2  # both tiers of the mix, each with its fastest split
    assert world.splits == [chosen[p.tier] for p in world.profiles]
    _, clients = _run(world)
    assert {(c["profile.tier"], c["split.head_blocks"], c["split.tail_blocks"])
            for c in clients} == {(t, *s) for t, s in chosen.items()}
    # Nothing fits a device with (almost) no memory: one line naming the key.
    with pytest.raises(ConfigError, match="split.candidates: no candidate fits"):
        client_splits(replace(cfg, **{"split.memory_fraction": 1e-9}), world.profiles,
                      samples, 10)


def test_a_mixed_run_interrupted_resumes_to_the_uninterrupted_numbers(tmp_path):
    from platform_tests.test_checkpoint import _same_tables, cut_after_round_1

    from sfprompt.results.experiment import resume_experiment, run_experiment
    overrides = TINY + MIXED + [f"run.out_dir={tmp_path}", "fed.rounds=3"]
    reference = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    run_dir = cut_after_round_1(overrides, tmp_path)
    resume_experiment(run_dir)
    _same_tables(run_dir, reference)


def test_initial_state_names_the_reference_tail():
    world = _world(*MIXED)
    names = initial_progress(world).global_state
    assert sum(k.startswith("tail.blocks.0.") for k in names) > 0
    assert not any(k.startswith("tail.blocks.2.") for k in names)
    assert not any(k.startswith("head.blocks.") for k in names)
