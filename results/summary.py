"""The comparison table: methods side by side over seeds, from their rounds.parquet.

A comparison directory holds one run directory per method and seed (platform/
compare.py), or any completed runs put there (`sfprompt run run.out_dir=DIR`): runs of a
method that differ in other settings are told apart as its variants (`name_variants`),
so one directory compares codecs, keep ratios or split points as it compares methods.
Each run is reduced to one row of metrics (`run_metrics`), and the runs of a variant to
mean and standard deviation over seeds (`summarise`):

    accuracy.final / .best       last round's and best round's test accuracy
    accuracy.change              final accuracy minus that of the last round evaluated
                                 CHANGE_ROUNDS rounds or more before it: whether the run
                                 has stopped moving (NaN in a run that short)
    rounds.to_target             first round at or above the target accuracy (mean
                                 over the seeds that reach it; `target.reached` counts them)
    bytes.to_target, sim.to_target  cumulative bytes (all kinds) and simulated seconds then
    flops.client.to_target       cumulative client FLOPs then (the paper's claim is a
                                 ratio at equal accuracy)
    flops.client.round / .total  client FLOPs per round (mean) and over the run; server too
    bytes.round                  per-round traffic (every kind but the one-off frozen_download)
    bytes.total, bytes.<kind>.total  all traffic of the run, and by kind
    sim.elapsed                  simulated seconds of the whole run

and `<metric>_vs_fl` divides a method's mean by fl's. The target defaults to 0.8 x the
best accuracy any run reached. Standard deviations are over seeds (ddof 1, so one seed
gives none).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sfprompt.platform.config.dotted import flatten
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.results.atomic import atomic_write_text, write_parquet
from sfprompt.results.markdown import markdown_table
from sfprompt.results.tables import ROUNDS, read_rounds

# Settings in which runs of one variant may differ: the seed, and where they were written.
SAME_VARIANT = ("run.seed", "run.run_id", "run.out_dir")
TARGET_FRACTION = 0.8  # default target: this fraction of the best accuracy of any run
RATIO_METRICS = ("flops.client.round", "flops.client.total", "bytes.round", "bytes.total",
                 "flops.client.to_target", "bytes.to_target")
MB, GFLOP = 1e6, 1e9
CHANGE_ROUNDS = 5  # "converged": accuracy moved under half a point over this many rounds

log = logging.getLogger(__name__)


def _completed(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def load_compare(compare_dir: str | Path) -> pd.DataFrame:
    """All rounds of the completed runs in `compare_dir` (one run per subdirectory), in
    one frame. A run still going, failed or interrupted would compare fewer rounds, so
    it is left out with a warning."""
    runs = sorted(p for p in Path(compare_dir).iterdir() if (p / ROUNDS.filename).is_file())
    for p in runs:
        if not _completed(p):
            log.warning("%s: not completed (run.json), left out of the comparison", p)
    runs = [p for p in runs if _completed(p)]
    if not runs:
        raise SfpromptError(f"{compare_dir}: no completed run directories with {ROUNDS.filename}")
    frames = [read_rounds(p).assign(run_dir=p.name) for p in runs]
    for p, frame in zip(runs, frames):
        for column in ("train.method", "run.seed"):
            if column not in frame.columns:
                raise SfpromptError(f"{p / ROUNDS.filename} lacks column {column!r}")
    name_variants(frames)
    return pd.concat(frames, ignore_index=True)


def name_variants(frames: list[pd.DataFrame]) -> None:
    """Add column `variant` to each run's rounds: its method, followed by each setting in
    which that method's runs differ, e.g. `sfprompt compress.activations=int8`. Settings
    that differ only between methods (centralized runs as one client) name nothing."""
    keys = [k for k in flatten(Config()) if k not in SAME_VARIANT
            and all(k in frame.columns for frame in frames)]
    settings = [{k: frame[k].iloc[0] for k in keys} for frame in frames]
    for frame, setting in zip(frames, settings):
        method = setting["train.method"]
        peers = [s for s in settings if s["train.method"] == method]
        differing = [k for k in keys if len({repr(s[k]) for s in peers}) > 1]
        frame["variant"] = " ".join([method, *(f"{k}={setting[k]}" for k in differing)])


def variants(rounds: pd.DataFrame) -> pd.Series:
    """The variant of each row (the method where no variants were named)."""
    return rounds["variant"] if "variant" in rounds.columns else rounds["train.method"]


def in_order(names, order: Sequence[str] | None) -> list[str]:
    """Variant names sorted, or grouped by method in the given order of methods."""
    names = sorted(set(names))
    if not order:
        return names
    return [n for method in order for n in names if n.split(" ", 1)[0] == method]


def default_target(rounds: pd.DataFrame) -> float:
    return TARGET_FRACTION * float(rounds["accuracy"].max())


def _byte_kinds(rounds: pd.DataFrame) -> list[str]:
    return [c[len("bytes."):] for c in rounds.columns
            if c.startswith("bytes.") and c not in ("bytes.up", "bytes.down")]


def run_metrics(run: pd.DataFrame, target: float) -> dict:
    """One run's rounds reduced to the metrics of the module doc."""
    run = run.sort_values("round")
    total = run["bytes.up"] + run["bytes.down"]
    reached = np.flatnonzero(run["accuracy"].to_numpy() >= target)
    first = int(reached[0]) if len(reached) else None
    at = (lambda series: float(series.iloc[first])) if first is not None else (lambda s: math.nan)
    final = float(run["accuracy"].iloc[-1])
    earlier = run[(run["round"] <= run["round"].iloc[-1] - CHANGE_ROUNDS)
                  & run["accuracy"].notna()]
    out = {"accuracy.final": final,
           "accuracy.best": float(run["accuracy"].max()),
           "accuracy.change": final - float(earlier["accuracy"].iloc[-1]) if len(earlier)
                              else math.nan,
           "target.reached": first is not None,
           "rounds.to_target": at(run["round"]),
           "bytes.to_target": at(total.cumsum()),
           "sim.to_target": at(run["sim.elapsed_seconds"]),
           "flops.client.to_target": at(run["flops.client"].cumsum()),
           "bytes.round": float((total - run.get("bytes.frozen_download", 0)).mean()),
           "bytes.total": float(total.sum()),
           "sim.elapsed": float(run["sim.elapsed_seconds"].iloc[-1]),
           "rounds": len(run)}
    for side in ("client", "server"):
        out[f"flops.{side}.round"] = float(run[f"flops.{side}"].mean())
        out[f"flops.{side}.total"] = float(run[f"flops.{side}"].sum())
    for kind in _byte_kinds(run):
        out[f"bytes.{kind}.total"] = float(run[f"bytes.{kind}"].sum())
    return out


def summarise(rounds: pd.DataFrame, target: float | None = None,
              order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant (column `method`; `order` lists methods): every run metric's
    mean and std over seeds, `runs`, `target` and `target.reached`, and the ratios to
    fl (when fl ran)."""
    target = default_target(rounds) if target is None else target
    groups = rounds.groupby([variants(rounds), "run.seed"])
    per_run = pd.DataFrame([{"method": method, "seed": seed, **run_metrics(run, target)}
                            for (method, seed), run in groups])
    methods = in_order(per_run["method"], order)
    rows = []
    for method in methods:
        runs = per_run[per_run["method"] == method]
        if runs.empty:
            continue
        row = {"method": method, "runs": len(runs), "target": target,
               "target.reached": int(runs["target.reached"].sum())}
        for metric in per_run.columns.drop(["method", "seed", "target.reached"]):
            row[f"{metric}.mean"] = float(runs[metric].mean())  # nan-skipping
            row[f"{metric}.std"] = float(runs[metric].std(ddof=1))
        rows.append(row)
    table = pd.DataFrame(rows)
    if "fl" in set(table["method"]):
        fl = table.set_index("method").loc["fl"]
        for metric in RATIO_METRICS:
            table[f"{metric}_vs_fl"] = table[f"{metric}.mean"] / fl[f"{metric}.mean"]
    return table


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean / scale:{'+' if sign else ''}.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std / scale:.{digits}f}"


def _ratio(row: pd.Series, metric: str) -> str:
    value = row.get(f"{metric}_vs_fl", math.nan)
    return "-" if value is None or math.isnan(value) else f"{value:.4g}x"


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The table a person reads: the headline columns as text, scaled to MB and GFLOP
    (compare.md and the HTML report)."""
    header = ["method", "runs", "final acc", "best acc",
              f"change over last {CHANGE_ROUNDS} rounds", "rounds to target", "MB to target",
              "client GFLOP to target", "at target vs fl (FLOPs, traffic)",
              "client GFLOP/round", "client GFLOP total", "client FLOPs vs fl", "MB/round",
              "MB total", "traffic vs fl", "one-off MB", "sim s"]
    rows = []
    for _, r in table.iterrows():
        def m(metric: str, scale: float = 1.0, digits: int = 3, sign: bool = False, r=r) -> str:
            return _pm(r[f"{metric}.mean"], r[f"{metric}.std"], scale, digits, sign)
        cells = [r["method"], str(r["runs"]), m("accuracy.final"), m("accuracy.best"),
                 m("accuracy.change", sign=True),
                 f"{m('rounds.to_target', digits=1)} ({r['target.reached']}/{r['runs']})",
                 m("bytes.to_target", MB, 1), m("flops.client.to_target", GFLOP, 1),
                 f"{_ratio(r, 'flops.client.to_target')}, {_ratio(r, 'bytes.to_target')}",
                 m("flops.client.round", GFLOP, 1),
                 m("flops.client.total", GFLOP, 1), _ratio(r, "flops.client.total"),
                 m("bytes.round", MB, 2), m("bytes.total", MB, 1), _ratio(r, "bytes.total"),
                 m("bytes.frozen_download.total", MB, 1), m("sim.elapsed", 1.0, 1)]
        rows.append(cells)
    return pd.DataFrame(rows, columns=header)


def about(table: pd.DataFrame) -> str:
    """The sentence that goes above the headline table."""
    return (f"Target accuracy {table['target'].iloc[0]:.4f}; mean ± std over seeds; "
            "'rounds/MB to target' over the seeds that reach it.")


def to_markdown(table: pd.DataFrame) -> str:
    text = headline(table)
    return (about(table) + "\n\n"
            + markdown_table(list(text.columns), text.itertuples(index=False)) + "\n")


def write_compare(compare_dir: str | Path, table: pd.DataFrame) -> None:
    """Write `table` (summarise's) as compare.parquet and compare.md in `compare_dir`."""
    compare_dir = Path(compare_dir)
    write_parquet(compare_dir / "compare.parquet", table)
    atomic_write_text(compare_dir / "compare.md", to_markdown(table))
