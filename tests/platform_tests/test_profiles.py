"""Profiles: shipped tiers, the source registry, lognormal spread, trace files, CLI."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from sfprompt.cli import main
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import ProfilesConfig
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.sim.profiles import (PROFILE_SOURCES, SERVER_TIERS, TIERS, TRACE_COLUMNS,
                                            make_profiles, parse_mix, read_trace, server_profile)


@pytest.mark.parametrize("name", sorted(TIERS))
def test_tiers_are_physical_and_profile_follows_the_stated_fraction(name):
    tier = TIERS[name]
    p = tier.profile(name)
    assert p.tier == name
    assert p.flops_per_s == pytest.approx(tier.peak_flops_per_s * tier.efficiency)
    assert 0 < tier.efficiency <= 1 and p.flops_per_s > 0
    assert p.uplink_bps > 0 and p.downlink_bps >= p.uplink_bps  # access links are asymmetric or equal
    assert p.latency_s == pytest.approx(tier.rtt_s / 2) and p.jitter_s >= 0
    assert 0 < p.availability <= 1 and p.memory_bytes > 0
    assert tier.source and tier.example


@pytest.mark.parametrize("name", sorted(SERVER_TIERS))
def test_server_tiers_and_concurrency_override(name):
    base = server_profile(ProfilesConfig(server=name))
    assert base.flops_per_s == pytest.approx(SERVER_TIERS[name].peak_flops_per_s
                                             * SERVER_TIERS[name].efficiency)
    assert base.concurrency == SERVER_TIERS[name].concurrency >= 1
    assert server_profile(ProfilesConfig(server=name, server_concurrency=3)).concurrency == 3


def _trace_cfg(tmp_path, n):
    path = tmp_path / "trace.csv"
    pd.DataFrame({c: np.arange(1, n + 1) * (0.1 if c == "availability" else 1.0)
                  for c in TRACE_COLUMNS}).to_csv(path, index=False)
    return ProfilesConfig(source="trace", trace=str(path))


@pytest.mark.parametrize("source", sorted(PROFILE_SOURCES))
def test_every_source_is_deterministic_by_seed(source, tmp_path):
    cfg = _trace_cfg(tmp_path, 8) if source == "trace" else ProfilesConfig(source=source)
    first = make_profiles(cfg, 8, seed=3)
    assert len(first) == 8 and first == make_profiles(cfg, 8, seed=3)
    if source != "trace":  # a trace is taken as given
        assert first != make_profiles(cfg, 8, seed=4)


def test_sigma_zero_gives_the_tier_exactly():
    profiles = make_profiles(ProfilesConfig(source="tier", tier="laptop", sigma=0.0), 5, seed=0)
    assert profiles == [TIERS["laptop"].profile("laptop")] * 5


def test_lognormal_spread_has_the_tier_as_median_and_sigma_as_log_std():
    sigma, n = 0.5, 4000
    tier = TIERS["mid_phone"].profile("mid_phone")
    profiles = make_profiles(ProfilesConfig(source="tier", tier="mid_phone", sigma=sigma), n, 0)
    for field in ("flops_per_s", "uplink_bps", "downlink_bps"):
        logs = np.log([getattr(p, field) / getattr(tier, field) for p in profiles])
        assert abs(np.median(logs)) < 0.05 and abs(logs.std() - sigma) < 0.03
    # latency, jitter, availability and memory are the tier's own
    assert {(p.latency_s, p.jitter_s, p.availability, p.memory_bytes) for p in profiles} == \
        {(tier.latency_s, tier.jitter_s, tier.availability, tier.memory_bytes)}


def test_mix_draws_tiers_by_weight():
    cfg = ProfilesConfig(source="mix", mix="low_phone:1,laptop:3,iot_pi:0", sigma=0.0)
    tiers = [p.tier for p in make_profiles(cfg, 4000, seed=1)]
    assert "iot_pi" not in tiers
    assert tiers.count("laptop") / len(tiers) == pytest.approx(0.75, abs=0.03)
    assert parse_mix("low_phone:1, laptop:3") == {"low_phone": 0.25, "laptop": 0.75}


@pytest.mark.parametrize("spec", ["phablet:1", "low_phone", "low_phone:-1", "low_phone:x",
                                  "low_phone:0", "", "low_phone:nan"])
def test_bad_mix_names_the_key(spec):
    with pytest.raises(ConfigError, match=r"^profiles\.mix: ") as err:
        parse_mix(spec)
    assert "\n" not in str(err.value)


def test_trace_round_trips_csv_and_parquet(tmp_path):
    rows = pd.DataFrame({"tier": ["a", "b"], "flops_per_s": [1e9, 2e9], "uplink_bps": [1e6, 2e6],
                         "downlink_bps": [3e6, 4e6], "latency_s": [0.01, 0.02],
                         "jitter_s": [0.0, 0.001], "availability": [1.0, 0.5],
                         "memory_bytes": [2**30, 2**31], "note": ["extra", "columns ignored"]})
    for name, write in (("t.csv", lambda p: rows.to_csv(p, index=False)),
                        ("t.parquet", lambda p: rows.to_parquet(p))):
        write(tmp_path / name)
        got = read_trace(tmp_path / name, 2)
        assert [dataclasses.astuple(p) for p in got] == [
            ("a", 1e9, 1e6, 3e6, 0.01, 0.0, 1.0, 2**30), ("b", 2e9, 2e6, 4e6, 0.02, 0.001, 0.5, 2**31)]


@pytest.mark.parametrize("column,value,rule", [
    ("latency_s", -0.1, "must be >= 0"),
    ("flops_per_s", math.nan, "must be > 0"),
    ("uplink_bps", 0.0, "must be > 0"),
    ("availability", 1.5, r"must be in \[0, 1\]"),
    ("memory_bytes", "lots", "must be >= 0"),
])
def test_trace_bad_values_name_file_column_and_row(tmp_path, column, value, rule):
    df = pd.DataFrame({c: [1.0, 1.0, 1.0] if c != "availability" else [0.5] * 3
                       for c in TRACE_COLUMNS})
    df[column] = df[column].astype(object)
    df.loc[2, column] = value
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SfpromptError, match=rf"bad\.csv: column '{column}' row 2 {rule}") as err:
        read_trace(tmp_path / "bad.csv", 3)
    assert "\n" not in str(err.value)


def test_trace_structure_errors_are_one_line(tmp_path):
    full = pd.DataFrame({c: [1.0, 1.0] if c != "availability" else [0.5] * 2 for c in TRACE_COLUMNS})
    full.drop(columns="jitter_s").to_csv(tmp_path / "cols.csv", index=False)
    full.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "t.json").write_text("{}")
    (tmp_path / "broken.parquet").write_text("not parquet")
    cases = [("cols.csv", 2, "missing column 'jitter_s'"),
             ("rows.csv", 5, "2 rows but fed.num_clients = 5"),
             ("nope.csv", 2, "file not found"),
             ("t.json", 2, "expected a .csv or .parquet file"),
             ("broken.parquet", 2, "cannot read")]
    for name, n, message in cases:
        with pytest.raises(SfpromptError, match=message) as err:
            read_trace(tmp_path / name, n)
        assert str(err.value).startswith(f"profiles.trace {tmp_path / name}") and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,key", [
    (["profiles.source=census"], "profiles.source"),
    (["profiles.tier=mainframe"], "profiles.tier"),
    (["profiles.mix=low_phone:0"], "profiles.mix"),
    (["profiles.sigma=-0.1"], "profiles.sigma"),
    (["profiles.source=trace"], "profiles.trace"),
    (["profiles.server=tpu"], "profiles.server"),
    (["profiles.server_concurrency=-1"], "profiles.server_concurrency"),
    (["network.mode=carrier_pigeon"], "network.mode"),
    (["network.time_scale=-1"], "network.time_scale"),
    (["fed.protocol=lottery"], "fed.protocol"),
    (["fed.deadline_s=0"], "fed.deadline_s"),
    (["fed.over_commit=0.5"], "fed.over_commit"),
    (["fed.protocol=over_commit", "fed.over_commit=1.5"], "fed.over_commit"),  # 15 of 10
])
def test_bad_clock_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(key + ":") and "\n" not in str(err.value)


def test_default_profiles_are_a_heterogeneous_phone_mix():
    profiles = make_profiles(load_config().profiles, 50, seed=0)
    assert {p.tier for p in profiles} == {"low_phone", "mid_phone", "flagship_phone"}
    assert len({p.flops_per_s for p in profiles}) == 50


def test_cli_lists_every_tier(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in (*TIERS, *SERVER_TIERS):
        assert name in out
    assert "Ookla" in out and "datasheet" in out
