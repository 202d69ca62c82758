"""Split planning: its seconds are the virtual clock's for the cost model's counts, its
plan the fastest split that fits, its fleet the distinct devices; bad input one line."""

import dataclasses

import pytest

from sfprompt.cli import main
from sfprompt.platform.config.load import load_config, replace
from sfprompt.platform.sim.clock import client_times
from sfprompt.platform.sim.costmodel import client_cost
from sfprompt.platform.sim.memory import client_memory_bytes
from sfprompt.platform.sim.profiles import TIERS, server_profile
from sfprompt.platform.sim.splitplan import fleet_devices, plan_splits

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "train.batch_size=8", "prompt.length=2", "fed.num_clients=7", "fed.clients_per_round=7",
        "profiles.mix=low_phone:0.5,laptop:0.5"]
SPLITS = [(0, 0), (1, 1), (2, 0)]


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def rows(cfg):
    return plan_splits(cfg, SPLITS, samples=20)


def test_the_fleet_is_its_distinct_devices_at_their_tiers_figures(cfg):
    devices = fleet_devices(cfg)
    assert sum(devices.values()) == 7
    assert {d.tier for d in devices} == {"low_phone", "laptop"}
    assert all(d == TIERS[d.tier].profile(d.tier) for d in devices)  # no sigma spread


def test_seconds_are_the_clocks_for_the_cost_models_counts(cfg, rows):
    server = server_profile(cfg.profiles)
    assert len(rows) == len(SPLITS) * 2
    for row in rows:
        split_cfg = replace(cfg, **{"split.head_blocks": row["split.head_blocks"],
                                    "split.tail_blocks": row["split.tail_blocks"]})
        cost = client_cost(split_cfg, 20, first_visit=False)
        device = TIERS[row["tier"]].profile(row["tier"])
        # The clock, without jitter (the plan adds its mean, m x jitter_s) or a queue.
        [time] = client_times([cost], [dataclasses.replace(device, jitter_s=0.0)], server, 0, 1)
        messages = sum(cost.messages.values())
        assert row["sim.comm_seconds"] == pytest.approx(time.comm + messages * device.jitter_s)
        assert row["sim.compute_seconds"] == pytest.approx(time.compute)
        assert row["sim.server_seconds"] == pytest.approx(time.server)
        assert row["sim.round_seconds"] == pytest.approx(
            row["sim.compute_seconds"] + row["sim.comm_seconds"] + row["sim.server_seconds"])
        assert (row["flops.client"], row["bytes.round"]) == (cost.client_flops,
                                                             sum(cost.bytes.values()))
        assert row["memory_bytes"] == sum(client_memory_bytes(split_cfg).values())
        assert row["bytes.frozen_download"] > 0 and "frozen_download" not in cost.bytes


def test_each_device_gets_the_fastest_split_that_fits(cfg, rows):
    for tier in ("low_phone", "laptop"):
        mine = [r for r in rows if r["tier"] == tier]
        assert [(r["split.head_blocks"], r["split.tail_blocks"]) for r in mine] == SPLITS
        [chosen] = [r for r in mine if r["chosen"]]
        assert chosen["sim.round_seconds"] == min(r["sim.round_seconds"] for r in mine)
    # With room for the smallest footprint only on the laptop (16 GiB against 4), the
    # phone is planned nothing and the laptop the fastest split that fits.
    smallest = min(r["memory_bytes"] for r in rows)
    fraction = smallest / TIERS["laptop"].profile("laptop").memory_bytes
    tight = plan_splits(cfg, SPLITS, samples=20, memory_fraction=fraction)
    assert not any(r["chosen"] for r in tight if r["tier"] == "low_phone")
    [chosen] = [r for r in tight if r["chosen"]]
    assert chosen["tier"] == "laptop" and chosen["memory_bytes"] == smallest


@pytest.mark.parametrize("args, says", [
    (["--splits", "1"], "--splits: expected head:tail pairs"),
    (["--splits", "1:x"], "--splits: expected head:tail pairs"),
    (["--splits", ""], "--splits: "),
    (["--memory-fraction", "0"], "--memory-fraction: must be in (0, 1]"),
    (["--splits", "9:9"], "split: head_blocks=9 + tail_blocks=9 does not fit"),
    (["--splits=-1:0"], "split: head_blocks=-1 + tail_blocks=0 does not fit"),
])
def test_bad_plan_input_is_one_line(args, says, capsys):
    assert main(["plan", *args, *TINY]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
