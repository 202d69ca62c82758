"""Injected faults (`[faults]`): validation, seeded draws, and what a local run records."""

import numpy as np
import pandas as pd
import pytest

from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import FaultsConfig
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.fed.sampling import sample_clients
from sfprompt.platform.sim.faults import MessageFaults, client_crashes, message_faults
from sfprompt.platform.wire.link import DOWN, KINDS
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients, read_rounds

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=120", "data.test_fraction=0.05",
        "fed.num_clients=4", "fed.clients_per_round=3", "fed.rounds=2", "fed.partition=iid",
        "train.batch_size=16", "prompt.length=2", "run.threads=1", "run.backend=local",
        "profiles.sigma=0.3"]


@pytest.mark.parametrize("override, message", [
    ("faults.client_crash=1.5", r"^faults\.client_crash: must be a probability in \[0, 1\]"),
    ("faults.delay_spike=-0.1", r"^faults\.delay_spike: must be a probability"),
    ("faults.message_loss=1", r"^faults\.message_loss: must be in \[0, 1\)"),
    ("faults.message_loss=nan", r"^faults\.message_loss: must be in \[0, 1\)"),
    ("faults.delay_spike_s=-1", r"^faults\.delay_spike_s: must be a number of seconds >= 0"),
    ("faults.server_crash_round=6", r"^faults\.server_crash_round: must be a round in \[0, fed"),
    ("faults.client_crash=often", r"^faults\.client_crash: expected float"),
    ("faults.crash=0.1", r"^faults\.crash: unknown key"),
])
def test_bad_fault_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["fed.rounds=5", override])


def test_crash_draws_are_seeded_per_client_and_round():
    cfg = FaultsConfig(client_crash=0.25)
    draws = [client_crashes(cfg, 0, r, c) for r in range(1, 41) for c in range(100)]
    assert draws == [client_crashes(cfg, 0, r, c) for r in range(1, 41) for c in range(100)]
    assert np.mean(draws) == pytest.approx(0.25, abs=0.02)
    assert draws != [client_crashes(cfg, 1, r, c) for r in range(1, 41) for c in range(100)]
    assert not any(client_crashes(FaultsConfig(), 0, 1, c) for c in range(100))
    assert all(client_crashes(FaultsConfig(client_crash=1.0), 0, 1, c) for c in range(100))


def test_message_faults_by_expectation():
    nbytes, messages = {"smashed_up": 4000, "upload": 50}, {"smashed_up": 40, "upload": 1}
    one = lambda kind, n: 0.5  # every transmission takes half a simulated second  # noqa: E731
    assert message_faults(FaultsConfig(), one, nbytes, messages, 0, 1, 2) == MessageFaults()
    cfg = FaultsConfig(message_loss=0.2, delay_spike=0.1, delay_spike_s=3.0)
    runs = [message_faults(cfg, one, nbytes, messages, 0, r, 2) for r in range(1, 2001)]
    assert runs[5] == message_faults(cfg, one, nbytes, messages, 0, 6, 2)  # seeded
    # Transmissions until 41 arrive: 41 x p / (1 - p) = 10.25 lost on average.
    lost = np.mean([f.lost for f in runs])
    assert lost == pytest.approx(41 * 0.2 / 0.8, rel=0.05)
    assert np.mean([f.spikes for f in runs]) == pytest.approx((41 + lost) * 0.1, rel=0.05)
    for f in runs[:50]:  # a lost smashed message (100 bytes) costs its bytes and time again
        assert f.seconds == pytest.approx(0.5 * f.lost + 3.0 * f.spikes)
        assert f.lost * 50 <= f.retransmitted_bytes <= f.lost * 100


def _run(tmp_path, name, *overrides):
    cfg = load_config(None, TINY + [f"run.out_dir={tmp_path}", f"run.run_id={name}", *overrides])
    run_dir = run_experiment(cfg)
    return read_rounds(run_dir), read_clients(run_dir), (run_dir / "run.log").read_text()


def test_lost_and_delayed_messages_cost_time_and_retransmissions_only(tmp_path):
    # Batches of 4: several messages of each split kind, so a lost one costs its own
    # (mean) size, not the kind's total.
    base, base_clients, _ = _run(tmp_path, "clean", "train.batch_size=4")
    rounds, clients, _ = _run(tmp_path, "lossy", "train.batch_size=4", "faults.message_loss=0.3",
                              "faults.delay_spike=0.2", "faults.delay_spike_s=5")
    same = ["accuracy", "loss", "train_loss", "flops.client", "flops.server",
            *[f"bytes.{k}" for k in KINDS]]
    pd.testing.assert_frame_equal(rounds[same], base[same], check_exact=True)
    assert (clients["status"] == "ok").all()
    assert (rounds["faults.lost_messages"] > 0).all() and (rounds["faults.delay_spikes"] > 0).all()
    resent = clients["faults.retransmitted_bytes"].sum()
    assert rounds["faults.retransmitted_bytes"].sum() == resent > 0
    extra = clients["sim.comm_seconds"] - base_clients["sim.comm_seconds"]
    assert (extra > 0).all() and (clients["messages.smashed_up"] > 1).all()
    # Exactly what the documented process adds, redrawn here from the recorded traffic:
    # per kind with m messages, NegBin(m, 0.7) losses each costing one message's time
    # again (latency + 8 x mean size / bandwidth of its direction), and Binomial(m +
    # lost, 0.2) spikes of 5 s each, from the stream (seed, round, client, 0x1055).
    for i, r in clients.iterrows():
        rng = np.random.default_rng([0, int(r["round"]), int(r["client"]), 0x1055])
        lost = spikes = resent = 0
        seconds = 0.0
        for kind in KINDS:
            m = int(r[f"messages.{kind}"])
            if m == 0:
                continue
            k_lost = int(rng.negative_binomial(m, 0.7))
            k_spikes = int(rng.binomial(m + k_lost, 0.2))
            size = r[f"bytes.{kind}"] / m
            bps = r["profile.downlink_bps"] if kind in DOWN else r["profile.uplink_bps"]
            seconds += k_lost * (r["profile.latency_s"] + 8 * size / bps) + 5.0 * k_spikes
            lost, spikes, resent = lost + k_lost, spikes + k_spikes, resent + round(k_lost * size)
        assert (r["faults.lost_messages"], r["faults.delay_spikes"],
                r["faults.retransmitted_bytes"]) == (lost, spikes, resent), i
        assert extra[i] == pytest.approx(seconds, rel=1e-9, abs=1e-9), i
    counts = ["faults.client_crashes", "faults.server_crashes", *MessageFaults().columns()]
    assert (base[counts] == 0).all().all() and (base["failed"] == 0).all()


def test_crashed_clients_fail_and_are_recorded(tmp_path):
    rounds, clients, log = _run(tmp_path, "crashy", "faults.client_crash=0.4",
                                "faults.server_crash_round=2")
    cfg = FaultsConfig(client_crash=0.4)
    expected = {(r, c) for r in (1, 2) for c in sample_clients(load_config(None, TINY), r)
                if client_crashes(cfg, 0, r, c)}
    failed = clients[clients["status"] == "failed"]
    assert expected and set(zip(failed["round"], failed["client"])) == expected
    assert failed[["samples", "flops.client", "bytes.upload"]].isna().all().all()  # nothing counted
    assert rounds["failed"].tolist() == rounds["faults.client_crashes"].tolist() \
        == [sum(r == k for r, _ in expected) for k in (1, 2)]
    assert (rounds["participants"] + rounds["failed"] == rounds["sampled"]).all()
    assert rounds["faults.server_crashes"].tolist() == [0, 1]
    assert "injected crash of client(s)" in log and "round 2: injected server crash" in log
