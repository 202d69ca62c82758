"""Availability over time: when each client is online, on the simulated clock.

`availability.model` says how a client comes and goes:

    per_round  a sampled client is there with probability `profile.availability`, drawn
               afresh each round (protocols.is_online); it never leaves during a round
    diurnal    each client is online for the fraction `profile.availability` of every
               `availability.period_s` (a day), from a phase of its own drawn from the
               run's seed: devices that train while they charge at night, in every
               time zone
    trace      online intervals per client from a CSV or Parquet file (columns client,
               start_s, end_s, seconds into the period), repeating every
               `availability.period_s`; a client without a row is never online

Under diurnal and trace a round starts at the simulated time the rounds before it
reached, and samples only clients online then (when nobody is, it waits for the first
to come online: `sim.wait_seconds`). A client whose online window closes before it
finishes is `dropped`: its update is lost, and `sim.left_seconds` records when it
went. As with late clients (protocols.py), its work ran in full to be counted. The
round protocol hears of it when it leaves: `wait_all` waits that long for it, and
under `over_commit` it takes none of the first `clients_per_round` places.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sfprompt.platform.config.schema import AvailabilityConfig
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.seeds import stream
from sfprompt.platform.sim.profiles import Profile
from sfprompt.platform.sim.tracefile import read_table

_PHASE_STREAM = 0xD1A1  # keeps the diurnal phases apart from every other seeded stream

Spans = list[tuple[float, float]]  # one client's online intervals in [0, period], sorted


class Schedule:
    """Every client's online intervals within one period, which repeats."""

    def __init__(self, spans: list[Spans], period_s: float) -> None:
        self.period = period_s
        self.spans = [_merged(s) for s in spans]

    def online_until(self, client: int, t: float) -> float | None:
        """When the window `client` is online in at time `t` closes (math.inf: it never
        does), or None when it is offline at `t`."""
        spans, period = self.spans[client], self.period
        if spans == [(0.0, period)]:
            return math.inf
        base = math.floor(t / period) * period
        position = t - base
        for start, end in spans:
            if start <= position < end:
                if end == period and spans[0][0] == 0.0:  # the window runs into the next period
                    return base + period + spans[0][1]
                return base + end
        return None

    def online_at(self, t: float) -> list[int]:
        """The clients online at time `t`, in client order."""
        return [c for c in range(len(self.spans)) if self.online_until(c, t) is not None]

    def first_online(self, t: float) -> float:
        """The earliest time >= t at which some client is online."""
        if self.online_at(t):
            return t
        base = math.floor(t / self.period) * self.period
        position = t - base
        starts = [base + (start if start > position else start + self.period)
                  for spans in self.spans for start, _ in spans]
        if not starts:
            raise SfpromptError("availability: no client is ever online")
        return min(starts)


def _merged(spans: Spans) -> Spans:
    """Sorted, empty ones left out, overlapping or touching ones joined."""
    out: Spans = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def make_schedule(cfg: AvailabilityConfig, profiles: list[Profile],
                  seed: int) -> Schedule | None:
    """The schedule `cfg.model` describes; None for per_round (no clock involved)."""
    if cfg.model == "per_round":
        return None
    if cfg.model == "trace":
        return Schedule(read_intervals(cfg.trace, len(profiles), cfg.period_s), cfg.period_s)
    phases = stream(seed, _PHASE_STREAM).uniform(0.0, cfg.period_s, size=len(profiles))  # (n,)
    return Schedule([_window(float(p), profile.availability, cfg.period_s)
                     for p, profile in zip(phases, profiles)], cfg.period_s)


def _window(phase: float, fraction: float, period: float) -> Spans:
    """[phase, phase + fraction x period) folded into one period."""
    if fraction >= 1.0:
        return [(0.0, period)]
    end = phase + fraction * period
    if end <= period:
        return [(phase, end)]  # empty for fraction 0: Schedule leaves it out
    return [(0.0, end - period), (phase, period)]


INTERVAL_COLUMNS = ("client", "start_s", "end_s")


def read_intervals(path: str | Path, num_clients: int, period_s: float) -> list[Spans]:
    """Online intervals by client from a CSV or Parquet file; every problem is one line
    naming the file, column and row."""
    import pandas as pd  # only traces need it; the rest of platform/ is torch/numpy

    path = Path(path)
    key = "availability.trace"
    df = read_table(key, path, INTERVAL_COLUMNS)
    values = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
              for c in INTERVAL_COLUMNS}  # each (rows,)
    client, start, end = values["client"], values["start_s"], values["end_s"]
    checks = (
        ("client", np.isfinite(client) & (client == np.round(client)) & (client >= 0)
         & (client < num_clients), f"must be a client index in [0, {num_clients})"),
        ("start_s", np.isfinite(start) & (start >= 0), "must be >= 0"),
        ("end_s", np.isfinite(end) & (end > start) & (end <= period_s),
         f"must be after start_s and <= availability.period_s = {period_s:g}"),
    )
    for column, ok, rule in checks:
        if not ok.all():
            row = int(np.argmin(ok))
            raise SfpromptError(f"{key} {path}: column {column!r} row {row} {rule}, "
                                f"got {df[column].tolist()[row]!r}")
    spans: list[Spans] = [[] for _ in range(num_clients)]
    for c, s, e in zip(client.astype(int), start, end):
        spans[c].append((float(s), float(e)))
    return spans
