"""Plots (PNG) of one run and of a comparison, from rounds.parquet frames.

matplotlib's object API without pyplot: no global figure state and no display needed,
so plotting works headless and in parallel workers. Files are written atomically.

    compare: accuracy_vs_round.png, accuracy_vs_bytes.png, accuracy_vs_time.png -- one
             line per method (or variant), the mean over seeds at each round
    run:     accuracy.png (accuracy and loss by round), traffic.png (bytes per round by
             kind), cost.png (accuracy against cumulative bytes and simulated time)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from sfprompt.results.atomic import atomic_open
from sfprompt.results.summary import in_order, variants

MB = 1e6


def save_png(fig: Figure, path: Path, dpi: int = 120, layout: bool = False) -> Path:
    """Write `fig` to `path` as PNG, atomically: cropped to what it draws, or with
    `layout` laid out by `tight_layout` at the figure's own size (the study plots)."""
    if layout:
        fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches=None if layout else "tight")
    return path


def cumulative(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per run: cumulative megabytes (all kinds) next to each round's accuracy."""
    out = rounds.assign(variant=variants(rounds)).sort_values(["variant", "run.seed", "round"])
    out["mb"] = (out["bytes.up"] + out["bytes.down"]) / MB
    out["mb"] = out.groupby(["variant", "run.seed"])["mb"].cumsum()
    return out


def compare_plots(rounds: pd.DataFrame, out_dir: str | Path,
                  order: list[str] | None = None) -> list[Path]:
    """Accuracy against round, cumulative traffic and simulated time, by variant
    (results/summary.py: the method where runs vary in nothing else)."""
    mean = cumulative(rounds).groupby(["variant", "round"], as_index=False)[
        ["accuracy", "mb", "sim.elapsed_seconds"]].mean()
    mean = mean.dropna(subset=["accuracy"])  # rounds without evaluation (eval.every)
    methods = in_order(mean["variant"], order)
    axes = (("round", "round", "accuracy_vs_round.png", False),
            ("mb", "cumulative traffic (MB, log)", "accuracy_vs_bytes.png", True),
            ("sim.elapsed_seconds", "simulated time (s, log)", "accuracy_vs_time.png", True))
    paths = []
    for x, label, name, log in axes:
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        silent = []
        for i, method in enumerate(methods):  # colour by position: the same in every plot
            m = mean[mean["variant"] == method]
            if log and not (m[x] > 0).any():
                silent.append(method)  # nothing to place on a log axis (no traffic)
                continue
            ax.plot(m[x], m["accuracy"], marker="o", markersize=3, label=method, color=f"C{i}")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels would overlap
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=label, ylabel="test accuracy (mean over seeds)")
        if silent:
            ax.set_title(f"not shown (zero on this axis): {', '.join(silent)}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save_png(fig, Path(out_dir) / name))
    return paths


def run_plots(rounds: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The single-run plots of the module doc."""
    rounds = rounds.sort_values("round")
    out_dir = Path(out_dir)
    evaluated = rounds["accuracy"].notna()  # eval.every leaves the others NaN

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(rounds["round"][evaluated], rounds["accuracy"][evaluated], marker="o", color="C0")
    ax.set(xlabel="round", ylabel="test accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax = ax.twinx()
    loss_ax.plot(rounds["round"][evaluated], rounds["loss"][evaluated], marker="s", color="C1")
    loss_ax.set_ylabel("test loss", color="C1")
    paths = [save_png(fig, out_dir / "accuracy.png")]

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    kinds = [c for c in rounds.columns if c.startswith("bytes.")
             and c not in ("bytes.up", "bytes.down") and rounds[c].sum() > 0]
    bottom = pd.Series(0.0, index=rounds.index)
    for column in kinds:
        ax.bar(rounds["round"], rounds[column] / MB, bottom=bottom, label=column[len("bytes."):])
        bottom = bottom + rounds[column] / MB
    ax.set(xlabel="round", ylabel="MB per round (all clients)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if kinds:
        ax.legend(fontsize=8)
    paths.append(save_png(fig, out_dir / "traffic.png"))

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    mb = ((rounds["bytes.up"] + rounds["bytes.down"]) / MB).cumsum()
    left.plot(mb[evaluated], rounds["accuracy"][evaluated], marker="o")
    left.set(xlabel="cumulative traffic (MB)", ylabel="test accuracy")
    right.plot(rounds["sim.elapsed_seconds"][evaluated], rounds["accuracy"][evaluated],
               marker="o")
    right.set(xlabel="simulated time (s)", ylabel="test accuracy")
    paths.append(save_png(fig, out_dir / "cost.png"))
    return paths
