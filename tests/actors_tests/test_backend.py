"""The Ray backend against the in-process reference, on one local Ray instance (2 CPUs)."""

import time
from collections import deque

import numpy as np
import pandas as pd
import pytest
import ray
import torch

from sfprompt.actors.backend import RayBackend, make_backend
from sfprompt.actors.cluster import (actor_threads, body_placement, client_pool, pool_shape,
                                     server_options)
from sfprompt.actors.clients import get_within, next_call
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import RayConfig
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.loop.backend import LocalBackend, on_client_done
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import build_world, initial_progress
from sfprompt.platform.method.client import ClientTask
from sfprompt.platform.method.registry import METHODS
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients, read_rounds


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns
            if c in ("round", "accuracy", "loss", "train_loss", "participants", "kept_samples")
            or c.split(".")[0] in ("bytes", "flops", "sim")]


def test_ray_runs_equal_the_local_reference_bit_for_bit(ray_instance, tmp_path, tiny):
    backends, actors, worlds = [], [], []

    def factory(world):
        worlds.append(world)
        backends.append(make_backend(world))
        if isinstance(backends[-1], RayBackend):
            actors.extend(backends[-1].pool.actors + [backends[-1].server] * (
                backends[-1].server is not None))
        return backends[-1]

    dirs, settled = {}, {}
    # With the body on a server actor: two client actors sharing the one CPU it leaves,
    # so that server requests from different clients really interleave (four rounds of
    # it: as many as two runs of the tiny run's two), a call per client. With the body
    # in the client actors, one actor computes its own clients' body steps, and a round's
    # 4 clients go to it in calls of 2, 1 and 1 (two calls out at once: next_call).
    for name, backend, body, pool in (("local", "local", "auto", 2),
                                      ("ray1", "ray", "server", 2),
                                      ("ray2", "ray", "clients", 1)):
        cfg = load_config(None, tiny + [f"run.out_dir={tmp_path}", f"run.run_id={name}",
                                        f"run.backend={backend}",
                                        f"ray.num_client_actors={pool}", "run.threads=1",
                                        f"ray.body={body}", "fed.rounds=4"])
        with on_client_done(lambda *call, name=name: settled.setdefault(name, []).append(call)):
            dirs[name] = run_experiment(cfg, make_backend=factory)
    local, reference = read_rounds(dirs["local"]), read_clients(dirs["local"])
    columns, client_columns = metric_columns(local), metric_columns(reference)
    assert {"accuracy", "train_loss", "bytes.smashed_up", "flops.server",
            "sim.round_seconds"} <= set(columns)
    assert (local["flops.server"] > 0).all() and (local["bytes.gradients_down"] > 0).all()
    for name in ("ray1", "ray2"):
        pd.testing.assert_frame_equal(read_rounds(dirs[name])[columns], local[columns],
                                      check_exact=True)
        pd.testing.assert_frame_equal(read_clients(dirs[name])[client_columns],
                                      reference[client_columns], check_exact=True)

    # Progress inside a round: every client reported as it settled, on every backend.
    per_round = read_rounds(dirs["local"])["participants"].tolist()
    assert all(settled[name] == [(i, n) for n in per_round for i in range(1, n + 1)]
               for name in dirs)
    assert isinstance(backends[0], LocalBackend)
    on_server, in_clients = backends[1], backends[2]
    assert isinstance(on_server, RayBackend) and "node" in on_server.server_placement
    assert in_clients.server_placement == {"body": "clients", "device": "cpu"}
    # With the body in the client actors, the first of them evaluates and the
    # coordinator keeps no body; with it on the server, the coordinator evaluates.
    assert in_clients._evaluate is None and worlds[2].split.body is None
    assert on_server._evaluate is not None and worlds[1].split.body is not None
    # Where the time went, summed over the rounds: each part was measured (wall time, so
    # only that it was recorded is checked, not how the parts compare).
    seconds = on_server.seconds
    parts = ("client_round", "server_wait", "server_busy")
    assert all(seconds[k] > 0 for k in parts), dict(seconds)
    assert in_clients.seconds["client_round"] > 0 and in_clients.seconds["server_wait"] == 0
    # run_experiment closed the backends: their actors are gone, the fixture's Ray is not.
    assert len(local) == 4 and len(actors) == 4 and ray.is_initialized()
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.placement.remote(), timeout=30)


@pytest.mark.parametrize("method", ["fl"])
def test_other_methods_equal_the_local_reference(ray_instance, tiny, rounds_both_ways, method):
    # fl has the whole model on the client and no server actor at all. (sfl, whose body
    # trains on the server, is compared with the local reference by the resume test in
    # test_faults.py, which restores that body into a new server actor.)
    cfg = load_config(None, tiny + [f"train.method={method}", "run.threads=1", "fed.rounds=1",
                                    "fed.clients_per_round=3"])
    local, remote, backend = rounds_both_ways(cfg)
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"),
                                  local.drop(columns="wall_seconds"), check_exact=True)
    assert (remote["flops.server"] > 0).all() == (method == "sfl")
    assert (backend.server_placement is None) == (method == "fl")


def test_buffered_rounds_equal_the_local_reference(ray_instance, tiny, rounds_both_ways):
    # Clients still training carry their uploads across rounds in the coordinator, and
    # their stale updates are rebased there: the actors see only ordinary client rounds.
    cfg = load_config(None, tiny + ["run.threads=1", "fed.rounds=3", "fed.protocol=buffered",
                                    "fed.concurrency=3", "fed.buffer_size=1",
                                    "fed.staleness=polynomial"])
    local, remote, _ = rounds_both_ways(cfg)
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"),
                                  local.drop(columns="wall_seconds"), check_exact=True)
    assert local["staleness.max"].max() >= 1


def test_bf16_evaluation_availability_and_sfprompt_options_equal_the_local_reference(
        ray_instance, tiny, rounds_both_ways):
    # Autocast runs in the client and server actors as in the reference process, and
    # the evaluation subset and schedule and who is online when are the coordinator's;
    # so are the pruned subsets kept between rounds (prune.once), and the local path's
    # own classifier travels with the tail.
    # Half the tiny run's training samples (bf16 is slow on CPUs): each client still
    # trains one batch. A 20 s "day" makes clients leave during rounds.
    cfg = load_config(None, tiny + ["run.precision=bf16", "run.threads=1", "fed.rounds=2",
                                    "eval.every=2", "eval.max_samples=9",
                                    "data.max_samples=80", "availability.model=diurnal",
                                    "availability.period_s=20", "prune.once=true",
                                    "train.local_classifier=separate",
                                    "train.local_lr_scale=0.5"])
    local, remote, _ = rounds_both_ways(cfg)
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"),
                                  local.drop(columns="wall_seconds"), check_exact=True)
    assert local["accuracy"].isna().tolist() == [True, False]
    assert local["dropped"].sum() > 0 and local["participants"].sum() > 0
    assert (local["accuracy"].iloc[-1] * 9) % 1 == 0


def test_trained_body_is_fetched_every_round_even_without_evaluation(ray_instance, tiny):
    # sfl trains the body on the server: the state a checkpoint saves after round 1
    # must be round 1's, though eval.every=2 skips that round's evaluation.
    cfg = load_config(None, tiny + ["train.method=sfl", "run.threads=1", "fed.rounds=2",
                                    "eval.every=2", "fed.clients_per_round=2"])
    torch.set_num_threads(1)
    saved = {}
    for kind in ("local", "ray"):
        world = build_world(cfg)
        backend = LocalBackend(world) if kind == "local" else RayBackend(world)
        try:
            progress = initial_progress(world)
            next(run_rounds(world, backend, progress))  # round 1
            saved[kind] = progress.server["body"]
        finally:
            backend.close()
    untrained = build_world(cfg).split.body.state_dict()
    assert saved["ray"].keys() == saved["local"].keys()
    assert all(torch.equal(saved["ray"][k], saved["local"][k]) for k in saved["local"])
    assert any(not torch.equal(saved["ray"][k], untrained[k]) for k in untrained)


def _yields(world, backend, on_row=lambda row: None):
    """Per yielded row: the row, the rounds the backend had trained by then, and the
    caller's progress then (round, global state, visited clients); `on_row(row)` runs
    after each."""
    trained = []
    run_clients = backend.run_clients
    backend.run_clients = lambda tasks, state: (trained.append(tasks[0].round),
                                                run_clients(tasks, state))[1]
    progress = initial_progress(world)
    out = []
    for row, _ in run_rounds(world, backend, progress):
        out.append((row, max(trained), progress.round, dict(progress.global_state),
                    set(progress.visited)))
        on_row(row)
    return out


@pytest.mark.parametrize("worker", ["thread", "actor", "inline"])
def test_evaluation_overlaps_the_next_round_and_progress_is_the_yielded_rounds(
        ray_instance, tiny, worker):
    # Off the critical path (a thread, an actor) the loop trains round r+1 while round
    # r is evaluated, yields round r after, and the caller's progress (what it
    # checkpoints) is round r's; inline, it evaluates between rounds. The evaluation
    # actor is killed after round 1 (round 2 is being evaluated or about to be): Ray
    # restarts it and no number changes.
    cfg = load_config(None, tiny + ["run.threads=1", "fed.rounds=3", "fed.num_clients=8",
                                    "fed.clients_per_round=2", f"eval.worker={worker}"])
    overlap = worker != "inline"

    def kill_evaluator(row):
        if worker == "actor" and row["round"] == 1:
            ray.kill(backend.evaluator, no_restart=False)

    torch.set_num_threads(1)
    world = build_world(cfg)
    local = _yields(world, LocalBackend(world))
    world = build_world(cfg)
    backend = RayBackend(world)
    try:
        assert backend.overlaps_evaluation == overlap
        assert (backend.evaluator is not None) == (worker == "actor")
        remote = _yields(world, backend, kill_evaluator)
    finally:
        backend.close()
    assert [t for _, t, *_ in local] == [1, 2, 3]  # the reference yields as it goes
    assert [t for _, t, *_ in remote] == ([2, 3, 3] if overlap else [1, 2, 3])
    for (row, _, done, state, visited), (ref, _, ref_done, ref_state, ref_visited) in zip(
            remote, local):
        assert {k: v for k, v in row.items() if k != "wall_seconds"} == \
            {k: v for k, v in ref.items() if k != "wall_seconds"}
        assert row["accuracy"] == ref["accuracy"] and row["loss"] == ref["loss"]
        assert done == ref_done == row["round"] and visited == ref_visited
        assert all(torch.equal(state[k], ref_state[k]) for k in ref_state)
    assert len({frozenset(v) for *_, v in local}) > 1  # visited grows: a real check


def _tasks(*crashes: bool) -> deque:
    return deque(ClientTask(c, 1, np.arange(2), c, first_visit=True, crash=crash)
                 for c, crash in enumerate(crashes))


def test_calls_take_their_share_of_what_is_left_and_a_crash_travels_alone():
    queue = _tasks(*[False] * 20)
    sizes = []
    while queue:
        sizes.append(len(next_call(queue, 4, 3)))  # 4 calls out, at most 3 clients each
    # ceil(left / 4), at most 3: 3 while more than 8 are left, then 2, 2, 1, 1, 1, 1.
    assert sizes == [3, 3, 3, 3, 2, 2, 1, 1, 1, 1]
    queue = _tasks(False, False, True, False, False, False)
    calls = [[t.client for t in next_call(queue, 1, 8)] for _ in range(3)]
    assert calls == [[0, 1], [2], [3, 4, 5]] and not queue
    assert [t.client for t in next_call(_tasks(False, False), 2, 1)] == [0]  # 1: one each


def test_resources_of_server_and_pool(ray_instance):
    assert server_options(RayConfig()) == {"num_cpus": 1}  # no GPU on this instance
    with pytest.raises(ConfigError, match=r"^ray\.server_resource: no node has resource 'tpu9'"):
        server_options(RayConfig(server_resource="tpu9"))
    deadline = time.monotonic() + 30  # actors killed by earlier tests release their CPUs
    while ray.available_resources().get("CPU", 0.0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources()["CPU"] == 2
    assert pool_shape(RayConfig(), 2, 1) == (1, 1.0)
    assert pool_shape(RayConfig(), 2, 0) == (2, 1.0)
    assert pool_shape(RayConfig(num_client_actors=4), 2, 1) == (4, 0.25)  # 4 share 1 free CPU
    assert pool_shape(RayConfig(num_client_actors=1), 2, 1) == (1, 1.0)


def test_auto_body_placement_keeps_a_server_actor_only_where_one_is_needed(
        ray_instance, tiny, monkeypatch):
    def placement(*items: str, method: str = "sfprompt") -> str:
        return body_placement(load_config(None, tiny + list(items)), METHODS[method])

    assert placement() == "clients"  # a frozen body, CPUs only
    assert placement(method="sfl") == "server"  # one body that trains
    assert placement("faults.server_crash_round=1") == "server"
    assert placement("ray.server_resource=server_gpu") == "server"
    assert placement("ray.body=server") == "server"
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    assert placement() == "server"  # the body runs on the GPU
    assert placement("ray.body=clients") == "clients"


def test_where_the_body_is_changes_neither_the_pool_nor_its_threads(tiny):
    # Thread counts decide float results (run.threads = 0 here): the body's place must not.
    # This machine's 2 CPUs and threads (a split method: 1 client actor, both threads),
    # and a 16-core node.
    for cpus, threads, shape in ((2.0, 2, (1, 1.0, 2)), (16.0, 16, (15, 1.0, 1))):
        shapes = {body: client_pool(load_config(None, tiny + [f"ray.body={body}"]),
                                    METHODS["sfprompt"], cpus, threads)
                  for body in ("server", "clients", "auto")}
        assert shapes["server"] == shapes["clients"] == shapes["auto"] == shape
    # fl never has a server: its pool has that CPU too.
    assert client_pool(load_config(None, tiny + ["train.method=fl"]), METHODS["fl"],
                       2.0, 2) == (2, 1.0, 1)


def test_actor_threads_share_the_node_unless_set():
    assert actor_threads(0, 1, 2) == 2  # this machine: one client actor keeps both cores
    assert actor_threads(0, 15, 16) == 1  # a 16-core node: no 15 x 16 oversubscription
    assert actor_threads(0, 4, 16) == 4
    assert actor_threads(0, 8, 2) == 1  # at least one each
    assert actor_threads(3, 15, 16) == 3  # run.threads wins: floats equal the local run's


def test_remote_calls_time_out_with_a_one_line_error(ray_instance):
    @ray.remote
    def slow():
        time.sleep(30)

    ref = slow.remote()
    with pytest.raises(SfpromptError,
                       match=r"^ray\.timeout_s: the test call took longer than 0.2 s$"):
        get_within(ref, 0.2, "the test call")
    ray.cancel(ref, force=True)


def test_ray_backend_needs_the_factory_from_actors(tmp_path, tiny):
    cfg = load_config(None, tiny + [f"run.out_dir={tmp_path}"])
    assert cfg.run.backend == "ray"  # the default
    with pytest.raises(ConfigError, match=r"^run\.backend: 'ray' needs make_backend="):
        run_experiment(cfg)
    assert not any(tmp_path.iterdir())  # refused before a run directory exists


@pytest.mark.parametrize("body, plan", [
    ("server", ["split.plan=by_tier", "split.tiers=low_phone=0:0,flagship_phone=2:2"]),
    ("clients", ["split.plan=fit", "split.candidates=1:0,0:2"])])
def test_split_plans_equal_the_local_reference(ray_instance, tiny, rounds_both_ways, body,
                                               plan):
    # Each client at its tier's (or its device's fitted) split: the actors cut the same
    # model per split, and the server actor (or the body in the client actors) runs
    # each client's body at the round's aggregated blocks.
    cfg = load_config(None, tiny + ["run.threads=1", f"ray.body={body}",
                                    "profiles.source=mix",
                                    "profiles.mix=low_phone:0.5,flagship_phone:0.5", *plan])
    local, remote, backend = rounds_both_ways(cfg)
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"),
                                  local.drop(columns="wall_seconds"), check_exact=True)
    assert (backend.server_placement.get("body") == "clients") == (body == "clients")
