"""Faults on the Ray backend, with real processes dying: client actors exit or are
killed, the server actor crashes or is killed; runs complete, record what happened,
and (where nothing was lost for good) equal the local reference number for number."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import ray

from sfprompt.actors.backend import RayBackend, make_backend
from sfprompt.platform.config.load import load_config
from sfprompt.platform.fed.sampling import sample_clients
from sfprompt.platform.sim.faults import client_crashes
from sfprompt.results.experiment import resume_experiment, run_experiment
from sfprompt.results.tables import read_clients, read_rounds

# Not results: what differs between the runs by construction (the local reference of
# a config is run once per module, in its own folder, for every eval.worker).
NOT_COMPARED = ("wall_seconds", "run_id", "run.run_id", "run.backend", "run.out_dir",
                "eval.worker")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """`reference(overrides) -> run dir`: the local reference run of `overrides`, run once
    per module (the local backend evaluates inline whatever eval.worker says, so one
    reference serves every worker)."""
    runs = {}

    def reference(overrides):
        key = tuple(overrides)
        if key not in runs:
            out = tmp_path_factory.mktemp("local")
            cfg = load_config(None, ["ray.num_client_actors=2", *overrides, f"run.out_dir={out}",
                                     "run.run_id=local", "run.backend=local", "run.threads=1"])
            runs[key] = run_experiment(cfg)
        return runs[key]
    return reference


def _runs(tmp_path, overrides, on_ray_round=None, worker="inline", reference=None):
    """The ray run of `overrides` and, when `reference` (the fixture) is given, its local
    reference; the ray backend's pids (and replaced client actors) after each round;
    `on_ray_round(backend, row)` runs after each ray round. Evaluation is inline unless
    `worker` says otherwise (off the critical path, round r+1 has already run when round
    r arrives, and a fault injected there would land a round late)."""
    dirs, pids, backends = {}, [], []

    def factory(world):
        backends.append(make_backend(world))
        return backends[-1]

    def after(row):
        backend = backends[-1]
        pids.append({"server": None if backend.server is None  # body in the client actors
                     else ray.get(backend.server.pid.remote(), timeout=60),
                     "clients": ray.get([a.pid.remote() for a in backend.pool.actors],
                                        timeout=60),
                     "replaced": backend.pool.replaced})
        if on_ray_round is not None:
            on_ray_round(backend, row)

    if reference is not None:
        dirs["local"] = reference(overrides)
    cfg = load_config(None, ["ray.num_client_actors=2", *overrides, f"run.out_dir={tmp_path}",
                             "run.run_id=ray", "run.backend=ray", "run.threads=1",
                             f"eval.worker={worker}"])
    dirs["ray"] = run_experiment(cfg, make_backend=factory, on_round=after)
    assert len(backends) == 1 and isinstance(backends[0], RayBackend)
    return dirs, pids


def _assert_same(dirs):
    for read in (read_rounds, read_clients):
        local, remote = read(dirs["local"]), read(dirs["ray"])
        columns = [c for c in local.columns if c not in NOT_COMPARED]
        pd.testing.assert_frame_equal(remote[columns], local[columns], check_exact=True)


@pytest.mark.parametrize("worker", ["inline", "thread"])
def test_injected_client_and_server_crashes_kill_processes_and_change_no_number(
        ray_instance, references, tmp_path, tiny, worker):
    overrides = tiny + ["faults.client_crash=0.3", "faults.server_crash_round=2",
                        "faults.message_loss=0.1", "faults.delay_spike=0.1"]
    cfg = load_config(None, overrides)
    crashes = [c for r in (1, 2) for c in sample_clients(cfg, r)
               if client_crashes(cfg.faults, 0, r, c)]
    assert crashes  # the seed makes clients crash, or this test would test nothing
    dirs, pids = _runs(tmp_path, overrides, worker=worker, reference=references)
    _assert_same(dirs)
    rounds = read_rounds(dirs["ray"])
    assert rounds["failed"].sum() == len(crashes) == rounds["faults.client_crashes"].sum()
    assert rounds["faults.server_crashes"].tolist() == [0, 1]
    if worker == "inline":  # pids read after round 1 (else after round 2 as well)
        assert pids[0]["server"] != pids[1]["server"]  # the server's process really died
    assert pids[-1]["replaced"] == len(crashes)  # and so did each crashed client's
    log = (dirs["ray"] / "run.log").read_text()
    assert "the server actor was lost" in log and "client actor(s) died running" in log


def test_crashes_inside_calls_of_several_clients_change_no_number(ray_instance, references,
                                                                  tmp_path, tiny):
    # One client actor, two calls out: a round's 6 clients go in calls of up to 3
    # (next_call). Round 2's server crash hits the first request of a call, so the
    # rest of that call comes back undone and runs after the restart. Seed 2 crashes
    # round 1's clients 1 and 5: client 1 travels alone, so its actor's death loses only
    # its work (were it in client 0's call, client 0 would fail in its place).
    overrides = tiny + ["fed.clients_per_round=6", "faults.client_crash=0.25",
                        "faults.server_crash_round=2", "run.seed=2"]
    cfg = load_config(None, overrides)
    crashes = [(r, c) for r in (1, 2) for c in sample_clients(cfg, r)
               if client_crashes(cfg.faults, cfg.run.seed, r, c)]
    assert crashes == [(1, 1), (1, 5), (2, 0)]
    dirs, pids = _runs(tmp_path, overrides + ["ray.num_client_actors=1"], reference=references)
    _assert_same(dirs)
    rounds = read_rounds(dirs["ray"])
    assert rounds["failed"].sum() == len(crashes) == rounds["faults.client_crashes"].sum()
    assert rounds["faults.server_crashes"].tolist() == [0, 1]
    assert pids[-1]["replaced"] == len(crashes)


@pytest.mark.slow  # two real server restarts: 20-35 s on the shared 2-core host
def test_sfl_server_killed_between_and_inside_rounds_restores_its_body(ray_instance, references,
                                                                       tmp_path, tiny):
    # After round 1 the server is killed from outside (Ray restarts it, no request
    # notices: the restart is caught by its incarnation); in round 2 an injected crash
    # kills it mid-round, and the round starts over from the coordinator's copy.
    def kill_server(backend, row):
        if row["round"] != 1:
            return
        before = ray.get(backend.server.pid.remote(), timeout=60)
        ray.kill(backend.server, no_restart=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # restarted before round 2, not during it
            try:
                if ray.get(backend.server.pid.remote(), timeout=60) != before:
                    return
            except ray.exceptions.RayActorError:
                pass  # between the old process and the new one
            time.sleep(0.1)
        raise AssertionError("the server actor did not restart")

    overrides = tiny + ["train.method=sfl", "fed.clients_per_round=2",
                        "faults.server_crash_round=2"]
    dirs, _ = _runs(tmp_path, overrides, kill_server, reference=references)
    _assert_same(dirs)
    log = (dirs["ray"] / "run.log").read_text()
    assert "restoring its body from the coordinator" in log
    assert "the server actor was lost; after its restart, the round starts over" in log


def test_sfl_interrupted_resumes_on_ray_to_the_local_numbers(ray_instance, references,
                                                            tmp_path, tiny):
    # The fast version of the restore path (the slow test above kills real servers): the
    # body sfl trained is in the checkpoint, and the resumed run's new server actor must
    # start round 2 from it, not from the pretrained body. Round 1 runs in-process (the
    # checkpoint is the same from either backend: local == Ray) and the run resumes on
    # Ray, which also makes this the sfl case of Ray equals local.
    overrides = tiny + ["train.method=sfl", "fed.clients_per_round=2", "run.threads=1",
                        "ray.num_client_actors=2", "eval.worker=inline"]
    cfg = load_config(None, overrides + [f"run.out_dir={tmp_path}", "run.run_id=ray",
                                         "run.backend=local"])

    def stop(row):
        raise KeyboardInterrupt  # as Ctrl-C after round 1: its checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, on_round=stop)
    config = tmp_path / "ray" / "config.toml"
    config.write_text(config.read_text().replace('backend = "local"', 'backend = "ray"'))
    restored, backends = [], []

    def factory(world):
        backends.append(make_backend(world))
        restore = backends[-1].restore_server
        backends[-1].restore_server = lambda state: (restored.append(state), restore(state))
        return backends[-1]

    resume_experiment(tmp_path / "ray", make_backend=factory)
    assert isinstance(backends[0], RayBackend) and len(restored) == 1 and restored[0]
    # The checkpointed body, into the new server actor.
    assert "restoring its body from the coordinator" in (tmp_path / "ray" / "run.log").read_text()
    _assert_same({"local": references(overrides), "ray": tmp_path / "ray"})
    assert (read_rounds(tmp_path / "ray")["flops.server"] > 0).all()


def test_client_actor_killed_fails_one_client_and_is_replaced(ray_instance, tmp_path, tiny):
    def kill_actor(backend, row):
        if row["round"] == 1:
            pid = ray.get(backend.pool.actors[0].pid.remote(), timeout=60)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the process is gone before round 2
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    dirs, pids = _runs(tmp_path, tiny, kill_actor)  # it differs from the reference: none run
    rounds, clients = read_rounds(dirs["ray"]), read_clients(dirs["ray"])
    assert rounds["failed"].tolist() == [0, 1] and rounds["faults.client_crashes"].sum() == 0
    failed = clients[clients["status"] == "failed"]
    assert len(failed) == 1 and failed["flops.client"].isna().all()
    assert (rounds["participants"] + rounds["failed"] + rounds["offline"]
            == rounds["sampled"]).all()
    assert [p["replaced"] for p in pids] == [0, 1]
    assert pids[0]["clients"][0] not in pids[1]["clients"]
    assert "failed: their work was lost" in (dirs["ray"] / "run.log").read_text()


def test_unreachable_ray_address_fails_fast_with_one_line(tmp_path, tiny):
    # Refused before anything runs: exit 2, one line, no run directory. The timeout only
    # bounds how long to wait for the process; how fast it was is not asserted.
    done = subprocess.run([sys.executable, "-m", "sfprompt", "run", *tiny,
                           f"run.out_dir={tmp_path}", "ray.address=127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert done.stderr.startswith("sfprompt: error: ray.address: cannot reach 127.0.0.1:1 (")
    assert done.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())  # refused before a run directory exists
