"""How a study searches: Optuna samplers and trial pruners, by name.

A study file picks one of each by name and may pass constructor options as TOML
values (`population_size = 8` for nsga2, `n_warmup_steps = 1` for median). Options
are checked against the constructor's signature when the file is read, so a typo fails
the study before its first trial, naming the key. "Prune" means data pruning in this
project; Optuna's early stopping of trials is always `trial_pruner`.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import optuna

from sfprompt.platform.errors import ConfigError
from sfprompt.platform.registry import Registry

SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry("sampler", {
    "tpe": optuna.samplers.TPESampler,        # single and multi-objective (MOTPE)
    "nsga2": optuna.samplers.NSGAIISampler,   # multi-objective genetic search
    "nsga3": optuna.samplers.NSGAIIISampler,  # many (> 3) objectives
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,          # Gaussian process; few, expensive trials
    "qmc": optuna.samplers.QMCSampler,        # quasi-random coverage of the space
    "bruteforce": optuna.samplers.BruteForceSampler,  # every point of a discrete space once
})

TRIAL_PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry("trial pruner", {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
})

# Set by the study itself, not by options.
_RESERVED = {"sampler": ("seed",), "trial_pruner": ()}


def check_options(section: str, name: str, registry: Registry[type],
                  options: dict[str, Any]) -> None:
    """Raise ConfigError unless `name` is registered and takes every option by keyword."""
    params = inspect.signature(registry.check(f"{section}.name", name).__init__).parameters
    accepted = [p for p in params if p != "self" and p not in _RESERVED[section]]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{section}.{key}: not an option of {name} "
                              f"(options: {', '.join(accepted) or 'none'})")


def _build(section: str, name: str, registry: Registry[type], options: dict[str, Any]):
    try:
        with warnings.catch_warnings():  # a registered name is chosen, experimental or not
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return registry[name](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}: {name} rejects {options}: {err}") from None


def make_sampler(name: str, options: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler. Seeded, so a study's first trials are reproducible; after a
    resume the sampler continues from the stored trials, not from the seed's stream."""
    return _build("sampler", name, SAMPLERS, {**options, "seed": seed})


def make_trial_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    return _build("trial_pruner", name, TRIAL_PRUNERS, options)
