"""Validation of a whole `Config`: ranges, names in the registries, combinations.

The first bad key raises `ConfigError` naming it. This module sits above every
registry it checks names against (methods, datasets, profile sources, codecs, ...),
so those import only the schema, never this.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from sfprompt.platform.config.schema import (AVAILABILITY_MODELS, BACKENDS, BODY_PLACEMENTS,
                                             EVAL_WORKERS, LOCAL_CLASSIFIERS, NETWORK_MODES,
                                             PRECISIONS, Config)
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.registry import Registry


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {reason}")


def _check_choice(key: str, value: str, choices: Registry | tuple[str, ...]) -> None:
    """A name from a registry, or one of the schema's fixed choices (backends, ...)."""
    if isinstance(choices, Registry):
        choices.check(key, value)
    else:
        _check(value in choices, key, f"unknown {value!r} (known: {', '.join(sorted(choices))})")


def validate(cfg: Config) -> None:
    """Range and cross-field checks. The registries are imported here, not at module
    load: they bring torch and timm, and importing the config should not."""
    from sfprompt.platform.data.datasets import DATASETS
    from sfprompt.platform.data.partition import PARTITIONERS
    from sfprompt.platform.fed.aggregation import AGGREGATIONS
    from sfprompt.platform.method.pruning import SCORES
    from sfprompt.platform.method.registry import METHODS
    from sfprompt.platform.method.trainable import OPTIMIZERS
    from sfprompt.platform.model.weights import model_depth, model_patch_size
    from sfprompt.platform.wire.codecs import CODECS

    _check(cfg.model.img_size > 0, "model.img_size", f"must be positive, got {cfg.model.img_size}")
    run_id = cfg.run.run_id
    _check(run_id == "" or (run_id not in (".", "..") and Path(run_id).name == run_id),
           "run.run_id", f"must be a plain directory name, got {run_id!r}")
    for key in ("split.head_blocks", "split.tail_blocks", "prompt.length",
                "train.local_epochs", "train.split_epochs", "data.max_samples", "eval.max_samples",
                "run.threads", "ray.num_client_actors"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value >= 0, key, f"must be >= 0, got {value}")
    for key in ("train.batch_size", "train.eval_batch_size", "eval.every", "fed.rounds",
                "fed.num_clients", "fed.clients_per_round", "fed.shards_per_client",
                "fed.min_samples", "ray.clients_per_call"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value >= 1, key, f"must be >= 1, got {value}")
    _check(0.0 < cfg.prune.keep <= 1.0, "prune.keep", f"must be in (0, 1], got {cfg.prune.keep}")
    _check_choice("train.local_classifier", cfg.train.local_classifier, LOCAL_CLASSIFIERS)
    skip = cfg.prune.skip_hardest
    _check(0.0 <= skip < 1.0 and cfg.prune.keep + skip <= 1.0 + 1e-9, "prune.skip_hardest",
           f"must be in [0, 1) with prune.keep + prune.skip_hardest <= 1, got {skip} "
           f"(prune.keep = {cfg.prune.keep})")
    _check(0.0 < cfg.data.test_fraction < 1.0, "data.test_fraction",
           f"must be in (0, 1), got {cfg.data.test_fraction}")
    _check(cfg.fed.alpha > 0 and math.isfinite(cfg.fed.alpha), "fed.alpha",
           f"must be a positive number, got {cfg.fed.alpha}")
    _check(cfg.train.lr > 0 and math.isfinite(cfg.train.lr), "train.lr",
           f"must be a positive number, got {cfg.train.lr}")
    _check(cfg.train.prompt_lr >= 0 and math.isfinite(cfg.train.prompt_lr), "train.prompt_lr",
           f"must be >= 0, got {cfg.train.prompt_lr}")
    _check(cfg.train.local_lr_scale >= 0 and math.isfinite(cfg.train.local_lr_scale),
           "train.local_lr_scale", f"must be a number >= 0, got {cfg.train.local_lr_scale}")
    _check(cfg.train.pretrained_lr >= 0 and math.isfinite(cfg.train.pretrained_lr),
           "train.pretrained_lr", f"must be >= 0, got {cfg.train.pretrained_lr}")
    _check(cfg.train.weight_decay >= 0 and math.isfinite(cfg.train.weight_decay),
           "train.weight_decay", f"must be a number >= 0, got {cfg.train.weight_decay}")
    _check(0 <= cfg.train.momentum < 1, "train.momentum",
           f"must be in [0, 1), got {cfg.train.momentum}")
    _validate_server_optimizer(cfg)
    _check(cfg.ray.timeout_s > 0 and math.isfinite(cfg.ray.timeout_s), "ray.timeout_s",
           f"must be a positive number of seconds, got {cfg.ray.timeout_s}")
    _check(cfg.fed.clients_per_round <= cfg.fed.num_clients, "fed.clients_per_round",
           f"{cfg.fed.clients_per_round} exceeds fed.num_clients = {cfg.fed.num_clients}")
    _check(cfg.split.local_pool in ("auto", "mean", "model"), "split.local_pool",
           f"must be auto, mean or model, got {cfg.split.local_pool!r}")
    for key, value, choices in (
        ("data.name", cfg.data.name, DATASETS),
        ("fed.partition", cfg.fed.partition, PARTITIONERS),
        ("fed.aggregation", cfg.fed.aggregation, AGGREGATIONS),
        ("prune.score", cfg.prune.score, SCORES),
        ("train.method", cfg.train.method, METHODS),
        ("train.optimizer", cfg.train.optimizer, OPTIMIZERS),
        ("run.backend", cfg.run.backend, BACKENDS),
        ("run.precision", cfg.run.precision, PRECISIONS),
        ("eval.worker", cfg.eval.worker, EVAL_WORKERS),
        ("ray.body", cfg.ray.body, BODY_PLACEMENTS),
        ("compress.activations", cfg.compress.activations, CODECS),
        ("compress.gradients", cfg.compress.gradients, CODECS),
    ):
        _check_choice(key, value, choices)
    depth, patch = model_depth(cfg.model.name), model_patch_size(cfg.model.name)
    # timm floors the patch grid, so the rest of every row and column would be dropped.
    _check(cfg.model.img_size % patch == 0, "model.img_size",
           f"{cfg.model.img_size} is not a multiple of the {patch} px patches of {cfg.model.name}")
    used = cfg.split.head_blocks + cfg.split.tail_blocks
    _check(used <= depth, "split",
           f"head_blocks + tail_blocks = {used} exceeds the {depth} blocks of {cfg.model.name}")
    _validate_plan(cfg, depth, METHODS[cfg.train.method])
    _validate_clock(cfg)
    _validate_faults(cfg)
    _validate_body(cfg, METHODS[cfg.train.method])
    _check(not cfg.log.tensorboard or importlib.util.find_spec("tensorboard") is not None,
           "log.tensorboard", "needs the tensorboard package: pip install 'sfprompt[tensorboard]'")


def _validate_plan(cfg: Config, depth: int, method) -> None:
    """split.plan (model/plans.py): the splits it may give, whether they can share one
    model, and a method whose clients can hold different splits."""
    from sfprompt.platform.model.plans import PLANS, parse_splits, parse_tiers, plan_splits_of
    from sfprompt.platform.sim.profiles import TIERS
    _check_choice("split.plan", cfg.split.plan, PLANS)
    tiers = parse_tiers(cfg.split.tiers)  # each raises ConfigError naming its key
    parse_splits("split.candidates", cfg.split.candidates)
    _check(0 < cfg.split.memory_fraction <= 1, "split.memory_fraction",
           f"must be in (0, 1], got {cfg.split.memory_fraction}")
    if cfg.split.plan == "fixed":
        return
    _check(not (method.client_body or method.server_trains or method.pooled), "split.plan",
           f"{cfg.split.plan!r} needs a method that splits the model with a frozen body "
           f"(sfprompt); train.method = {cfg.train.method!r} does not")
    if cfg.split.plan == "by_tier" and cfg.profiles.source != "trace":
        for tier in tiers:
            TIERS.check("split.tiers", tier)
    key = "split.tiers" if cfg.split.plan == "by_tier" else "split.candidates"
    splits = plan_splits_of(cfg.split)
    for head, tail in splits:
        _check(head + tail <= depth, key, f"{head}:{tail} exceeds the {depth} blocks of "
               f"{cfg.model.name}")
    most_head, most_tail = max(h for h, _ in splits), max(t for _, t in splits)
    _check(most_head + most_tail <= depth, key,
           f"a block would be in one client's head ({most_head} blocks) and another's tail "
           f"({most_tail}) of the {depth} blocks of {cfg.model.name}")


def _validate_server_optimizer(cfg: Config) -> None:
    """The aggregation rules' settings, checked whatever the rule (a study may switch it)."""
    f = cfg.fed
    for key, value in (("fed.server_lr", f.server_lr), ("fed.server_tau", f.server_tau)):
        _check(value > 0 and math.isfinite(value), key, f"must be a positive number, got {value}")
    for key, value in (("fed.server_momentum", f.server_momentum),
                       ("fed.server_beta2", f.server_beta2)):
        # 1 would never forget the first rounds (and beta1 = 1 never moves at all).
        _check(0 <= value < 1, key, f"must be in [0, 1), got {value}")
    _check(f.prox_mu >= 0 and math.isfinite(f.prox_mu), "fed.prox_mu",
           f"must be a number >= 0, got {f.prox_mu}")


def server_actor_reasons(cfg: Config, method) -> list[str]:
    """Why a split `method`'s body must be one server actor under `cfg`, whatever the
    cluster (none: a copy may go to every client actor; ray.body, actors/cluster.py)."""
    return [why for needed, why in (
        (method.server_trains, f"train.method = {cfg.train.method!r} trains the body, which "
                               "must then live in one server actor"),
        (bool(cfg.ray.server_resource), "ray.server_resource asks for a server actor"),
        (cfg.faults.server_crash_round > 0, "faults.server_crash_round crashes the server "
                                            "actor")) if needed]


def _validate_body(cfg: Config, method) -> None:
    """`ray.body = "clients"` copies a frozen body into the client actors: nothing may
    need the one server actor."""
    if cfg.ray.body != "clients" or method.client_body:
        return
    reasons = server_actor_reasons(cfg, method)
    _check(not reasons, "ray.body", f"'clients' needs a frozen body and no server actor, but "
           f"{reasons[0] if reasons else ''}; use 'server' or 'auto'")


def _validate_clock(cfg: Config) -> None:
    """The virtual clock's settings: profiles, network emulation, round protocol."""
    from sfprompt.platform.fed.protocols import PROTOCOLS, buffer_size, concurrency
    from sfprompt.platform.fed.staleness import STALENESS
    from sfprompt.platform.sim.profiles import PROFILE_SOURCES, SERVER_TIERS, TIERS, parse_mix

    for key, value, choices in (
        ("profiles.source", cfg.profiles.source, PROFILE_SOURCES),
        ("profiles.tier", cfg.profiles.tier, TIERS),
        ("profiles.server", cfg.profiles.server, SERVER_TIERS),
        ("network.mode", cfg.network.mode, NETWORK_MODES),
        ("fed.protocol", cfg.fed.protocol, PROTOCOLS),
        ("fed.staleness", cfg.fed.staleness, STALENESS),
        ("availability.model", cfg.availability.model, AVAILABILITY_MODELS),
    ):
        _check_choice(key, value, choices)
    parse_mix(cfg.profiles.mix)  # raises ConfigError naming profiles.mix
    _check(cfg.profiles.source != "trace" or bool(cfg.profiles.trace), "profiles.trace",
           "must name a CSV or Parquet file when profiles.source = 'trace'")
    _check(cfg.availability.model != "trace" or bool(cfg.availability.trace),
           "availability.trace", "must name a CSV or Parquet file when availability.model "
           "= 'trace'")
    _check(cfg.availability.period_s > 0 and math.isfinite(cfg.availability.period_s),
           "availability.period_s", f"must be a positive number, got {cfg.availability.period_s}")
    for key, value, low in (("profiles.sigma", cfg.profiles.sigma, 0.0),
                            ("network.time_scale", cfg.network.time_scale, 0.0),
                            ("fed.over_commit", cfg.fed.over_commit, 1.0)):
        _check(value >= low and math.isfinite(value), key, f"must be a number >= {low}, got {value}")
    _check(cfg.fed.deadline_s > 0 and math.isfinite(cfg.fed.deadline_s), "fed.deadline_s",
           f"must be a positive number, got {cfg.fed.deadline_s}")
    _check(cfg.profiles.server_concurrency >= 0, "profiles.server_concurrency",
           f"must be >= 0, got {cfg.profiles.server_concurrency}")
    for key, value in (("fed.concurrency", cfg.fed.concurrency),
                       ("fed.buffer_size", cfg.fed.buffer_size)):
        _check(value >= 0, key, f"must be >= 0 (0: fed.clients_per_round), got {value}")
    _check(buffer_size(cfg.fed) <= concurrency(cfg.fed), "fed.buffer_size",
           f"{buffer_size(cfg.fed)} arrivals per aggregation, more than the "
           f"{concurrency(cfg.fed)} clients training (fed.concurrency)")
    _check(cfg.fed.staleness_exponent >= 0 and math.isfinite(cfg.fed.staleness_exponent),
           "fed.staleness_exponent", f"must be a number >= 0, got {cfg.fed.staleness_exponent}")
    sampled = PROTOCOLS[cfg.fed.protocol].sample_size(cfg.fed)
    _check(sampled <= cfg.fed.num_clients,
           "fed.concurrency" if cfg.fed.protocol == "buffered" else "fed.over_commit",
           f"{cfg.fed.protocol} samples {sampled} clients, more than fed.num_clients = "
           f"{cfg.fed.num_clients}")


def _validate_faults(cfg: Config) -> None:
    f = cfg.faults
    for key, value in (("faults.client_crash", f.client_crash),
                       ("faults.delay_spike", f.delay_spike)):
        _check(0.0 <= value <= 1.0, key, f"must be a probability in [0, 1], got {value}")
    # 1 would retransmit forever.
    _check(0.0 <= f.message_loss < 1.0, "faults.message_loss",
           f"must be in [0, 1), got {f.message_loss}")
    _check(f.delay_spike_s >= 0 and math.isfinite(f.delay_spike_s), "faults.delay_spike_s",
           f"must be a number of seconds >= 0, got {f.delay_spike_s}")
    _check(0 <= f.server_crash_round <= cfg.fed.rounds, "faults.server_crash_round",
           f"must be a round in [0, fed.rounds = {cfg.fed.rounds}], got {f.server_crash_round}")
