"""Study plots as PNG: the Pareto front, the optimisation history, parameter importances.

Each plot is one registered function `(study, spec, trials, path) -> bool` that writes
`path` atomically and returns True, or returns False (and logs why) when the study
cannot show it yet: a front needs two objectives, importances need two complete trials
that differ. Figures are built with matplotlib's object API, never pyplot, so no GUI
backend or global figure state is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure

from sfprompt.platform.registry import Registry
from sfprompt.results.plots import save_png
from sfprompt.studies.spec import StudySpec

log = logging.getLogger(__name__)
Plot = Callable[[optuna.Study, StudySpec, pd.DataFrame, Path], bool]
PLOTS: Registry[Plot] = Registry("study plot")
register_plot = PLOTS.register
_PANEL_IN = 4.5  # inches per panel
_DPI = 110


def _label(spec: StudySpec, i: int) -> str:
    o = spec.objectives[i]
    return f"{o.name} ({'higher' if o.direction == 'maximize' else 'lower'} is better)"


@register_plot("pareto_front")
def pareto_front(study: optuna.Study, spec: StudySpec, trials: pd.DataFrame, path: Path) -> bool:
    """First objective against each other one; front trials marked with their numbers."""
    done = trials[trials["state"] == "complete"]
    if len(spec.objectives) < 2 or done.empty:
        log.info("no Pareto front plot: needs two objectives and a complete trial")
        return False
    names = [o.name for o in spec.objectives]
    fig = Figure(figsize=(_PANEL_IN * (len(names) - 1), _PANEL_IN))
    axes = fig.subplots(1, len(names) - 1, squeeze=False)[0]
    best = done[done["pareto"]]
    for ax, i in zip(axes, range(1, len(names))):
        ax.scatter(done[names[0]], done[names[i]], c="0.7", label="trials")
        ax.scatter(best[names[0]], best[names[i]], c="tab:red", label="Pareto front")
        for _, row in best.iterrows():
            ax.annotate(str(row["trial"]), (row[names[0]], row[names[i]]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(_label(spec, 0))
        ax.set_ylabel(_label(spec, i))
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: {len(best)} of {len(done)} complete trials on the front")
    save_png(fig, path, _DPI, layout=True)
    return True


@register_plot("history")
def history(study: optuna.Study, spec: StudySpec, trials: pd.DataFrame, path: Path) -> bool:
    """Each objective by trial number, with the best value so far."""
    done = trials[trials["state"] == "complete"].sort_values("trial")
    if done.empty:
        log.info("no history plot: no complete trial")
        return False
    fig = Figure(figsize=(_PANEL_IN * len(spec.objectives), _PANEL_IN))
    axes = fig.subplots(1, len(spec.objectives), squeeze=False)[0]
    for ax, (i, o) in zip(axes, enumerate(spec.objectives)):
        values = done[o.name].to_numpy(dtype=float)
        best = (np.maximum if o.direction == "maximize" else np.minimum).accumulate(values)
        ax.scatter(done["trial"], values, c="tab:blue", s=14, label="trial")
        ax.step(done["trial"], best, where="post", c="tab:red", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(_label(spec, i))
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: optimisation history")
    save_png(fig, path, _DPI, layout=True)
    return True


@register_plot("importances")
def importances(study: optuna.Study, spec: StudySpec, trials: pd.DataFrame, path: Path) -> bool:
    """fANOVA importance of each searched key for each objective: the share of the
    objective's variance a key explains, which does not depend on the direction. Seeded,
    so an export of the same trials draws the same bars."""
    per_objective = {}
    for i, o in enumerate(spec.objectives):
        try:
            per_objective[o.name] = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError) as err:  # too few complete or distinct trials
            log.info("no importance plot: %s", err)
            return False
    if not any(per_objective.values()):
        log.info("no importance plot: no searched key varied among complete trials")
        return False
    fig = Figure(figsize=(_PANEL_IN * len(per_objective), _PANEL_IN))
    axes = fig.subplots(1, len(per_objective), squeeze=False)[0]
    for ax, (name, scores) in zip(axes, per_objective.items()):
        keys = list(scores)[::-1]  # most important on top
        ax.barh(keys, [scores[k] for k in keys], color="tab:blue")
        ax.set_xlabel(f"importance for {name}")
    fig.suptitle(f"{spec.name}: parameter importances")
    save_png(fig, path, _DPI, layout=True)
    return True
