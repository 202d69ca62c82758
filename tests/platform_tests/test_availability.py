"""Availability over time: windows by hand, trace files, and the round loop with the stub
backend of test_protocols (client c finishes at exactly c + 1 simulated seconds)."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from platform_tests.test_protocols import FakeSplit, StubBackend

from sfprompt.platform.config.load import load_config
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.rows import client_rows
from sfprompt.platform.loop.world import World, build_world
from sfprompt.platform.sim.availability import Schedule, make_schedule, read_intervals
from sfprompt.platform.sim.profiles import Profile, ServerProfile


def test_windows_by_hand():
    s = Schedule([[(10.0, 20.0)], [(90.0, 100.0), (0.0, 5.0)], [(0.0, 100.0)], [],
                  [(0.0, 30.0), (20.0, 40.0), (40.0, 50.0)]], period_s=100.0)
    assert s.online_until(0, 15.0) == 20.0
    assert s.online_until(0, 20.0) is None and s.online_until(0, 9.99) is None
    assert s.online_until(0, 215.0) == 220.0  # the period repeats
    assert s.online_until(1, 95.0) == 105.0  # across the period's end
    assert s.online_until(1, 3.0) == 5.0 and s.online_until(1, 50.0) is None
    assert s.online_until(2, 1e9) == math.inf and s.online_until(3, 0.0) is None
    assert s.online_until(4, 0.0) == 50.0  # overlapping and touching intervals join
    assert s.online_at(12.0) == [0, 2, 4] and s.online_at(97.0) == [1, 2]
    assert Schedule([[(10.0, 20.0)], [(30.0, 40.0)]], 100.0).first_online(25.0) == 30.0
    assert Schedule([[(10.0, 20.0)]], 100.0).first_online(25.0) == 110.0
    assert Schedule([[(10.0, 20.0)]], 100.0).first_online(12.0) == 12.0
    assert Schedule([[(10.0, 20.0)]], 100.0).first_online(205.0) == 210.0  # a later period
    assert Schedule([[(10.0, 20.0)]], 100.0).first_online(225.0) == 310.0
    assert Schedule([[(0.0, 0.0), (50.0, 60.0)]], 100.0).first_online(70.0) == 150.0
    with pytest.raises(SfpromptError, match="^availability: no client is ever online$"):
        Schedule([[], []], 100.0).first_online(0.0)


def _profiles(availability):
    return [Profile("hand", 1e9, 1e6, 1e6, 0.0, 0.0, a, 0) for a in availability]


def test_diurnal_windows_last_the_availability_fraction_of_the_period():
    cfg = load_config(None, ["availability.model=diurnal", "availability.period_s=1000"])
    fractions = [0.0, 0.25, 0.5, 0.9, 1.0] * 20
    schedule = make_schedule(cfg.availability, _profiles(fractions), seed=3)
    for spans, fraction in zip(schedule.spans, fractions):
        assert sum(e - s for s, e in spans) == pytest.approx(fraction * 1000)
        assert all(0.0 <= s < e <= 1000.0 for s, e in spans)
        assert len(spans) <= 2  # one window, perhaps folded over the period's end
    again = make_schedule(cfg.availability, _profiles(fractions), seed=3)
    other = make_schedule(cfg.availability, _profiles(fractions), seed=4)
    assert again.spans == schedule.spans != other.spans  # phases come from the seed
    assert make_schedule(load_config(None, []).availability, _profiles([1.0]), 0) is None


def test_diurnal_phases_are_uniform_over_the_period():
    # Half-day windows from a uniform phase: a client is online at any moment with
    # probability one half (the window [phase, phase + 1) of a 2 s day covers 0.25 s
    # when phase <= 0.25 or phase > 1.25).
    cfg = load_config(None, ["availability.model=diurnal", "availability.period_s=2"])
    schedule = make_schedule(cfg.availability, _profiles([0.5] * 4000), seed=0)
    for t in (0.25, 1.0, 1.9):
        assert len(schedule.online_at(t)) / 4000 == pytest.approx(0.5, abs=0.03)


def _trace(tmp_path, rows, name="online.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["client", "start_s", "end_s"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("rows, message", [
    ([(0, 0, 10), (6, 0, 10)], "column 'client' row 1 must be a client index in [0, 6), got 6"),
    ([(0, 0, 10), (1.5, 0, 10)], "column 'client' row 1 must be a client index"),
    ([(0, -1, 10)], "column 'start_s' row 0 must be >= 0, got -1"),
    ([(0, 5, 5)], "column 'end_s' row 0 must be after start_s"),
    ([(0, 5, 101)], "column 'end_s' row 0 must be after start_s and <= availability.period_s = 100"),
])
def test_a_bad_trace_is_one_line_naming_the_column_and_row(tmp_path, rows, message):
    with pytest.raises(SfpromptError, match="availability.trace .*online.csv: " + re.escape(message)):
        read_intervals(_trace(tmp_path, rows), 6, 100.0)


def test_a_missing_or_unreadable_trace_is_one_line(tmp_path):
    with pytest.raises(SfpromptError, match="file not found"):
        read_intervals(tmp_path / "nope.csv", 2, 100.0)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(SfpromptError, match="expected a .csv or .parquet file"):
        read_intervals(tmp_path / "t.json", 2, 100.0)
    (tmp_path / "t.csv").write_text("client,start_s\n0,1\n")
    with pytest.raises(SfpromptError, match="missing column 'end_s'"):
        read_intervals(tmp_path / "t.csv", 2, 100.0)
    with pytest.raises(ConfigError, match="availability.trace: must name a CSV or Parquet"):
        load_config(None, ["availability.model=trace"])
    with pytest.raises(ConfigError, match="availability.model: unknown 'hourly'"):
        load_config(None, ["availability.model=hourly"])
    with pytest.raises(ConfigError, match="availability.period_s: must be a positive number"):
        load_config(None, ["availability.period_s=0"])


def _run(tmp_path, rows, overrides=(), num_clients=6, period=100.0):
    path = _trace(tmp_path, rows)
    cfg = load_config(None, [f"fed.num_clients={num_clients}", "fed.rounds=2",
                             "availability.model=trace", f"availability.trace={path}",
                             f"availability.period_s={period}", *overrides])
    profiles = _profiles([1.0] * num_clients)
    world = World(cfg, None, [np.arange(3)] * num_clients, FakeSplit(), {}, profiles,
                  ServerProfile("s", 1e12, 1), make_schedule(cfg.availability, profiles, 0))
    backend = StubBackend()
    return list(run_rounds(world, backend)), backend


def test_only_online_clients_are_sampled_and_one_that_leaves_is_dropped(tmp_path):
    # 0-2 always online, 3 leaves at 2.5 s (it would finish at 4), 4-5 from 50 s on.
    rows = [(c, 0, 100) for c in range(3)] + [(3, 0, 2.5), (4, 50, 100), (5, 50, 100)]
    out, backend = _run(tmp_path, rows, ["fed.clients_per_round=6"])
    assert backend.calls == [[0, 1, 2, 3], [0, 1, 2]]  # round 2 starts at 3 s
    (row, outcomes), (row2, _) = out
    assert [o.status for o in outcomes] == ["ok"] * 3 + ["dropped"]
    assert (row["participants"], row["dropped"], row["sampled"], row["offline"]) == (3, 1, 4, 0)
    assert row["accuracy"] == pytest.approx(1.0)  # FedAvg of states 0, 1, 2 only
    assert row["sim.round_seconds"] == 3.0 and row["sim.wait_seconds"] == 0.0
    assert row["flops.client"] == 10e9  # the leaver's work ran, and is counted
    left = [r["sim.left_seconds"] for r in client_rows(row, outcomes)]
    assert left[3] == 2.5 and all(math.isnan(v) for v in left[:3])
    assert row2["sim.elapsed_seconds"] == 6.0


def test_a_round_waits_for_the_first_client_to_come_online(tmp_path):
    # Client 2 is online from 40 s to 42 s (it would finish at 43 s), client 4 from 60 s.
    out, backend = _run(tmp_path, [(2, 40, 42), (4, 60, 100)], ["fed.clients_per_round=2"])
    assert backend.calls == [[2], [4]]
    (row, outcomes), (row2, _) = out
    assert [(o.status, o.left) for o in outcomes] == [("dropped", 2.0)]
    assert (row["sim.wait_seconds"], row["sim.round_seconds"], row["sim.elapsed_seconds"]) \
        == (40.0, 2.0, 42.0)  # the coordinator heard at 42 s that client 2 had gone
    assert (row2["sim.wait_seconds"], row2["sim.round_seconds"], row2["sim.elapsed_seconds"]) \
        == (18.0, 5.0, 65.0)
    assert math.isnan(row["train_loss"]) and row2["participants"] == 1


def test_no_client_ever_runs_while_its_trace_says_offline(tmp_path):
    # Random short windows, checked against the trace's own rows: every client that
    # ran was online at its round's start, and stayed until it finished or was dropped
    # at the end of its window.
    rng = np.random.default_rng(0)
    rows = []
    for c in range(12):
        for start in rng.uniform(0, 90, size=3):
            rows.append((c, float(start), float(start + rng.uniform(1, 10))))
    out, _ = _run(tmp_path, rows, ["fed.clients_per_round=5", "fed.rounds=30"],
                  num_clients=12)
    trace = pd.DataFrame(rows, columns=["client", "start_s", "end_s"])
    before, ran = 0.0, 0
    for row, outcomes in out:
        start = (before + row["sim.wait_seconds"]) % 100.0
        for o in outcomes:
            mine = trace[trace["client"] == o.client]
            covering = mine[(mine["start_s"] <= start) & (start < mine["end_s"])]
            assert len(covering), (row["round"], o.client)
            end = _window_end(mine, start)
            if o.status == "dropped":
                assert o.left == pytest.approx(end - start) and o.left < o.time.finish
            else:
                assert start + o.time.finish <= end + 1e-9
            ran += 1
        before = row["sim.elapsed_seconds"]
    assert ran > 30 and sum(row["dropped"] for row, _ in out) > 0  # the test sees both cases


def _window_end(intervals, t):
    """End of the union of `intervals` containing t (within one period)."""
    end = t
    grew = True
    while grew:
        grew = False
        for s, e in zip(intervals["start_s"], intervals["end_s"]):
            if s <= end < e or (s <= t < e and e > end):
                end, grew = max(end, e), True
    return end


def test_build_world_reads_the_trace_before_any_data(tmp_path):
    cfg = load_config(None, ["availability.model=trace",
                             f"availability.trace={tmp_path / 'missing.csv'}"])
    with pytest.raises(SfpromptError, match="availability.trace .*missing.csv: file not found"):
        build_world(cfg)


def test_a_buffered_client_that_leaves_while_training_is_dropped_when_it_leaves(tmp_path):
    # Client c would finish c + 1 s after it starts; client 3 goes offline at 2.5 s.
    # Round 1 (0-2 s) aggregates 0 and 1; in round 2 (from 2 s) client 3, training since
    # 0 s, leaves at 2.5 s, before the buffer fills at 3 s with client 2 and the fresh
    # client 0: it is dropped then, not when it would have finished (4 s).
    rows = [(c, 0, 100) for c in range(3)] + [(3, 0, 2.5)]
    out, backend = _run(tmp_path, rows, ["fed.clients_per_round=4", "fed.buffer_size=2",
                                         "fed.protocol=buffered", "fed.rounds=3"],
                        num_clients=4)
    assert backend.calls == [[0, 1, 2, 3], [0, 1], [0, 2]]  # 3 is offline from 2.5 s
    assert [[(o.client, o.status) for o in outcomes] for _, outcomes in out] == \
        [[(0, "ok"), (1, "ok")], [(0, "ok"), (2, "ok"), (3, "dropped")], [(0, "ok"), (1, "ok")]]
    row, outcomes = out[1]
    assert (row["dropped"], row["sim.round_seconds"], row["sim.elapsed_seconds"]) == (1, 1.0, 3.0)
    gone = {r["client"]: r for r in client_rows(row, outcomes)}[3]
    assert (gone["sim.left_seconds"], gone["sim.start_seconds"], gone["staleness"]) == (2.5, -2.0, 1)
