"""The virtual clock against hand-computed times, the server queue against processor
sharing worked by hand, and realtime network emulation against the clock."""

import dataclasses
import itertools
import time

import numpy as np
import pytest
import torch

from sfprompt.platform.config.schema import NetworkConfig
from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.sim import realtime as network
from sfprompt.platform.sim.clock import (ClientTime, client_times, comm_seconds, jitter_rng,
                                         message_seconds, server_queue)
from sfprompt.platform.sim.profiles import Profile, ServerProfile
from sfprompt.platform.sim.realtime import emulate_network
from sfprompt.platform.wire.link import Link

# 1 GFLOP/s; uplink 8 Mbit/s = 1 MB/s, downlink 16 Mbit/s = 2 MB/s; 50 ms one way.
PHONE = Profile("hand", 1e9, 8e6, 16e6, 0.05, 0.0, 1.0, 2**30)


def _result(client=0, client_flops=2e9, server_flops=1e12, nbytes=None, messages=None):
    return ClientResult(client=client, state={}, num_samples=10, num_kept=5, train_loss=0.0,
                        local_loss=0.0, client_flops=int(client_flops), server_flops=int(server_flops),
                        bytes=nbytes if nbytes is not None else
                        {"download": 1_000_000, "smashed_up": 2_000_000,
                         "activations_down": 2_000_000, "upload": 1_000_000},
                        messages=messages if messages is not None else
                        {"download": 1, "smashed_up": 4, "activations_down": 4, "upload": 1})


def test_hand_computed_round_time():
    # compute 2e9 / 1e9 = 2 s; latency 10 messages x 0.05 = 0.5 s; up 3 MB at 1 MB/s = 3 s;
    # down 3 MB at 2 MB/s = 1.5 s; server 1e12 FLOP on one 1e13 FLOP/s slot = 0.1 s.
    server = ServerProfile("hand", 1e13, 1)
    [t] = client_times([_result()], [PHONE], server, seed=0, round_=1)
    assert t == ClientTime(compute=2.0, comm=pytest.approx(5.0), server=pytest.approx(0.1), queue=0.0)
    assert t.finish == pytest.approx(7.1)


def test_one_message_is_latency_plus_bytes_over_its_directions_bandwidth():
    assert message_seconds(PHONE, "smashed_up", 500_000) == pytest.approx(0.05 + 0.5)
    assert message_seconds(PHONE, "gradients_down", 500_000) == pytest.approx(0.05 + 0.25)
    assert message_seconds(PHONE, "frozen_download", 0) == pytest.approx(0.05)
    # latency is paid per message, bytes once: 7 messages carrying 1 MB up in total
    rng = jitter_rng(0, 1, 0)
    assert comm_seconds(PHONE, {"gradients_up": 1_000_000}, {"gradients_up": 7}, rng) == \
        pytest.approx(7 * 0.05 + 1.0)


def test_server_slot_speed_is_total_over_concurrency():
    # 4 slots of 1e13 / 4: one client alone takes 4x longer than on the whole server.
    [t] = client_times([_result()], [PHONE], ServerProfile("s", 1e13, 4), seed=0, round_=1)
    assert t.server == pytest.approx(0.4) and t.queue == 0.0


@pytest.mark.parametrize("service,slots,finish", [
    ([1.0, 3.0], 1, [2.0, 4.0]),             # share 1 slot until t=2, then job 2 alone
    ([1.0, 1.0, 1.0], 1, [3.0, 3.0, 3.0]),   # three equal jobs end together
    ([1.0, 3.0], 2, [1.0, 3.0]),             # enough slots: nobody waits
    ([2.0, 1.0, 4.0], 2, [2.5, 1.5, 4.5]),   # 3 jobs on 2 slots at 2/3 speed until t=1.5
])
def test_processor_sharing_queue_by_hand(service, slots, finish):
    waits = server_queue(service, slots)
    assert [s + w for s, w in zip(service, waits)] == pytest.approx(finish)


def test_queue_invariants():
    rng = np.random.default_rng(0)
    service = list(rng.exponential(1.0, size=9))
    for slots in (1, 2, 4, 16):
        waits = server_queue(service, slots)
        assert min(waits) >= 0
        # work conservation: the last job ends when all work is done at full capacity,
        # or with the largest job when slots are idle
        assert max(s + w for s, w in zip(service, waits)) >= max(sum(service) / slots, max(service)) - 1e-9
        # order-independent: permuting the jobs permutes the waits
        perm = rng.permutation(len(service))
        assert server_queue([service[i] for i in perm], slots) == pytest.approx([waits[i] for i in perm])
    assert server_queue([], 3) == []


def test_queue_adds_to_client_time_when_clients_outnumber_slots():
    server = ServerProfile("s", 1e13, 1)
    times = client_times([_result(c) for c in range(3)], [PHONE] * 3, server, seed=0, round_=1)
    assert [t.queue for t in times] == pytest.approx([0.2, 0.2, 0.2])  # 3 x 0.1 s shared
    t = times[0]
    assert t.finish == pytest.approx(t.compute + t.comm + t.server + 0.2)  # the wait adds
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.queue = 0.0  # a recorded time is never changed after the fact


def test_a_kind_with_messages_but_no_bytes_costs_its_latency_only():
    assert comm_seconds(PHONE, {}, {"smashed_up": 3}, jitter_rng(0, 1, 0)) == pytest.approx(0.15)


def test_jitter_is_deterministic_non_negative_and_has_the_profiles_mean():
    jittery = Profile("j", 1e9, 8e6, 16e6, 0.0, 0.01, 1.0, 0)
    messages, nbytes = {"smashed_up": 20_000}, {"smashed_up": 0}
    a = comm_seconds(jittery, nbytes, messages, jitter_rng(5, 2, 7))
    assert a == comm_seconds(jittery, nbytes, messages, jitter_rng(5, 2, 7))
    assert a != comm_seconds(jittery, nbytes, messages, jitter_rng(5, 2, 8))
    assert a / 20_000 == pytest.approx(0.01, rel=0.03)


def test_jitter_of_several_kinds_adds_one_gamma_draw_per_kind_in_link_order():
    # Two kinds with messages and one without: latency + bytes of each, plus one
    # Gamma(m, jitter_s) draw per kind that sent, drawn in KINDS order from the stream.
    jittery = Profile("j", 1e9, 8e6, 16e6, 0.05, 0.01, 1.0, 0)
    nbytes = {"upload": 1_000_000, "download": 2_000_000, "smashed_up": 0}
    messages = {"upload": 2, "download": 3, "smashed_up": 0}
    draws = jitter_rng(1, 2, 3)
    down, up = float(draws.gamma(3, 0.01)), float(draws.gamma(2, 0.01))  # download first
    expected = (3 * 0.05 + 1.0 + down) + (2 * 0.05 + 1.0 + up)
    assert comm_seconds(jittery, nbytes, messages, jitter_rng(1, 2, 3)) == pytest.approx(expected)


def test_clock_never_reads_the_wall_clock(monkeypatch):
    results = [_result(c, client_flops=1e9 * (c + 1)) for c in range(4)]
    jittery = [Profile("j", 1e9, 8e6, 16e6, 0.05, 0.01, 1.0, 0)] * 4
    server = ServerProfile("s", 1e13, 2)
    before = client_times(results, jittery, server, seed=1, round_=3)
    ticks = itertools.count(1e9, 12345.678)
    for name in ("perf_counter", "time", "monotonic"):
        monkeypatch.setattr(time, name, lambda: next(ticks))
    assert client_times(results, jittery, server, seed=1, round_=3) == before


# ---------------------------------------------------------------- realtime emulation


def _send_some(link):
    link.send("smashed_up", torch.zeros(25_000))        # 100,000 bytes up
    link.send("activations_down", torch.zeros(50_000))  # 200,000 bytes down


def test_realtime_sleeps_each_messages_delay_scaled(monkeypatch):
    slept = []
    monkeypatch.setattr(network.time, "sleep", slept.append)
    cfg = NetworkConfig(mode="realtime", time_scale=0.5)
    with emulate_network(cfg, PHONE, seed=0):
        _send_some(Link())
    # up: 0.05 + 0.1 s; down: 0.05 + 0.1 s; both halved
    assert slept == pytest.approx([0.075, 0.075])


def test_simulated_mode_never_sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(network.time, "sleep", slept.append)
    with emulate_network(NetworkConfig(), PHONE, seed=0):
        _send_some(Link())
    _send_some(Link())  # nor does a Link outside any emulation
    assert slept == []


def test_realtime_really_waits():
    link = Link()
    start = time.perf_counter()
    with emulate_network(NetworkConfig(mode="realtime", time_scale=0.2), PHONE, seed=0):
        _send_some(link)
    assert time.perf_counter() - start >= 0.2 * 0.3
    assert link.bytes == {"smashed_up": 100_000, "activations_down": 200_000}
