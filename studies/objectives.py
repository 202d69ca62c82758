"""Objectives: one number per trial, reduced from the rows of its `rounds.parquet`.

An objective names a rounds column (`accuracy`, `flops.client`, `sim.elapsed_seconds`)
or a derived one (`bytes.total` = `bytes.up + bytes.down`), a direction, and how the
rounds reduce to one value. The default reduction follows what the column means: a
per-round cost (bytes, FLOPs, a round's seconds) is summed over the run, a state
(accuracy, loss, the cumulative simulated clock) is read at the last round. The same
reduction over the rows seen so far is the intermediate value a trial pruner watches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.registry import Registry

Reduce = Callable[[Sequence[float]], float]

REDUCERS: Registry[Reduce] = Registry("reduction", {
    "last": lambda values: values[-1],
    "sum": lambda values: math.fsum(values),
    "mean": lambda values: math.fsum(values) / len(values),
    "max": max,
    "min": min,
})

# Columns computed from a rounds row; the names a user would reach for first.
DERIVED: dict[str, Callable[[dict], float]] = {
    "bytes.total": lambda row: row["bytes.up"] + row["bytes.down"],
}

# Per-round costs add up over a run; everything else is a state read at the end.
_SUMMED_PREFIXES = ("bytes.", "flops.")
_SUMMED_COLUMNS = ("sim.round_seconds", "wall_seconds", "samples", "kept_samples")

DIRECTIONS = ("maximize", "minimize")


def default_reduce(metric: str) -> str:
    summed = metric.startswith(_SUMMED_PREFIXES) or metric in _SUMMED_COLUMNS
    return "sum" if summed else "last"


@dataclass(frozen=True)
class Objective:
    metric: str     # rounds column or DERIVED name
    direction: str  # "maximize" | "minimize"
    reduce: str     # REDUCERS key

    @property
    def name(self) -> str:
        """Column name in trials.parquet: the metric itself under its usual reduction,
        so a study's `accuracy` joins a run's `accuracy` without renaming."""
        return self.metric if self.reduce == default_reduce(self.metric) else \
            f"{self.metric}.{self.reduce}"

    def column(self, row: dict) -> float:
        if self.metric in DERIVED:
            return float(DERIVED[self.metric](row))
        if self.metric not in row:
            known = ", ".join(sorted([*row, *DERIVED]))
            raise SfpromptError(f"objectives: metric {self.metric!r} is not a rounds column "
                                f"(columns: {known})")
        return float(row[self.metric])

    def value(self, rows: Sequence[dict]) -> float:
        """The objective over `rows` (all rounds of a run, or those done so far)."""
        if not rows:
            raise SfpromptError(f"objectives: {self.name} needs at least one round")
        return REDUCERS[self.reduce]([self.column(row) for row in rows])
