"""A study, as written in a TOML file: what to vary, what to optimise, how to search.

    name = "split-prompt-keep"            # default: the file's stem
    config = "base.toml"                  # optional base config, relative to this file

    [fixed]                               # settings of every trial (dotted or nested)
    "fed.rounds" = 2
    [space]                               # dotted config key -> range or choices (space.py)
    "split.head_blocks" = { low = 0, high = 4 }
    "prompt.length" = { choices = [0, 5, 10, 20] }
    [[objectives]]                        # one: single-objective, more: Pareto front
    metric = "accuracy"                   # a rounds column or bytes.total
    direction = "maximize"                # reduce = "last" | "sum" | ... (objectives.py)

    [budget]       n_trials = 20, timeout_s = 0 (seconds of one session; 0 = none)
    [sampler]      name = "tpe", seed = 0, other keys are the sampler's options
    [trial_pruner] name = "none", other keys are its options (single objective only)
    [storage]      kind = "sqlite" | "journal", or url = an Optuna RDB URL
    [parallel]     trials = 1 (> 1 runs trials as Ray tasks), cpus_per_trial = 1
    [feasibility]  memory_fraction = 1.0 (share of a client's memory a split may use; 0 = off)

Every problem is a ConfigError naming the key, raised when the file is read, before
any trial runs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from sfprompt.platform.config.dotted import flatten
from sfprompt.platform.errors import ConfigError
from sfprompt.studies.objectives import DIRECTIONS, REDUCERS, Objective, default_reduce
from sfprompt.studies.space import Param, parse_fixed, parse_space, table, typed
from sfprompt.studies.strategies import SAMPLERS, TRIAL_PRUNERS, check_options

STORAGE_KINDS = ("sqlite", "journal")


@dataclass(frozen=True)
class StudySpec:
    name: str
    space: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    fixed: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    description: str = ""
    n_trials: int = 20
    timeout_s: float = 0.0
    sampler: str = "tpe"
    seed: int = 0
    sampler_options: dict[str, Any] = field(default_factory=dict)
    trial_pruner: str = "none"
    trial_pruner_options: dict[str, Any] = field(default_factory=dict)
    storage: str = "sqlite"
    storage_url: str = ""
    parallel: int = 1
    cpus_per_trial: float = 1.0
    memory_fraction: float = 1.0

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.space}

    def to_dict(self) -> dict[str, Any]:
        """The TOML tables that `spec_from_dict` reads back into an equal spec."""
        return {
            "name": self.name, "description": self.description,
            "fixed": dict(self.fixed),
            "space": {p.key: p.to_dict() for p in self.space},
            "objectives": [{"metric": o.metric, "direction": o.direction, "reduce": o.reduce}
                           for o in self.objectives],
            "budget": {"n_trials": self.n_trials, "timeout_s": self.timeout_s},
            "sampler": {"name": self.sampler, "seed": self.seed, **self.sampler_options},
            "trial_pruner": {"name": self.trial_pruner, **self.trial_pruner_options},
            "storage": {"kind": self.storage, "url": self.storage_url},
            "parallel": {"trials": self.parallel, "cpus_per_trial": self.cpus_per_trial},
            "feasibility": {"memory_fraction": self.memory_fraction},
        }


# ---------------------------------------------------------------- reading


def load_spec(path: str | Path) -> StudySpec:
    """Read a study file; errors are one line starting with the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path}: not found")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"study file {path}: invalid TOML ({err})") from None
    values.setdefault("name", path.stem)
    base = values.pop("config", None)
    try:
        if base is not None:
            base_path = path.parent / typed(base, str, "config")
            values["fixed"] = {**_base_settings(base_path), **flatten(values.get("fixed", {}))}
        return spec_from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"study file {path}: {err}") from None


def _base_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config: file {path} not found")
    try:
        return flatten(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: {path} is invalid TOML ({err})") from None


def spec_from_dict(values: dict[str, Any]) -> StudySpec:
    """Build and check a StudySpec from the tables of a study file."""
    sections = table(values, "", ("name", "description", "fixed", "space", "objectives",
                                  "budget", "sampler", "trial_pruner", "storage", "parallel",
                                  "feasibility"))
    budget = table(sections.get("budget", {}), "budget", ("n_trials", "timeout_s"))
    storage = table(sections.get("storage", {}), "storage", ("kind", "url"))
    parallel = table(sections.get("parallel", {}), "parallel", ("trials", "cpus_per_trial"))
    feasibility = table(sections.get("feasibility", {}), "feasibility", ("memory_fraction",))
    sampler = dict(table(sections.get("sampler", {}), "sampler", None))
    trial_pruner = dict(table(sections.get("trial_pruner", {}), "trial_pruner", None))
    sampler_name = typed(sampler.pop("name", "tpe"), str, "sampler.name")
    seed = typed(sampler.pop("seed", 0), int, "sampler.seed")
    pruner_name = typed(trial_pruner.pop("name", "none"), str, "trial_pruner.name")
    check_options("sampler", sampler_name, SAMPLERS, sampler)
    check_options("trial_pruner", pruner_name, TRIAL_PRUNERS, trial_pruner)

    fixed, base = parse_fixed(flatten(sections.get("fixed", {})))
    spec = StudySpec(
        name=typed(sections.get("name", "study"), str, "name"),
        description=typed(sections.get("description", ""), str, "description"),
        fixed=fixed,
        space=parse_space(sections.get("space", {}), fixed, base),
        objectives=_parse_objectives(sections.get("objectives", [])),
        n_trials=typed(budget.get("n_trials", 20), int, "budget.n_trials"),
        timeout_s=float(typed(budget.get("timeout_s", 0), (int, float), "budget.timeout_s")),
        sampler=sampler_name, seed=seed, sampler_options=sampler,
        trial_pruner=pruner_name, trial_pruner_options=trial_pruner,
        storage=typed(storage.get("kind", "sqlite"), str, "storage.kind"),
        storage_url=typed(storage.get("url", ""), str, "storage.url"),
        parallel=typed(parallel.get("trials", 1), int, "parallel.trials"),
        cpus_per_trial=float(typed(parallel.get("cpus_per_trial", 1), (int, float),
                                   "parallel.cpus_per_trial")),
        memory_fraction=float(typed(feasibility.get("memory_fraction", 1.0), (int, float),
                                    "feasibility.memory_fraction")),
    )
    _check_ranges(spec)
    return spec


def _check_ranges(spec: StudySpec) -> None:
    for ok, key, reason in (
        (spec.name not in ("", ".", "..") and Path(spec.name).name == spec.name, "name",
         f"must be a plain name, got {spec.name!r}"),
        (spec.n_trials >= 1, "budget.n_trials", f"must be >= 1, got {spec.n_trials}"),
        (spec.timeout_s >= 0, "budget.timeout_s", f"must be >= 0, got {spec.timeout_s}"),
        (spec.storage in STORAGE_KINDS, "storage.kind",
         f"unknown {spec.storage!r} (known: {', '.join(STORAGE_KINDS)})"),
        (spec.parallel >= 1, "parallel.trials", f"must be >= 1, got {spec.parallel}"),
        (spec.cpus_per_trial > 0, "parallel.cpus_per_trial",
         f"must be > 0, got {spec.cpus_per_trial}"),
        (0 <= spec.memory_fraction <= 1, "feasibility.memory_fraction",
         f"must be in [0, 1], got {spec.memory_fraction}"),
        (spec.trial_pruner == "none" or len(spec.objectives) == 1, "trial_pruner.name",
         f"{spec.trial_pruner} needs a single objective, the study has {len(spec.objectives)}"),
    ):
        if not ok:
            raise ConfigError(f"{key}: {reason}")


def _parse_objectives(items: Any) -> tuple[Objective, ...]:
    items = typed(items, list, "objectives")
    if not items:
        raise ConfigError("objectives: needs at least one [[objectives]] table")
    out: list[Objective] = []
    for i, item in enumerate(items):
        where = f"objectives[{i}]"
        table(item, where, ("metric", "direction", "reduce"))
        for name in ("metric", "direction"):
            if name not in item:
                raise ConfigError(f"{where}.{name}: missing")
        metric = typed(item["metric"], str, f"{where}.metric")
        direction = typed(item["direction"], str, f"{where}.direction")
        reduce = typed(item.get("reduce", default_reduce(metric)), str, f"{where}.reduce")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}.direction: must be maximize or minimize, got {direction!r}")
        REDUCERS.check(f"{where}.reduce", reduce)
        objective = Objective(metric, direction, reduce)
        if objective.name in [o.name for o in out]:
            raise ConfigError(f"{where}.metric: {objective.name} is already an objective")
        out.append(objective)
    return tuple(out)


