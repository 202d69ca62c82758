"""Feasibility: the client footprint is measured, and a split that does not fit fails."""

import pandas as pd
import pytest
import torch
from torch import nn

from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.model.build import build_split
from sfprompt.platform.sim.memory import client_memory_bytes, saved_activation_bytes
from sfprompt.studies.feasibility import Infeasible, check_memory

TINY = {"model.name": "vit_tiny_patch16_224", "model.weights": "random", "model.img_size": 32}


def test_saved_activations_of_a_hand_computed_graph():
    # relu(x W^T + b) with only W trainable keeps x (for W's gradient, 5x4 floats) and
    # the relu output (5x3 floats); W itself is a parameter and left out.
    lin = nn.Linear(4, 3)
    lin.bias.requires_grad_(False)
    x = torch.randn(5, 4)
    assert saved_activation_bytes(lambda: torch.relu(lin(x)), exclude=lin.parameters()) == \
        (5 * 4 + 5 * 3) * 4
    # Views of one tensor share a storage and count once.
    w = torch.randn(6, requires_grad=True)
    assert saved_activation_bytes(lambda: (w.view(2, 3) * w.view(3, 2).t()).sum()) == 6 * 4


def test_parameters_match_a_real_split_and_activations_scale_with_the_batch():
    cfg = replace(Config(), **TINY, **{"split.head_blocks": 2, "split.tail_blocks": 1})
    split, _ = build_split(cfg, num_classes=1000)  # what a run of cfg trains (probe norm too)
    params = list(split.client().parameters())
    measured = client_memory_bytes(cfg)
    assert measured["parameters"] == sum(p.numel() * 4 for p in params)
    assert measured["optimizer"] == 3 * sum(p.numel() * 4 for p in params if p.requires_grad)
    double, triple = (client_memory_bytes(replace(cfg, **{"train.batch_size": k * cfg.train.batch_size}))
                      for k in (2, 3))
    # Affine in the batch: per sample, plus the probe norm's per-feature statistics.
    per_batch = double["activations"] - measured["activations"]
    assert triple["activations"] - double["activations"] == per_batch
    assert 0 <= 2 * measured["activations"] - double["activations"] < 0.001 * per_batch
    deeper = client_memory_bytes(replace(cfg, **{"split.head_blocks": 4}))
    assert deeper["activations"] > measured["activations"]


def test_a_split_too_big_for_the_smallest_client_is_infeasible(tmp_path):
    trace = tmp_path / "fleet.csv"
    rows = [dict(flops_per_s=1e10, uplink_bps=1e7, downlink_bps=1e7, latency_s=0.01,
                 jitter_s=0.0, availability=1.0, memory_bytes=m) for m in (2**34, 2**20)]
    pd.DataFrame(rows).to_csv(trace, index=False)
    cfg = replace(Config(), **TINY, **{"fed.num_clients": 2, "fed.clients_per_round": 2,
                                       "profiles.source": "trace", "profiles.trace": str(trace)})
    need = sum(client_memory_bytes(cfg).values())
    assert 2**20 < need < 2**34
    with pytest.raises(Infeasible, match=r"client 1 \(trace\) may use 1\.0 MiB"):
        check_memory(cfg, 1.0)
    check_memory(cfg, 0.0)  # 0 turns the check off


def test_the_default_fleet_holds_the_default_split():
    check_memory(Config(), 1.0)


def test_under_a_tier_plan_each_client_is_checked_at_its_own_split(tmp_path):
    # A small device and a large one, labelled by tier in the trace; the small one holds
    # the thin split but not 2:2, so 2:2 is feasible given only to the large tier.
    def need(head, tail):
        return sum(client_memory_bytes(replace(Config(), **TINY, **{
            "split.head_blocks": head, "split.tail_blocks": tail})).values())
    thin, thick = need(0, 0), need(2, 2)
    trace = tmp_path / "fleet.csv"
    pd.DataFrame([dict(tier=tier, flops_per_s=1e10, uplink_bps=1e7, downlink_bps=1e7,
                       latency_s=0.01, jitter_s=0.0, availability=1.0, memory_bytes=m)
                  for tier, m in (("big", 2**34), ("small", (thin + thick) // 2))]
                 ).to_csv(trace, index=False)
    base = {**TINY, "fed.num_clients": 2, "fed.clients_per_round": 2,
            "profiles.source": "trace", "profiles.trace": str(trace),
            "split.head_blocks": 0, "split.tail_blocks": 0, "split.plan": "by_tier"}
    check_memory(replace(Config(), **base, **{"split.tiers": "big=2:2"}), 1.0)
    with pytest.raises(Infeasible, match=r"the split 2:2 needs .* client 1 \(small\)"):
        check_memory(replace(Config(), **base, **{"split.tiers": "big=2:2,small=2:2"}), 1.0)
