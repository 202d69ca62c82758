"""A study's results as files: trials.parquet, the Pareto front (Parquet and Markdown)
and plots, all written atomically into the study directory.

`trials.parquet` has one row per trial: `trial`, `state`, the objectives by name (set
for complete trials only; a pruned trial's partial value is not a result), the searched
keys as dotted columns (the names `rounds.parquet` uses, so the two join), `pareto`,
`run_id` (its run directory under `runs/`), `duration_seconds`, start and end times,
and the user attrs (`fail_reason`, `infeasible`, `interrupted`, `retry_of`, ...).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sfprompt.results.atomic import atomic_write_text, write_parquet
from sfprompt.results.markdown import markdown_table
from sfprompt.studies.plots import PLOTS
from sfprompt.studies.spec import StudySpec
from sfprompt.studies.storage import load_study, read_study_spec

log = logging.getLogger(__name__)
TRIALS_FILE, PARETO_FILE, PARETO_MD, PLOTS_DIR = ("trials.parquet", "pareto.parquet",
                                                  "pareto.md", "plots")


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal complete trials (the best one for a single objective)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


def trials_frame(study: optuna.Study, spec: StudySpec) -> pd.DataFrame:
    on_front = {t.number for t in front(study)}
    names = [o.name for o in spec.objectives]
    keys = [p.key for p in spec.space]
    rows = []
    for t in study.get_trials(deepcopy=False):
        done = t.state == TrialState.COMPLETE
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        rows.append({
            "trial": t.number, "state": t.state.name.lower(),
            **{n: (t.values[i] if done else math.nan) for i, n in enumerate(names)},
            **{k: t.params.get(k) for k in keys},
            "pareto": t.number in on_front, "run_id": t.user_attrs.get("run_id", ""),
            "duration_seconds": duration,
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
            **{k: v for k, v in sorted(t.user_attrs.items()) if k != "run_id"},
        })
    columns = ["trial", "state", *names, *keys, "pareto", "run_id", "duration_seconds",
               "started", "finished"]
    extra = sorted({c for row in rows for c in row} - set(columns))
    return pd.DataFrame(rows, columns=columns + extra)


def pareto_frame(trials: pd.DataFrame, spec: StudySpec) -> pd.DataFrame:
    """The front, best first by the first objective."""
    first = spec.objectives[0]
    columns = ["trial", *[o.name for o in spec.objectives], *[p.key for p in spec.space], "run_id"]
    out = trials.loc[trials["pareto"], columns]
    return out.sort_values(first.name, ascending=first.direction == "minimize", kind="stable")


def _frame_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)
    rows = ([cell(v) for v in row] for row in df.itertuples(index=False))
    return markdown_table(list(df.columns), rows) + "\n"


def study_summary(trials: pd.DataFrame, spec: StudySpec) -> str:
    """"Objectives: maximize accuracy, .... Trials: 5 complete, 1 fail." """
    goals = ", ".join(f"{o.direction} {o.name}" for o in spec.objectives)
    states = ", ".join(f"{n} {s}" for s, n in trials["state"].value_counts().sort_index().items())
    return f"Objectives: {goals}. Trials: {states or 'none yet'}."


def pareto_markdown(pareto: pd.DataFrame, trials: pd.DataFrame, spec: StudySpec) -> str:
    title = "Pareto front" if len(spec.objectives) > 1 else "Best trial"
    about = f"{spec.description}\n\n" if spec.description else ""
    return (f"# {title} of study {spec.name}\n\n{about}"
            f"{study_summary(trials, spec)}\n\n" + _frame_table(pareto))


def export_study(study_dir: str | Path) -> list[Path]:
    """Write every export of the study in `study_dir`; returns the files written.
    Reads the storage only, so it may run while the study does (a snapshot)."""
    study_dir = Path(study_dir)
    spec = read_study_spec(study_dir)
    study = load_study(spec, study_dir)
    trials = trials_frame(study, spec)
    pareto = pareto_frame(trials, spec)
    written = [study_dir / TRIALS_FILE, study_dir / PARETO_FILE, study_dir / PARETO_MD]
    write_parquet(written[0], trials)
    write_parquet(written[1], pareto)
    atomic_write_text(written[2], pareto_markdown(pareto, trials, spec))
    (study_dir / PLOTS_DIR).mkdir(exist_ok=True)
    for name, plot in PLOTS.items():
        path = study_dir / PLOTS_DIR / f"{name}.png"
        if plot(study, spec, trials, path):
            written.append(path)
    return written
