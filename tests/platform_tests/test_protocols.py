"""Round protocols: selection rules by hand, the round loop with a stub backend whose
simulated times are known exactly, and the local backend on a tiny model; the buffered
protocol's stale updates rebased by hand, and its synchronous special case."""

import dataclasses
import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from sfprompt.platform.config.load import load_config, replace
from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.fed.protocols import (PROTOCOLS, buffered, deadline, is_online,
                                             over_commit, over_commit_size, wait_all)
from sfprompt.platform.fed.staleness import STALENESS, rebase
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.rows import client_rows
from sfprompt.platform.loop.world import World, build_world
from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.sim import realtime as network
from sfprompt.platform.sim.profiles import Profile, ServerProfile
from sfprompt.platform.wire.link import DOWN, KINDS
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients, read_rounds


def test_selection_rules_by_hand():
    finish = [4.0, 1.0, 3.0, 2.0, 3.0]
    assert wait_all(FedConfig(), finish) == (["ok"] * 5, 4.0)
    assert deadline(FedConfig(deadline_s=3.0), finish) == (["late", "ok", "ok", "ok", "ok"], 3.0)
    assert deadline(FedConfig(deadline_s=9.0), finish) == (["ok"] * 5, 4.0)
    # K = 3 of 5: 1.0, 2.0, then the first 3.0 (position 2) by the tie rule
    assert over_commit(FedConfig(clients_per_round=3), finish) == \
        (["dropped", "ok", "ok", "ok", "dropped"], 3.0)
    for select in (wait_all, deadline, over_commit):
        assert select(FedConfig(), []) == ([], 0.0)


def test_a_client_that_left_is_dropped_when_it_left():
    finish, gone = [4.0, 1.0, 3.0, 2.0], [False, True, False, False]  # 1 left at 1 s
    assert wait_all(FedConfig(), finish, gone) == (["ok", "dropped", "ok", "ok"], 4.0)
    assert deadline(FedConfig(deadline_s=3.5), finish, gone) == \
        (["late", "dropped", "ok", "ok"], 3.5)
    # K = 2: the first two to *finish* (3 at 2 s, 2 at 3 s), not the one that left
    assert over_commit(FedConfig(clients_per_round=2), finish, gone) == \
        (["dropped", "dropped", "ok", "ok"], 3.0)
    # K = 4 with three left to finish: the round waits for everyone, the leaver too
    assert over_commit(FedConfig(clients_per_round=4), [4.0, 5.0, 3.0, 2.0], gone) == \
        (["ok", "dropped", "ok", "ok"], 5.0)


def test_over_commit_samples_ceil_c_times_k():
    assert over_commit_size(FedConfig(clients_per_round=10, over_commit=1.3)) == 13
    assert over_commit_size(FedConfig(clients_per_round=10, over_commit=1.05)) == 11
    assert over_commit_size(FedConfig(clients_per_round=7, over_commit=1.0)) == 7
    # An unknown name is refused in the registry's words.
    with pytest.raises(ConfigError, match=r"^fed\.protocol: unknown round protocol 'nope' "
                                          r"\(known: buffered, deadline, over_commit, wait_all\)$"):
        PROTOCOLS.check("fed.protocol", "nope")
    # Within 1e-9 of a whole number of clients is float noise, not one more client.
    assert over_commit_size(FedConfig(clients_per_round=10, over_commit=1 + 2e-11)) == 10
    assert over_commit_size(FedConfig(clients_per_round=10, over_commit=1 + 2e-9)) == 11
    assert PROTOCOLS["deadline"].sample_size(FedConfig(clients_per_round=7, over_commit=2)) == 7


def test_availability_draws():
    assert not any(is_online(0, 1, c, 0.0) for c in range(500))
    assert all(is_online(0, 1, c, 1.0) for c in range(500))
    draws = [is_online(0, 1, c, 0.3) for c in range(4000)]
    assert draws == [is_online(0, 1, c, 0.3) for c in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.3, abs=0.03)


# ---------------------------------------------------------------- stub backend


class StubBackend:
    """Client c spends (c + 1) GFLOP and sends nothing, so on a 1 GFLOP/s profile it
    finishes at exactly c + 1 simulated seconds; it uploads a state filled with c, and
    `evaluate` reports the mean of the global state as "accuracy"."""

    overlaps_evaluation = False

    def __init__(self):
        self.calls = []

    def run_clients(self, tasks, global_state):
        self.calls.append([t.client for t in tasks])
        return [ClientResult(t.client, {k: torch.full_like(v, float(t.client))
                                        for k, v in global_state.items()},
                             num_samples=3, num_kept=1, train_loss=0.5, local_loss=0.5,
                             client_flops=int((t.client + 1) * 1e9)) for t in tasks]

    def evaluate(self, global_state):
        accuracy = float(torch.cat([v.flatten() for v in global_state.values()]).mean())
        return lambda: (accuracy, 0.0)


class FakeSplit:
    def __init__(self):
        self.module = torch.nn.Linear(2, 1)
        torch.nn.init.constant_(self.module.weight, -1.0)
        torch.nn.init.constant_(self.module.bias, -1.0)

    def client(self):
        return self.module


def _stub_run(overrides, availability=1.0, num_clients=6):
    cfg = load_config(None, [f"fed.num_clients={num_clients}", "fed.rounds=2", *overrides])
    profiles = [Profile("hand", 1e9, 1e6, 1e6, 0.0, 0.0, availability, 0)] * num_clients
    world = World(cfg, None, [np.arange(3)] * num_clients, FakeSplit(), {}, profiles,
                  ServerProfile("s", 1e12, 1))
    backend = StubBackend()
    return list(run_rounds(world, backend)), backend


def test_deadline_drops_exactly_the_clients_over_it():
    out, _ = _stub_run(["fed.clients_per_round=6", "fed.protocol=deadline", "fed.deadline_s=3"])
    row, outcomes = out[0]
    assert [o.status for o in outcomes] == ["ok"] * 3 + ["late"] * 3  # finish 1..6 s; 3 is on time
    assert (row["participants"], row["late"], row["sim.round_seconds"]) == (3, 3, 3.0)
    assert row["accuracy"] == pytest.approx(1.0)  # FedAvg of states 0, 1, 2
    assert row["flops.client"] == 21e9  # late clients' work was spent, and counted
    assert out[1][0]["sim.elapsed_seconds"] == 6.0


def test_over_commit_keeps_the_first_k_to_finish():
    out, backend = _stub_run(["fed.clients_per_round=3", "fed.protocol=over_commit",
                              "fed.over_commit=2"])
    row, outcomes = out[0]
    assert backend.calls[0] == [0, 1, 2, 3, 4, 5]  # ceil(2 x 3) sampled and run
    assert [o.status for o in outcomes] == ["ok"] * 3 + ["dropped"] * 3
    assert (row["participants"], row["dropped"], row["sampled"]) == (3, 3, 6)
    assert row["sim.round_seconds"] == 3.0 and row["accuracy"] == pytest.approx(1.0)


def test_wait_all_lasts_as_long_as_the_slowest_client_and_time_accumulates():
    out, _ = _stub_run(["fed.clients_per_round=6"])
    assert [row["sim.round_seconds"] for row, _ in out] == [6.0, 6.0]
    assert [row["sim.elapsed_seconds"] for row, _ in out] == [6.0, 12.0]
    row, outcomes = out[0]
    rows = client_rows(row, outcomes)
    assert [r["sim.idle_seconds"] for r in rows] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]


def test_all_offline_round_is_recorded_and_keeps_the_global_state():
    out, backend = _stub_run(["fed.clients_per_round=4"], availability=0.0)
    assert backend.calls == []  # offline clients run nothing
    for row, outcomes in out:
        assert [o.status for o in outcomes] == ["offline"] * 4
        assert (row["participants"], row["offline"], row["sim.round_seconds"]) == (0, 4, 0.0)
        assert row["accuracy"] == -1.0 and math.isnan(row["train_loss"])  # initial state
        assert all(r["profile.availability"] == 0.0 and "sim.finish_seconds" not in r
                   for r in client_rows(row, outcomes))


def test_all_late_round_keeps_the_global_state():
    out, _ = _stub_run(["fed.clients_per_round=2", "fed.protocol=deadline", "fed.deadline_s=0.5"])
    row, _ = out[0]
    assert (row["participants"], row["late"], row["sim.round_seconds"]) == (0, 2, 0.5)
    assert row["accuracy"] == -1.0


# ---------------------------------------------------------------- local backend, tiny ViT

# Four clients whose speeds differ by 2x steps; no jitter so times are exact.
SPEEDS = [4e9, 2e9, 1e9, 0.5e9]


def _tiny_world(*overrides):
    """A fresh world (a run trains its model in place, so one world makes one run's
    numbers; the times of a second run are the same)."""
    cfg = load_config(None, ["model.weights=random", "model.name=vit_tiny_patch16_224",
                             "model.img_size=32", "data.name=digits", "data.max_samples=120",
                             "fed.num_clients=4", "fed.clients_per_round=4", "fed.rounds=1",
                             "fed.partition=iid", "train.batch_size=16", "prompt.length=2",
                             "run.threads=1", *overrides])
    torch.set_num_threads(1)
    world = build_world(cfg)
    world.profiles = [Profile(f"p{i}", s, 2e6, 8e6, 0.02, 0.0, 1.0, 0) for i, s in enumerate(SPEEDS)]
    return world


@pytest.fixture(scope="module")
def tiny_world():
    return _tiny_world()


def _local(world, **dotted):
    world = dataclasses.replace(world, cfg=replace(world.cfg, **dotted))
    return list(run_rounds(world, LocalBackend(world)))


def _sim(out):
    return [(row["sim.round_seconds"], [o.time for o in outcomes]) for row, outcomes in out]


def test_local_times_match_the_counted_work_and_ignore_wall_time(tiny_world, monkeypatch):
    first = _local(tiny_world)
    row, outcomes = first[0]
    for r in client_rows(row, outcomes):  # recompute each finish from the recorded table
        comm = sum(r[f"messages.{k}"] * r["profile.latency_s"] + 8 * r[f"bytes.{k}"]
                   / (r["profile.downlink_bps"] if k in DOWN else r["profile.uplink_bps"])
                   for k in KINDS)
        compute = r["flops.client"] / r["profile.flops_per_s"]
        assert r["sim.comm_seconds"] == pytest.approx(comm)
        assert r["sim.compute_seconds"] == pytest.approx(compute)
        assert r["sim.finish_seconds"] == pytest.approx(compute + comm + r["sim.server_seconds"]
                                                        + r["sim.queue_seconds"])
    assert row["sim.round_seconds"] == max(o.time.finish for o in outcomes)
    ticks = itertools.count(0.0, 1e6)  # a wall clock racing ahead changes nothing simulated
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    second = _local(tiny_world)
    assert _sim(second) == _sim(first)
    assert second[0][0]["wall_seconds"] != first[0][0]["wall_seconds"]


def test_local_deadline_and_over_commit(tiny_world):
    [(_, outcomes)] = _local(tiny_world)
    finish = {o.client: o.time.finish for o in outcomes}
    cut = sorted(finish.values())[1] + 1e-9  # between the 2nd and 3rd fastest
    [(row, outcomes)] = _local(tiny_world, **{"fed.protocol": "deadline", "fed.deadline_s": cut})
    assert {o.client for o in outcomes if o.status == "late"} == {c for c, t in finish.items() if t > cut}
    assert (row["participants"], row["late"], row["sim.round_seconds"]) == (2, 2, cut)
    [(row, outcomes)] = _local(tiny_world, **{"fed.clients_per_round": 2,
                                              "fed.protocol": "over_commit", "fed.over_commit": 2.0})
    fastest = sorted(finish, key=finish.get)[:2]
    assert sorted(o.client for o in outcomes if o.status == "ok") == sorted(fastest)
    assert (row["participants"], row["dropped"], row["sampled"]) == (2, 2, 4)


def test_local_backend_realtime_sleeps_each_messages_emulated_delay(tiny_world, monkeypatch):
    slept = []
    monkeypatch.setattr(network.time, "sleep", slept.append)
    [(_, outcomes)] = _local(tiny_world, **{"network.mode": "realtime", "network.time_scale": 1e-3})
    assert len(slept) == sum(sum(o.result.messages.values()) for o in outcomes)
    # no jitter in these profiles: the sleeps are the clock's comm time, scaled
    assert sum(slept) == pytest.approx(1e-3 * sum(o.time.comm for o in outcomes))


def test_run_directory_records_profiles_status_and_simulated_time(tmp_path):
    trace = tmp_path / "phones.csv"
    pd.DataFrame({"tier": ["a", "b", "c"], "flops_per_s": 1e9, "uplink_bps": 1e6,
                  "downlink_bps": 1e6, "latency_s": 0.01, "jitter_s": 0.0,
                  "availability": 0.0, "memory_bytes": 1}).to_csv(trace, index=False)
    cfg = load_config(None, ["model.weights=random", "model.name=vit_tiny_patch16_224",
                             "model.img_size=32", "data.name=digits", "data.max_samples=60",
                             "fed.num_clients=3", "fed.clients_per_round=2", "fed.rounds=2",
                             "fed.partition=iid", "profiles.source=trace", f"profiles.trace={trace}",
                             f"run.out_dir={tmp_path}", "run.backend=local"])
    run_dir = run_experiment(cfg)
    rounds, clients = read_rounds(run_dir), read_clients(run_dir)
    assert list(rounds["participants"]) == [0, 0] and list(rounds["offline"]) == [2, 2]
    assert list(rounds["sim.round_seconds"]) == [0.0, 0.0]
    assert {"sim.elapsed_seconds", "late", "dropped", "sampled"} <= set(rounds.columns)
    assert set(clients["status"]) == {"offline"} and len(clients) == 4
    assert set(clients["profile.tier"]) <= {"a", "b", "c"}
    assert {f"profile.{f}" for f in ("flops_per_s", "uplink_bps", "downlink_bps", "latency_s",
                                     "jitter_s", "availability", "memory_bytes")} <= set(clients.columns)


# ---------------------------------------------------------------- buffered (FedBuff)


def test_the_first_buffer_size_arrivals_are_aggregated_and_the_rest_keep_training():
    fed = FedConfig(concurrency=4, buffer_size=2)
    # Ties in order of position: client 1 arrives before client 3.
    assert buffered(fed, [3.0, 1.0, 2.0, 1.0]) == (["training", "ok", "training", "ok"], 1.0)
    # A client that leaves takes no place in the buffer, and is dropped when it leaves.
    assert buffered(fed, [3.0, 1.0, 2.0, 1.5], [False, True, False, False]) == \
        (["training", "dropped", "ok", "ok"], 2.0)
    assert buffered(fed, [3.0, 1.0, 2.0, 2.5], [False, False, False, True]) == \
        (["training", "ok", "ok", "training"], 2.0)  # it has not left yet
    # Fewer arrivals than the buffer holds: the round waits for everyone.
    assert buffered(FedConfig(concurrency=4, buffer_size=4), [3.0, 1.0, 2.0],
                    [False, True, False]) == (["ok", "dropped", "ok"], 3.0)
    assert buffered(fed, []) == ([], 0.0)
    # 0 = clients_per_round, for both.
    assert buffered(FedConfig(clients_per_round=3), [2.0, 1.0, 3.0, 4.0]) == \
        (["ok", "ok", "ok", "training"], 3.0)


def test_staleness_weightings_and_rebase_by_hand():
    fed = FedConfig(staleness_exponent=0.5)
    assert [STALENESS["constant"](fed, s) for s in (0, 1, 5)] == [1.0, 1.0, 1.0]
    assert STALENESS["polynomial"](fed, 0) == 1.0
    assert STALENESS["polynomial"](fed, 3) == 0.5  # 1 / sqrt(4)
    assert STALENESS["polynomial"](FedConfig(staleness_exponent=2.0), 1) == 0.25
    # The statistic first: the tensors after it are rebased too.
    state = {"norm.running_var": torch.tensor([0.5]), "w": torch.tensor([3.0, 1.0])}
    base = {"norm.running_var": torch.tensor([2.0]), "w": torch.tensor([1.0, 1.0])}
    now = {"norm.running_var": torch.tensor([4.0]), "w": torch.tensor([10.0, 20.0])}
    out = rebase(state, base, now, 0.25)
    assert out["w"].tolist() == [10.5, 20.0] and out["w"].dtype == torch.float32
    assert out["norm.running_var"].tolist() == [0.5]  # a statistic: as measured
    with pytest.raises(ConfigError, match=r"^fed.staleness: unknown staleness weighting "
                                          r"'linear' \(known: constant, polynomial\)$"):
        load_config(None, ["fed.staleness=linear"])


@pytest.mark.parametrize("staleness, round2, round3", [
    # Initial state -1 everywhere (the stub's model); round 1 aggregates clients 0 and 1:
    # global 0.5. Round 2: client 2 (from version 0, staleness 1) and client 0 (fresh,
    # 0) arrive at 1 s: (0 + (0.5 + w(1) (2 - -1))) / 2. Round 3: client 3 (version 0,
    # staleness 2) and client 1 (version 1, staleness 1) arrive at 1 s.
    ("constant", (0 + 0.5 + 3) / 2, (1.75 + 4 + 1.75 + 0.5) / 2),
    ("polynomial", (0.5 + 3 / math.sqrt(2)) / 2, None),
])
def test_stale_updates_are_rebased_onto_the_global_state(staleness, round2, round3):
    out, backend = _stub_run(["fed.protocol=buffered", "fed.clients_per_round=4", "fed.buffer_size=2",
                              f"fed.staleness={staleness}", "fed.rounds=3"], num_clients=4)
    # Round 1 starts all four; each later round tops them up with the two that arrived.
    assert backend.calls == [[0, 1, 2, 3], [0, 1], [0, 2]]
    rows = [row for row, _ in out]
    assert [r["accuracy"] for r in rows[:2]] == pytest.approx([0.5, round2])
    if round3 is not None:
        assert rows[2]["accuracy"] == pytest.approx(round3)
    assert [r["sim.round_seconds"] for r in rows] == [2.0, 1.0, 1.0]
    assert [r["sim.elapsed_seconds"] for r in rows] == [2.0, 3.0, 4.0]
    assert [(r["staleness.mean"], r["staleness.max"]) for r in rows] == \
        [(0.0, 0), (0.5, 1), (1.5, 2)]
    # Only the arrivals are the round's clients; what they cost is counted when they arrive.
    assert [[o.client for o in outcomes] for _, outcomes in out] == [[0, 1], [0, 2], [1, 3]]
    assert [r["flops.client"] for r in rows] == [3e9, 4e9, 6e9]
    row, outcomes = out[1]
    by_client = {r["client"]: r for r in client_rows(row, outcomes)}
    assert (by_client[2]["staleness"], by_client[2]["sim.start_seconds"],
            by_client[2]["sim.finish_seconds"], by_client[2]["sim.idle_seconds"]) == (1, -2.0, 3.0, 0.0)
    assert (by_client[0]["staleness"], by_client[0]["sim.start_seconds"]) == (0, 0.0)
    # An arrival's upload is let go once aggregated; those still training keep theirs.
    assert all(o.result.state == {} for _, outcomes in out for o in outcomes)


def test_equal_concurrency_and_buffer_make_the_synchronous_round():
    common = ("fed.clients_per_round=2", "fed.rounds=3")
    sync, fedbuff = [list(run_rounds(w, LocalBackend(w))) for w in (
        _tiny_world(*common),
        _tiny_world(*common, "fed.protocol=buffered", "fed.staleness=polynomial"))]
    assert [[o.client for o in outcomes] for _, outcomes in sync] == \
        [[o.client for o in outcomes] for _, outcomes in fedbuff]
    frame = [pd.DataFrame([row for row, _ in run]).drop(columns="wall_seconds")
             for run in (sync, fedbuff)]
    pd.testing.assert_frame_equal(frame[1], frame[0], check_exact=True)
    for (_, a), (_, b) in zip(sync, fedbuff):
        for x, y in zip(a, b):
            assert x.result.state.keys() == y.result.state.keys()
            assert all(torch.equal(x.result.state[k], y.result.state[k]) for k in x.result.state)
    assert (frame[0]["staleness.max"] == 0).all()
