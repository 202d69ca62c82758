"""Client and server profiles: how fast a device computes, how fast its link is, how
often it is there.

A `Profile` is what the virtual clock needs to turn counted FLOPs and bytes into
seconds. Profiles come from a registered *source* (`profiles.source`):

    tier    every client gets one named tier, spread by `profiles.sigma`
    mix     each client draws a tier by weight (`profiles.mix`), spread by `profiles.sigma`
    trace   one CSV or Parquet row per client, taken as given

The spread is lognormal with the tier's figure as its median, drawn independently per
client for compute, uplink and downlink (the quantities that vary most between two
phones of one class). Everything random comes from one generator seeded by `run.seed`,
so the same config gives the same profiles in every process.

Tier figures: peak FP32 throughput from vendor spec sheets (cores x clock x FLOPs per
cycle, or the stated TFLOP/s), network figures from public speed-test reports. Training
reaches only a fraction of peak (small batches, fp32, memory-bound norms and softmax,
thermal throttling on phones), so each tier states the fraction it assumes: effective
`flops_per_s = peak x efficiency`. These are our assumptions, shown by `sfprompt profiles`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfprompt.platform.config.schema import ProfilesConfig
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.registry import Registry
from sfprompt.platform.seeds import stream
from sfprompt.platform.sim.tracefile import read_table

G, T, MBIT, MS, GIB = 1e9, 1e12, 1e6, 1e-3, 2**30


@dataclass(frozen=True, slots=True)
class Profile:
    """One client device. Bandwidths in bit/s; latency one way (half the round trip)."""

    tier: str
    flops_per_s: float   # effective training throughput
    uplink_bps: float
    downlink_bps: float
    latency_s: float     # paid by every message
    jitter_s: float      # mean of an exponential extra delay per message
    availability: float  # probability the client is online when sampled
    memory_bytes: int    # recorded, not enforced


@dataclass(frozen=True)
class Tier:
    """A device class as published figures plus the fraction of peak we assume."""

    example: str
    peak_flops_per_s: float
    efficiency: float
    uplink_bps: float
    downlink_bps: float
    rtt_s: float
    jitter_s: float
    availability: float
    memory_bytes: int
    source: str

    def profile(self, name: str) -> Profile:
        return Profile(name, self.peak_flops_per_s * self.efficiency, self.uplink_bps,
                       self.downlink_bps, self.rtt_s / 2, self.jitter_s, self.availability,
                       self.memory_bytes)


# Phones train on the CPU cluster (NEON FMA: 32 FP32 FLOP/cycle on Cortex-X, 16 on
# Cortex-A7x, 8 on little cores) at 10 % of peak. Availability 0.85-0.9: Bonawitz et al.,
# "Towards Federated Learning at Scale" (MLSys 2019), see 6-10 % of devices drop per round.
TIERS: Registry[Tier] = Registry("tier", {
    "low_phone": Tier(
        "budget Android phone on 4G (MediaTek Helio G85 class)", 150 * G, 0.10,
        5 * MBIT, 15 * MBIT, 60 * MS, 10 * MS, 0.85, 4 * GIB,
        "MediaTek spec: 2x A75 @ 2.0 GHz + 6x A55 @ 1.8 GHz -> ~150 GFLOP/s; network: "
        "Ookla Speedtest Global Index, median mobile speeds of slower markets"),
    "mid_phone": Tier(
        "mid-range Android phone on 4G/LTE-A (Snapdragon 778G class)", 200 * G, 0.10,
        10 * MBIT, 50 * MBIT, 40 * MS, 8 * MS, 0.90, 8 * GIB,
        "Qualcomm spec: 4x A78 @ 2.2-2.4 GHz + 4x A55 @ 1.9 GHz -> ~200 GFLOP/s; network: "
        "Ookla Speedtest Global Index 2024, global median mobile ~50 down / ~10 up Mbit/s"),
    "flagship_phone": Tier(
        "flagship phone on 5G (Snapdragon 8 Gen 2 class)", 330 * G, 0.10,
        21 * MBIT, 166 * MBIT, 30 * MS, 5 * MS, 0.90, 12 * GIB,
        "Qualcomm spec: X3 @ 3.2 + 4x A715/A710 @ 2.8 + 3x A510 @ 2.0 GHz -> ~330 GFLOP/s; "
        "network: Ookla 'State of 5G Worldwide' Q3 2021, median 5G 166 down / 21 up Mbit/s"),
    "iot_pi": Tier(
        "Raspberry Pi 4-class IoT board on home Wi-Fi", 48 * G, 0.10,
        10 * MBIT, 30 * MBIT, 30 * MS, 5 * MS, 0.95, 4 * GIB,
        "Raspberry Pi 4 product brief: 4x A72 @ 1.5 GHz, 8 FLOP/cycle -> 48 GFLOP/s; "
        "network: our assumption for 2.4 GHz Wi-Fi through an on-board antenna"),
    "laptop": Tier(
        "laptop on home broadband Wi-Fi (Apple M1 class)", 2.6 * T, 0.20,
        45 * MBIT, 90 * MBIT, 20 * MS, 3 * MS, 0.90, 16 * GIB,
        "Apple M1 spec: 8-core GPU 2.6 TFLOP/s FP32; network: Ookla Speedtest Global "
        "Index 2024, global median fixed broadband ~90 down / ~45 up Mbit/s"),
    "edge_server": Tier(
        "on-premises edge server with one NVIDIA T4 on fibre", 65 * T, 0.20,
        1000 * MBIT, 1000 * MBIT, 10 * MS, 1 * MS, 0.99, 16 * GIB,
        "NVIDIA T4 datasheet: 65 TFLOP/s FP16 tensor cores, 16 GB; network: 1 Gbit/s "
        "symmetric business fibre"),
})


@dataclass(frozen=True)
class ServerProfile:
    """The server holding the body. A lone small request cannot fill a datacenter GPU,
    so `concurrency` requests run side by side at `flops_per_s / concurrency` each and
    together reach `flops_per_s`; more requests than that share it (clock.server_queue)."""

    name: str
    flops_per_s: float
    concurrency: int


@dataclass(frozen=True)
class ServerTier:
    example: str
    peak_flops_per_s: float
    efficiency: float  # 0.3: typical model-FLOPs utilisation of transformer training
    concurrency: int
    source: str

    def profile(self, name: str, concurrency: int = 0) -> ServerProfile:
        return ServerProfile(name, self.peak_flops_per_s * self.efficiency,
                             concurrency or self.concurrency)


SERVER_TIERS: Registry[ServerTier] = Registry("server tier", {
    "a100": ServerTier("one NVIDIA A100 SXM", 312 * T, 0.30, 8,
                       "NVIDIA A100 datasheet: 312 TFLOP/s BF16 dense"),
    "h100": ServerTier("one NVIDIA H100 SXM", 989 * T, 0.30, 8,
                       "NVIDIA H100 datasheet: 989 TFLOP/s BF16 dense (1,979 with sparsity)"),
    "t4": ServerTier("one NVIDIA T4", 65 * T, 0.20, 4,
                     "NVIDIA T4 datasheet: 65 TFLOP/s FP16 tensor cores"),
})


def server_profile(cfg: ProfilesConfig) -> ServerProfile:
    return SERVER_TIERS[cfg.server].profile(cfg.server, cfg.server_concurrency)


# ---------------------------------------------------------------- sources

Source = Callable[[ProfilesConfig, int, np.random.Generator], list[Profile]]
PROFILE_SOURCES: Registry[Source] = Registry("profile source")
register_source = PROFILE_SOURCES.register
_PROFILE_STREAM = 0x9F0F  # keeps profile draws apart from every other seeded stream


def make_profiles(cfg: ProfilesConfig, num_clients: int, seed: int) -> list[Profile]:
    """One profile per registered client, the same for the same config and seed."""
    rng = stream(seed, _PROFILE_STREAM)
    return PROFILE_SOURCES[cfg.source](cfg, num_clients, rng)


def spread(tiers: list[str], sigma: float, rng: np.random.Generator) -> list[Profile]:
    """Each client's tier with compute, uplink and downlink times a lognormal factor of
    median 1 (sigma = 0 gives the tier's figures exactly)."""
    factors = rng.lognormal(0.0, sigma, size=(len(tiers), 3))  # (n, 3)
    out = []
    for name, (f_compute, f_up, f_down) in zip(tiers, factors):
        p = TIERS[name].profile(name)
        out.append(Profile(name, p.flops_per_s * f_compute, p.uplink_bps * f_up,
                           p.downlink_bps * f_down, p.latency_s, p.jitter_s,
                           p.availability, p.memory_bytes))
    return out


def parse_mix(spec: str) -> dict[str, float]:
    """`"low_phone:0.3,mid_phone:0.7"` -> weights normalised to sum 1."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition(":")
        name = name.strip()
        TIERS.check("profiles.mix", name)
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"profiles.mix: {item!r} is not tier:weight with a weight >= 0")
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"profiles.mix: needs a positive weight, got {spec!r}")
    return {name: w / total for name, w in weights.items()}


@register_source("tier")
def _one_tier(cfg: ProfilesConfig, n: int, rng: np.random.Generator) -> list[Profile]:
    return spread([cfg.tier] * n, cfg.sigma, rng)


@register_source("mix")
def _mix(cfg: ProfilesConfig, n: int, rng: np.random.Generator) -> list[Profile]:
    weights = parse_mix(cfg.mix)
    names = list(weights)
    picks = rng.choice(len(names), size=n, p=list(weights.values()))  # (n,)
    return spread([names[i] for i in picks], cfg.sigma, rng)


@register_source("trace")
def _trace(cfg: ProfilesConfig, n: int, rng: np.random.Generator) -> list[Profile]:
    return read_trace(cfg.trace, n)


# ---------------------------------------------------------------- trace files

# Column -> the check its values must pass; row i of the file is client i.
TRACE_COLUMNS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "flops_per_s": (lambda v: v > 0, "must be > 0"),
    "uplink_bps": (lambda v: v > 0, "must be > 0"),
    "downlink_bps": (lambda v: v > 0, "must be > 0"),
    "latency_s": (lambda v: v >= 0, "must be >= 0"),
    "jitter_s": (lambda v: v >= 0, "must be >= 0"),
    "availability": (lambda v: (v >= 0) & (v <= 1), "must be in [0, 1]"),
    "memory_bytes": (lambda v: v >= 0, "must be >= 0"),
}


def read_trace(path: str | Path, num_clients: int) -> list[Profile]:
    """Profiles from a CSV or Parquet file with the TRACE_COLUMNS (an optional `tier`
    column labels rows); every problem is one line naming the file, column and row."""
    import pandas as pd  # only traces need it; the rest of platform/ is torch/numpy

    path = Path(path)
    df = read_table("profiles.trace", path, list(TRACE_COLUMNS))
    if len(df) != num_clients:
        raise SfpromptError(f"profiles.trace {path}: {len(df)} rows but fed.num_clients = "
                            f"{num_clients} (one row per client)")
    values = {}
    for column, (ok, rule) in TRACE_COLUMNS.items():
        v = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)  # (n,)
        bad = ~(np.isfinite(v) & ok(v))
        if bad.any():
            row = int(np.argmax(bad))
            value = df[column].tolist()[row]  # a plain number, not np.float64(...)
            raise SfpromptError(f"profiles.trace {path}: column {column!r} row {row} "
                                f"{rule}, got {value!r}")
        values[column] = v
    tiers = df["tier"].astype(str).tolist() if "tier" in df.columns else ["trace"] * len(df)
    return [Profile(tier=tiers[i], **{c: float(values[c][i]) for c in TRACE_COLUMNS
                                      if c != "memory_bytes"},
                    memory_bytes=int(values["memory_bytes"][i])) for i in range(len(df))]
