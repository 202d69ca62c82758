"""A study's HTML page: its trials and front as tables, and optuna.visualization's
Pareto front, optimisation history and parameter importances as figures.

A figure the study cannot show yet (a front needs two or three objectives, importances
two complete trials that differ) is a line saying why, not a missing section.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.visualization import (plot_optimization_history, plot_param_importances,
                                  plot_pareto_front)

from sfprompt.results.report import REPORT_FILE, Section, figure, note, table, write_page
from sfprompt.studies.export import pareto_frame, study_summary, trials_frame
from sfprompt.studies.spec import StudySpec
from sfprompt.studies.storage import load_study, read_study_spec


def _figures(study: optuna.Study, spec: StudySpec) -> list[Section]:
    names = [o.name for o in spec.objectives]
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return [note("Figures", "no complete trial yet")]
    sections = []
    if len(names) in (2, 3):
        sections.append(figure("Pareto front", plot_pareto_front(study, target_names=names)))
    elif len(names) > 3:
        sections.append(note("Pareto front", f"{len(names)} objectives: optuna draws 2 or 3"))
    for i, name in enumerate(names):
        def value(t, i=i) -> float:
            return t.values[i]
        sections.append(figure(f"Optimisation history: {name}", plot_optimization_history(
            study, target=value, target_name=name)))
        try:
            # Seeded, so the same trials draw the same bars (studies/plots.py).
            fig = plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=value, target_name=name)
        except (RuntimeError, ValueError) as err:  # too few complete or distinct trials
            sections.append(note(f"Parameter importances: {name}", str(err)))
        else:
            sections.append(figure(f"Parameter importances: {name}", fig))
    return sections


def write_study_report(study_dir: Path) -> Path:
    """`study_dir/report.html`; reads the storage only, so it may run beside the study."""
    spec = read_study_spec(study_dir)
    study = load_study(spec, study_dir)
    trials = trials_frame(study, spec)
    about = study_summary(trials, spec)
    title = "Trials on the Pareto front" if len(spec.objectives) > 1 else "Best trial"
    sections = [table(title, pareto_frame(trials, spec),
                      f"{spec.description}. {about}" if spec.description else about),
                *_figures(study, spec), table("All trials", trials)]
    return write_page(study_dir / REPORT_FILE, f"Study {spec.name}", sections)
