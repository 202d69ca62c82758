"""The round loop, written once, and the in-process backend.

    for each round:
        sample clients (protocol) -> drop the offline ones -> backend runs each online
        client's round (method.client_round) -> virtual clock: simulated times ->
        protocol: who is aggregated, when the round ends -> aggregate the uploaded
        states (weights = kept samples) -> evaluate -> one row

A client whose work is lost (its process crashed: an injected `faults.client_crash`
or a real one the Ray backend survived) returns no result and is "failed". The
loop's state between rounds is a `checkpoint.Progress`, so a run can resume from it.

The coordinator owns the global trainable state, client sampling, profiles, the
virtual clock and seeds; a backend only executes client work and evaluation.
`LocalBackend` does that in this process and is the reference any other backend (Ray)
must reproduce number for number.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sfprompt.platform.accounting import DOWN, KINDS
from sfprompt.platform.aggregation import AGGREGATIONS
from sfprompt.platform.checkpoint import Progress
from sfprompt.platform.client import ClientResult, ClientTask, Device, State, client_state
from sfprompt.platform.clock import ClientTime, client_times, message_seconds
from sfprompt.platform.config import Config
from sfprompt.platform.datasets import ImageData, load_dataset
from sfprompt.platform.evaluation import Evaluator, PendingEvaluation, evaluates
from sfprompt.platform.faults import MessageFaults, client_crashes, message_faults
from sfprompt.platform.methods import METHODS, prompt_length, set_trainable, world_config
from sfprompt.platform.network import emulate_network
from sfprompt.platform.partition import partition
from sfprompt.platform.precision import autocast
from sfprompt.platform.profiles import Profile, ServerProfile, make_profiles, server_profile
from sfprompt.platform.protocols import PROTOCOLS, is_online
from sfprompt.platform.server import BodyServer
from sfprompt.platform.split import SplitModel, add_probe_norm, split_vit
from sfprompt.platform.weights import create_vit

log = logging.getLogger(__name__)


@dataclass
class World:
    """What a config determines before any training: data, shards, the split model."""

    cfg: Config
    data: ImageData
    shards: list[np.ndarray]
    split: SplitModel
    norm: dict  # img_size, mean, std for to_model_input
    profiles: list[Profile]  # one per registered client
    server: ServerProfile


def build_split(cfg: Config, num_classes: int) -> tuple[SplitModel, dict]:
    """The split model with the method's trainable set; same seed => same initial state
    in every process (classifier and prompt init draw from the seeded torch RNG)."""
    torch.manual_seed(cfg.run.seed)
    vit = create_vit(cfg.model.name, num_classes=num_classes, img_size=cfg.model.img_size,
                     weights=cfg.model.weights)
    vit.eval()  # no dropout or drop-path: the parts are trained, the model is not sampled
    # A zero classifier starts every client from uniform predictions, so the first
    # round's updates are about the data rather than about a random head's bias.
    torch.nn.init.zeros_(vit.head.weight)
    torch.nn.init.zeros_(vit.head.bias)
    if cfg.model.probe_norm:
        add_probe_norm(vit)
    split = split_vit(vit, cfg.split.head_blocks, cfg.split.tail_blocks, prompt_length(cfg),
                      cfg.split.local_pool)
    set_trainable(split, METHODS[cfg.train.method])
    pcfg = vit.pretrained_cfg
    norm = dict(img_size=cfg.model.img_size, mean=tuple(pcfg.get("mean", (0.5,) * 3)),
                std=tuple(pcfg.get("std", (0.5,) * 3)))
    return split, norm


def build_world(cfg: Config) -> World:
    cfg = world_config(cfg)  # a pooled method (centralized) sees one client with all data
    # First, being the cheapest: a bad trace file fails before data or a model is loaded.
    profiles = make_profiles(cfg.profiles, cfg.fed.num_clients, cfg.run.seed)
    data = load_dataset(cfg.data.name, root=cfg.data.root or None,
                        test_fraction=cfg.data.test_fraction, seed=cfg.run.seed,
                        max_samples=cfg.data.max_samples or None, download=cfg.data.download)
    shards = partition(cfg.fed.partition, data.train_labels.numpy(), cfg.fed.num_clients,
                       seed=cfg.run.seed, alpha=cfg.fed.alpha,
                       shards_per_client=cfg.fed.shards_per_client,
                       min_samples=cfg.fed.min_samples)
    split, norm = build_split(cfg, data.num_classes)
    return World(cfg, data, shards, split, norm, profiles, server_profile(cfg.profiles))


class Backend(Protocol):
    """Runs client work and evaluation. `run_clients` returns a result for every task
    but those whose work was lost (failed clients). The server methods are called only
    when the method trains the body (`server_state`, `restore_server`: for checkpoints)
    or when `faults.server_crash_round` injects a crash (`crash_server`).

    `evaluate` may return before the evaluation is done; a backend that says
    `overlaps_evaluation` lets the loop train the next round while it runs."""

    overlaps_evaluation: bool

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]: ...
    def evaluate(self, global_state: State) -> PendingEvaluation: ...
    def server_state(self) -> dict: ...
    def restore_server(self, state: dict) -> None: ...
    def crash_server(self) -> None: ...


class LocalBackend:
    """Runs every client's work, the server and evaluation in this process, in order."""

    overlaps_evaluation = False

    def __init__(self, world: World) -> None:
        cfg = world.cfg
        self.cfg = cfg
        self.method = METHODS[cfg.train.method]
        self.device = Device(world.split, world.data.train_images, world.data.train_labels,
                             **world.norm)
        self.server = BodyServer(world.split.body, trains=self.method.server_trains,
                                 lr=cfg.train.pretrained_lr, precision=cfg.run.precision)
        self.evaluator = Evaluator(cfg, world.split, world.data.test_images,
                                   world.data.test_labels, world.norm)
        self.profiles = world.profiles

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]:
        results = []
        for task in tasks:
            if task.crash:  # the process running this client dies: its work is lost
                continue
            with emulate_network(self.cfg.network, self.profiles[task.client], task.seed), \
                    autocast(self.cfg.run.precision):
                result = self.method.client_round(self.cfg, self.device, task, global_state,
                                                  self.server)
            result.server_flops = self.server.take_flops(task.client)
            results.append(result)
        return results

    def evaluate(self, global_state: State) -> PendingEvaluation:
        """Evaluates now (the body, when it trains, is the server's own module)."""
        result = self.evaluator(global_state)
        return lambda: result

    def server_state(self) -> dict:
        return self.server.state_dict()

    def restore_server(self, state: dict) -> None:
        self.server.load_state_dict(state)

    def crash_server(self) -> None:
        """Here the server lives in the coordinator's process: the crash takes nothing
        with it, so there is nothing to recover (the ray backend really kills it)."""


def client_seed(seed: int, round_: int, client: int) -> int:
    """Independent stream per (run, round, client), the same in every backend."""
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


def sample_clients(cfg: Config, round_: int, count: int | None = None) -> list[int]:
    """`count` distinct clients (default fed.clients_per_round), by (seed, round)."""
    rng = np.random.default_rng([cfg.run.seed, round_])
    size = cfg.fed.clients_per_round if count is None else count
    chosen = rng.choice(cfg.fed.num_clients, size=size, replace=False)
    return sorted(int(c) for c in chosen)


@dataclass(frozen=True)
class Outcome:
    """One sampled client in one round: its status and, if it ran, what it did and when."""

    client: int
    profile: Profile
    status: str  # protocols.STATUSES
    result: ClientResult | None = None  # None when offline or failed
    time: ClientTime | None = None
    faults: MessageFaults = MessageFaults()  # injected loss and delay spikes
    crashed: bool = False  # an injected client crash (faults.client_crash)


def round_row(round_: int, outcomes: list[Outcome], accuracy: float, loss: float, wall: float,
              sim_seconds: float, sim_elapsed: float, server_crashes: int = 0) -> dict:
    """One row of rounds.parquet. What the update learned from (participants, samples,
    training loss) counts the aggregated clients; what the round cost (FLOPs, bytes)
    counts every client that ran, late and dropped ones included: that work was spent."""
    ran = [o.result for o in outcomes if o.result is not None]
    aggregated = [o.result for o in outcomes if o.status == "ok"]
    kept_samples = sum(r.num_kept for r in aggregated)
    statuses = Counter(o.status for o in outcomes)
    row = {"round": round_, "accuracy": accuracy, "loss": loss, "wall_seconds": wall,
           "participants": len(aggregated), "sampled": len(outcomes),
           "offline": statuses["offline"], "late": statuses["late"], "dropped": statuses["dropped"],
           "failed": statuses["failed"], "faults.client_crashes": sum(o.crashed for o in outcomes),
           "faults.server_crashes": server_crashes,
           "train_loss": (sum(r.train_loss * r.num_kept for r in aggregated)
                          / max(kept_samples, 1) if aggregated else math.nan),
           "samples": sum(r.num_samples for r in aggregated), "kept_samples": kept_samples,
           "flops.client": sum(r.client_flops for r in ran),
           "flops.server": sum(r.server_flops for r in ran),
           "sim.round_seconds": sim_seconds, "sim.elapsed_seconds": sim_elapsed}
    for kind in KINDS:
        row[f"bytes.{kind}"] = sum(r.bytes.get(kind, 0) for r in ran)
    row["bytes.down"] = sum(row[f"bytes.{k}"] for k in DOWN)
    row["bytes.up"] = sum(row[f"bytes.{k}"] for k in KINDS if k not in DOWN)
    for column in MessageFaults().columns():
        row[column] = sum(o.faults.columns()[column] for o in outcomes)
    return row


def client_rows(row: dict, outcomes: list[Outcome]) -> list[dict]:
    """clients.parquet rows of one round (`row`: its rounds.parquet row): profile and
    status of every sampled client, and for those that ran, what they did and when.
    Idle is the time a client waits, done, for the round to end."""
    rows = []
    for o in outcomes:
        out = {"round": row["round"], "client": o.client, "status": o.status,
               **{f"profile.{k}": v for k, v in dataclasses.asdict(o.profile).items()}}
        r, t = o.result, o.time
        if r is not None and t is not None:
            out.update({"samples": r.num_samples, "kept_samples": r.num_kept,
                        "train_loss": r.train_loss, "local_loss": r.local_loss,
                        "flops.client": r.client_flops, "flops.server": r.server_flops,
                        **{f"bytes.{k}": r.bytes.get(k, 0) for k in KINDS},
                        **{f"messages.{k}": r.messages.get(k, 0) for k in KINDS},
                        "sim.compute_seconds": t.compute, "sim.comm_seconds": t.comm,
                        "sim.server_seconds": t.server, "sim.queue_seconds": t.queue,
                        "sim.finish_seconds": t.finish,
                        "sim.idle_seconds": max(row["sim.round_seconds"] - t.finish, 0.0),
                        **o.faults.columns()})
        rows.append(out)
    return rows


def initial_progress(world: World) -> Progress:
    """The loop's state before round 1: the model's own trainable state as global state."""
    return Progress({k: v.clone() for k, v in client_state(world.split.client()).items()})


def run_rounds(world: World, backend: Backend,
               progress: Progress | None = None) -> Iterator[tuple[dict, list[Outcome]]]:
    """The federated loop; yields each round's row and the outcome of every sampled client.

    It continues from `progress` (a checkpoint's; default: before round 1) and updates
    it in place before each yield, so the caller can checkpoint it after any round.

    When the backend overlaps evaluation, the loop trains round r+1 while round r's
    model is evaluated and yields round r after that: it works on a copy (`work`) one
    round ahead, and `progress` becomes round r's state when round r is yielded. The
    rows are the same either way; only when they arrive differs.
    """
    cfg = world.cfg
    progress = progress if progress is not None else initial_progress(world)
    if METHODS[cfg.train.method].server_trains and progress.server is not None:
        backend.restore_server(progress.server)
    overlap = backend.overlaps_evaluation
    work = _copy(progress) if overlap else progress
    waiting = None  # a trained round whose row is not yet yielded (_Trained)
    try:
        for round_ in range(progress.round + 1, cfg.fed.rounds + 1):
            start = time.perf_counter()
            row, outcomes = _train_round(world, backend, work, round_)
            pending = backend.evaluate(work.global_state) if evaluates(cfg, round_) else None
            row["wall_seconds"] = time.perf_counter() - start
            trained = _Trained(row, outcomes, _copy(work) if overlap else None, pending)
            if not overlap:
                yield trained.finish(progress)
                continue
            if waiting is not None:
                yield waiting.finish(progress)
            waiting = trained
    except Exception:
        if waiting is not None:  # a failed round loses nothing of the one before it
            yield waiting.finish(progress)
        raise
    if waiting is not None:
        yield waiting.finish(progress)


@dataclass
class _Trained:
    """A round trained and aggregated, its evaluation perhaps still running."""

    row: dict
    outcomes: list[Outcome]
    state: Progress | None  # the loop's state after this round, when it ran ahead
    evaluation: PendingEvaluation | None  # None: not evaluated this round (eval.every)

    def finish(self, progress: Progress) -> tuple[dict, list[Outcome]]:
        """The round's row with its evaluation, and `progress` made its state."""
        start = time.perf_counter()
        if self.evaluation is not None:
            self.row["accuracy"], self.row["loss"] = self.evaluation()
        self.row["wall_seconds"] += time.perf_counter() - start  # waiting for it
        if self.state is not None:
            for f in dataclasses.fields(Progress):
                setattr(progress, f.name, getattr(self.state, f.name))
        return self.row, self.outcomes


def _copy(progress: Progress) -> Progress:
    """A copy that later rounds cannot change: they replace the global state's dict
    (aggregation builds a new one) but grow `visited` and may update the aggregation
    rule's memory in place."""
    return dataclasses.replace(progress, global_state=dict(progress.global_state),
                               visited=set(progress.visited),
                               aggregation={k: v.clone() for k, v in progress.aggregation.items()})


def _train_round(world: World, backend: Backend, progress: Progress,
                 round_: int) -> tuple[dict, list[Outcome]]:
    """Round `round_` up to its evaluation: its row (accuracy and loss NaN) and
    outcomes, with `progress` updated to the state after it."""
    cfg = world.cfg
    protocol = PROTOCOLS[cfg.fed.protocol]
    aggregate = AGGREGATIONS[cfg.fed.aggregation]
    sampled = sample_clients(cfg, round_, protocol.sample_size(cfg.fed))
    online: list[int] = []
    offline: list[int] = []
    for c in sampled:
        there = is_online(cfg.run.seed, round_, c, world.profiles[c].availability)
        (online if there else offline).append(c)
    tasks = [ClientTask(c, round_, world.shards[c], client_seed(cfg.run.seed, round_, c),
                        first_visit=c not in progress.visited,
                        crash=client_crashes(cfg.faults, cfg.run.seed, round_, c))
             for c in online]
    crashed = {t.client for t in tasks if t.crash}
    if crashed:
        log.warning("round %d: injected crash of client(s) %s", round_, sorted(crashed))
    if round_ == cfg.faults.server_crash_round:
        log.warning("round %d: injected server crash", round_)
        backend.crash_server()
    results = sorted(backend.run_clients(tasks, progress.global_state) if tasks else [],
                     key=lambda r: r.client)
    progress.visited.update(r.client for r in results)  # the failed may not have the head
    failed = sorted({t.client for t in tasks} - {r.client for r in results})
    if set(failed) - crashed:
        log.warning("round %d: client(s) %s failed: their work was lost",
                    round_, sorted(set(failed) - crashed))
    profiles = [world.profiles[r.client] for r in results]
    times = client_times(results, profiles, world.server, cfg.run.seed, round_)
    # Lost messages and delay spikes cost time on the client's link (faults.py).
    faults = [message_faults(cfg.faults, lambda kind, n, p=p: message_seconds(p, kind, n),
                             r.bytes, r.messages, cfg.run.seed, round_, r.client)
              for r, p in zip(results, profiles)]
    times = [dataclasses.replace(t, comm=t.comm + f.seconds) for t, f in zip(times, faults)]
    statuses, seconds = protocol.select(cfg.fed, [t.finish for t in times])
    progress.elapsed += seconds
    outcomes = sorted([Outcome(r.client, world.profiles[r.client], s, r, t, f)
                       for r, s, t, f in zip(results, statuses, times, faults)]
                      + [Outcome(c, world.profiles[c], "offline") for c in offline]
                      + [Outcome(c, world.profiles[c], "failed", crashed=c in crashed)
                         for c in failed],
                      key=lambda o: o.client)
    aggregated = [o.result for o in outcomes if o.status == "ok"]
    if aggregated:
        # A rule that keeps state between rounds takes it as `memory` (checkpoint.Progress).
        keeps_memory = "memory" in inspect.signature(aggregate).parameters
        memory = {"memory": progress.aggregation} if keeps_memory else {}
        progress.global_state = aggregate([r.state for r in aggregated],
                                          [r.num_kept for r in aggregated], **memory)
    else:
        log.warning("round %d: no client update to aggregate; the global state stays", round_)
    row = round_row(round_, outcomes, math.nan, math.nan, 0.0, seconds, progress.elapsed,
                    int(round_ == cfg.faults.server_crash_round))
    if aggregated and not math.isfinite(row["train_loss"]):
        log.warning("round %d: training loss is %s", round_, row["train_loss"])
    if row["faults.lost_messages"] or row["faults.delay_spikes"]:
        log.info("round %d: %d lost messages resent (%d bytes), %d delay spikes", round_,
                 row["faults.lost_messages"], row["faults.retransmitted_bytes"],
                 row["faults.delay_spikes"])
    progress.round = round_
    if METHODS[cfg.train.method].server_trains:
        progress.server = backend.server_state()
    return row, outcomes
