"""Throughput: what the project costs over plain PyTorch, and how near the machine it gets.

    python benchmarks/throughput.py [--part a,b,c,d,e,f] [--rounds 3] [--ks 4,8]
        [--precisions fp32,bf16] [--threads N] [--registered 1000] [--per-round 100,1000]
        [--workers inline,thread,actor] [--pss-interval 1] [key=value ...]

(a) Federated prompt tuning (fl_prompt: the frozen DINOv2 ViT-S/14 at 56 px on the client,
    prompts + classifier train, no probe norm): 10 IID clients of 400 MNIST digits, K per
    round, 1 epoch of Adam (lr 3e-3) at batch 32, the whole 1,000-digit test set every round.
    (The bundled MNIST has 5,000 digits; data.test_fraction = 0.2 holds out 1,000 and leaves
    4,000. data.max_samples subsamples only the training part, so it stays 0 = all.) For
    each precision and K, runs plain, local and ray in one process, a round of each in
    turn, the order reversed every round (plain local ray ray local plain plain ...), so
    that all three see the same host: on this shared host a round moves by a fifth
    between minutes, more than the differences measured. The Ray backend's actors idle
    through the others' rounds (their CPU is printed). "plain" is a loop
    of its own doing the same arithmetic: the project's model, client sampling and
    availability draws, shards and shuffle seeds, a fresh Adam per client and round, FedAvg
    by samples, evaluation under no_grad (bf16: torch.autocast around forward, like
    `run.precision=bf16`); no Link copies, FLOP counting, clock or Ray. Reports seconds per
    round, round 1 and steady state (mean of rounds >= 2), each divided by plain's. No
    memory is sampled here: the three runs are alive at once.
(b) Cross-device: vit_tiny at 32 px (random weights), 1,000 registered clients of 8 digits
    (the training digits repeated as needed, in this process only), 100 and 1,000 per round,
    the default method (sfprompt), flagship-phone profiles, eval.max_samples=200, 2 rounds
    (the first a warm-up), local and ray, the Ray backend with the body in the client
    actors (ray.body = auto) and one client actor per CPU (ray.num_client_actors; 1 thread
    each, as auto then gives): at these shapes a second thread in one process adds little,
    a second process a core's worth. Ray runs twice: as configured (calls of up to
    ray.clients_per_call clients) and with a call per client (ray.clients_per_call=1).
    Fixed cost per client-round =
    (wall of the clients phase - counted FLOPs of the round / R) / clients that ran, where R
    is the FLOP/s the machine reaches on a tight loop of the same steps at the same shapes
    with no accounting (scoring forward, local-path and full-path fwd + bwd + Adam; FLOPs
    counted once by FlopCounterMode): the best of this process with its threads and of
    one 1-thread process per CPU running it at once, each measured before the runs and
    after. What is left is the cost that does not scale with FLOPs: batching, copies,
    accounting, messages, Ray, and cores left idle.
(c) The default run (all defaults, ray, --rounds rounds): counted client + server FLOPs per
    second of round wall and of clients phase, per round and steady state, against the
    fp32 sgemm rate of torch.mm on 2048 x 2048 measured in the same run: before the first
    round and after each (3 s each, outside the rounds' walls), a round set against the
    mean of the two measurements beside it. Beside it, the same FLOPs against R, the rate
    of a plain loop of one client's steps (as in (b)) at the run's mean shard, measured
    before and after the run: what these shapes reach with no platform around them.
(d) Evaluation off the critical path: the default run (ray) with each `eval.worker` in
    turn, seconds per round over the whole run (start-up excluded) and round 1, each
    divided by inline's, with the peak PSS.
(e) The fixed cost inside a client's round: in this process at 1 thread, the local
    backend's rounds of part (b)'s first --per-round clients against client_steps' plain
    loop at the same shapes, alternating, --rounds times (best of each). What part (b)
    measures on top of it is the trip through Ray (benchmarks/ray_call.py) and the cores
    the coordinator and Ray's processes take from the actors.
(f) Calls of several clients against a call per client: one Ray backend on part (b)'s
    clients, --per-round of them per round, --rounds rounds alternating
    ray.clients_per_call between 1 and its configured value (8) in the order A B B A A B
    B ..., so that both see the same host, and neither always follows the other; no
    evaluation. Per client-round, the median over each setting's rounds after its first:
    wall of the clients phase, the fixed cost against R (as in (b), measured before), and
    CPU by role.

Threads: `--threads` (default: this machine's CPUs) is the torch thread count of this
process (plain loop, local backend, coordinator and evaluation, R and sgemm). Project runs
keep `run.threads = 0`, as a user's would: the local backend then uses this process's
threads, and the Ray backend shares them among its client actors (actors/backend.py,
actor_threads; in (a), which has no server actor, 2 CPUs give 2 client actors of 1
thread). On a host shared with other busy processes, as many threads as CPUs slows small
steps down by an order of magnitude or more (each OpenMP barrier waits for a thread the
scheduler has preempted): the load average is printed first, and --threads 1 is the
setting for such a host.
Memory: the largest PSS (shared pages split among the processes that map them) of this
process and all its descendants (Ray's gcs, raylet, workers and actors), sampled every
second of each run of (b), (c) and (d) (--pss-interval; 0 samples nothing: a sample walks
the page tables of the whole tree, a cost that grows with the memory a round holds and
that the run pays).
One Ray instance serves every run, so idle workers left by earlier runs are counted.
key=value overrides apply to every run, after the part's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator

import ray
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sfprompt.actors.backend import RayBackend
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import Config
from sfprompt.platform.data.datasets import DATASETS, register_dataset
from sfprompt.platform.fed.protocols import is_online
from sfprompt.platform.fed.sampling import client_seed, sample_clients
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.evaluation import evaluation_indices
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import World, build_world, initial_progress
from sfprompt.platform.method.client import ClientTask, ClientWorker
from sfprompt.platform.method.pruning import keep_count
from sfprompt.platform.model.build import build_split
from measure import (PeakPss, concurrent_rate, cpu_by_role, log, rate,  # benchmarks/measure.py
                     steady, table)

CPUS = os.cpu_count()
PART_A = ["train.method=fl_prompt", "model.probe_norm=false", "fed.num_clients=10",
          "fed.partition=iid", "train.split_epochs=1", "train.optimizer=adam", "train.lr=3e-3",
          "train.prompt_lr=3e-3", "train.batch_size=32", "eval.every=1", "eval.max_samples=0"]
PART_B = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=32",
          "data.name=mnist_repeated", "fed.partition=iid", "profiles.source=tier",
          "profiles.tier=flagship_phone", "eval.max_samples=200", "fed.rounds=2",
          f"ray.num_client_actors={CPUS}"]
SAMPLES_B = 8  # per client in part (b)
Configure = Callable[[list[str]], Config]


def project_rounds(cfg: Config, kind: str, tag: str, pss_interval: float,
                   world: World | None = None) -> Iterator[dict]:
    """One run through run_rounds (on `world` when given), yielding its record after
    each round (the same dict, grown): per round the wall, clients-phase seconds, CPU by
    role and row."""
    world = world or build_world(cfg)
    r = {"kind": kind, "walls": [], "clients": [], "cpu": [], "rows": [], "accuracy": []}
    with PeakPss(pss_interval) as pss:
        start = time.perf_counter()
        backend = RayBackend(world) if kind == "ray" else LocalBackend(world)
        r["startup"] = time.perf_counter() - start
        start = time.perf_counter()

        def timed(tasks, global_state, inner=backend.run_clients):  # without evaluation
            begin, cpu_before = time.perf_counter(), cpu_by_role()
            results = inner(tasks, global_state)
            r["clients"].append(time.perf_counter() - begin)
            r["cpu"].append({k: v - cpu_before[k] for k, v in cpu_by_role().items()})
            return results

        backend.run_clients = timed
        try:
            for row, _ in run_rounds(world, backend):
                r["rows"].append(row)
                r["walls"].append(row["wall_seconds"])
                r["accuracy"].append(row["accuracy"])
                log(f"[{tag} {kind}] round {row['round']}: {row['wall_seconds']:.1f} s (clients "
                    f"{r['clients'][-1]:.1f} s), accuracy {row['accuracy']:.4f}")
                # Time between rounds (another run's round, a measurement) is in no wall.
                r["total"] = time.perf_counter() - start
                yield r
                start = time.perf_counter() - r["total"]
        finally:
            if kind == "ray":
                backend.close()
    r["pss"] = pss.peak


def project_run(cfg: Config, kind: str, tag: str, pss_interval: float) -> dict:
    """project_rounds run to the end."""
    return last(project_rounds(cfg, kind, tag, pss_interval))


def plain_rounds(cfg: Config, tag: str) -> Iterator[dict]:
    """fl_prompt's arithmetic in a plain loop (module doc, part a), yielding its record
    after each round, as project_rounds does."""
    world = build_world(cfg)
    data, model = world.data, world.split
    train = ClientWorker(model, data.train_images, data.train_labels, **world.norm)
    test = ClientWorker(model, data.test_images, data.test_labels, **world.norm)
    bf16 = cfg.run.precision == "bf16"
    params = dict(model.client().named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]  # prompts + classifier
    state = {n: params[n].detach().clone() for n in names}
    r = {"kind": "plain", "walls": [], "cpu": [], "accuracy": []}
    for round_ in range(1, cfg.fed.rounds + 1):
        start, cpu_before = time.perf_counter(), cpu_by_role()
        chosen = [c for c in sample_clients(cfg, round_)
                  if is_online(cfg.run.seed, round_, c, world.profiles[c].availability)]
        states, weights = [], []
        for c in chosen:
            with torch.no_grad():
                for n in names:
                    params[n].copy_(state[n])
            optimizer = torch.optim.Adam(
                [{"params": [params["head.prompts"]], "lr": cfg.train.prompt_lr},
                 {"params": [params[n] for n in names if n != "head.prompts"],
                  "lr": cfg.train.lr}], weight_decay=cfg.train.weight_decay)
            generator = torch.Generator().manual_seed(client_seed(cfg.run.seed, round_, c))
            for _ in range(cfg.train.split_epochs):
                for x, y in train.batches(world.shards[c], cfg.train.batch_size, generator):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        loss = F.cross_entropy(model.forward(x), y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            states.append({n: params[n].detach().clone() for n in names})
            weights.append(len(world.shards[c]))
        total = sum(weights)
        state = {n: sum(s[n].double() * (w / total) for s, w in zip(states, weights)).float()
                 for n in names}
        correct, everything = 0, evaluation_indices(cfg, data.test_labels.numpy())
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for n in names:
                params[n].copy_(state[n])
            for x, y in test.batches(everything, cfg.train.eval_batch_size):
                correct += (model.forward(x).argmax(dim=1) == y).sum().item()
        r["walls"].append(time.perf_counter() - start)
        r["cpu"].append({k: v - cpu_before[k] for k, v in cpu_by_role().items()})
        r["accuracy"].append(correct / len(everything))
        log(f"[{tag} plain] round {round_}: {r['walls'][-1]:.1f} s, accuracy {r['accuracy'][-1]:.4f}")
        yield r


def last(records: Iterator[dict]) -> dict:
    """The last record a run yields: the whole run's."""
    for r in records:
        pass
    return r


def client_steps(cfg: Config, samples: int) -> tuple[Callable[[], None], int]:
    """One sfprompt client's steps at part (b)'s shapes, plain, and their FLOPs."""
    split, _ = build_split(cfg, 10)  # MNIST's classes
    optimizer = torch.optim.Adam([p for p in split.client().parameters() if p.requires_grad])
    side = cfg.model.img_size

    def batches(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cuts = [min(size, n - i) for i in range(0, n, size)]  # as the project cuts n samples
        return [(torch.randn(b, 3, side, side), torch.randint(0, 10, (b,))) for b in cuts]

    scored = batches(samples, cfg.train.eval_batch_size)
    trained = batches(keep_count(samples, cfg.prune.keep), cfg.train.batch_size)

    def client() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.run.precision == "bf16"):
            if cfg.prune.keep < 1.0:
                with torch.no_grad():
                    for x, _ in scored:
                        split.local(x)
            for path, epochs in ((split.local, cfg.train.local_epochs),
                                 (split.forward, cfg.train.split_epochs)):
                for _ in range(epochs):
                    for x, y in trained:
                        F.cross_entropy(path(x), y).backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)

    mode = FlopCounterMode(display=False)
    with mode:
        client()
    return client, mode.get_total_flops()


def part_a(args: argparse.Namespace, config: Configure) -> None:
    rows = []
    for precision in args.precisions:
        for k in args.ks:
            cfg = config(PART_A + [f"fed.clients_per_round={k}", f"run.precision={precision}"])
            tag = f"a {precision} K={k}"
            runs = interleaved({"plain": plain_rounds(cfg, tag),
                                "local": project_rounds(cfg, "local", tag, 0),
                                "ray": project_rounds(cfg, "ray", tag, 0)})
            first, later = runs["plain"]["walls"][0], steady(runs["plain"]["walls"])
            for kind, r in runs.items():
                actors_cpu = steady([c["client actors"] for c in r["cpu"]])
                rows.append({"precision": precision, "K": k, "run": kind,
                             "round 1 s": f"{r['walls'][0]:.2f}",
                             "steady s/round": f"{steady(r['walls']):.2f}",
                             "round 1 ÷ plain": f"{r['walls'][0] / first:.3f}",
                             "steady ÷ plain": f"{steady(r['walls']) / later:.3f}",
                             "accuracy by round": "/".join(f"{a:.4f}" for a in r["accuracy"]),
                             "ray start-up s": f"{r['startup']:.1f}" if kind == "ray" else "-",
                             "client actors' CPU s/round": f"{actors_cpu:.2f}"})
    print(f"\n(a) fl_prompt, {cfg.model.name} at {cfg.model.img_size} px, "
          f"{cfg.fed.num_clients} IID clients, s/round\n")
    print(table(rows))


def interleaved(runs: dict[str, Iterator[dict]]) -> dict[str, dict]:
    """Each run's record, the runs advanced a round at a time in turn, in the order given
    on odd rounds and the reverse on even ones (A B C C B A A B C ...), so that every run
    sees the same host and none always follows another."""
    records: dict[str, dict] = {}
    order = list(runs)
    while runs:
        for name in order:
            if name in runs:
                try:
                    records[name] = next(runs[name])
                except StopIteration:
                    del runs[name]
        order.reverse()
    return records


def register_repeated(registered: int) -> None:
    """Part (b)'s dataset: MNIST's 4,000 training digits repeated to `registered` clients
    of SAMPLES_B, registered in this process only, once (parts b, e, f all use it)."""
    if "mnist_repeated" in DATASETS:
        return
    repeats = math.ceil(registered * SAMPLES_B / 4000)

    @register_dataset("mnist_repeated")
    def _mnist_repeated(root, *, test_fraction: float, seed: int, download: bool):
        base = DATASETS["mnist"](root, test_fraction=test_fraction, seed=seed, download=download)
        return dataclasses.replace(base, train_images=base.train_images.repeat(repeats, 1, 1, 1),
                                   train_labels=base.train_labels.repeat(repeats))


def cross_device(args: argparse.Namespace, config: Configure, *more: str) -> Config:
    """Part (b)'s setting (its dataset registered): --registered clients of SAMPLES_B
    digits, and `more` overrides."""
    register_repeated(args.registered)
    return config(PART_B + [f"fed.num_clients={args.registered}",
                            f"data.max_samples={args.registered * SAMPLES_B}", *more])


def part_b(args: argparse.Namespace, config: Configure) -> None:
    rows = []
    for per_round in args.per_round:
        cfg = cross_device(args, config, f"fed.clients_per_round={per_round}")
        client, step_flops = client_steps(cfg, SAMPLES_B)
        def machine_rates() -> tuple[float, float]:  # this process; one 1-thread process per CPU
            return rate(client, step_flops), concurrent_rate(client_steps, (cfg, SAMPLES_B), CPUS)

        before = machine_rates()
        tag = f"b {per_round}/round"
        runs = [project_run(cfg, kind, tag, args.pss_interval) for kind in ("local", "ray")]
        # Beside it, the Ray backend as it was before calls of several clients.
        one = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, clients_per_call=1))
        runs.append(project_run(one, "ray", f"{tag}, 1 per call", args.pss_interval))
        runs[-1]["kind"] = "ray, a call per client"
        after = machine_rates()
        flop_rate = max(*before, *after)  # what the machine reaches: the best way, least disturbed
        log(f"[b {per_round}/round] R, GFLOP/s (this process, {CPUS} of 1 thread): before "
            f"{before[0] / 1e9:.1f}, {before[1] / 1e9:.1f}; after {after[0] / 1e9:.1f}, "
            f"{after[1] / 1e9:.1f}")
        for r in runs:
            ran = [row["sampled"] - row["offline"] - row["failed"] for row in r["rows"]]
            work = [row["flops.client"] + row["flops.server"] for row in r["rows"]]
            fixed = [(c - w / flop_rate) / max(n, 1) for c, w, n in zip(r["clients"], work, ran)]
            rows.append({"per round": per_round, "run": r["kind"],
                         "R GFLOP/s": f"{flop_rate / 1e9:.1f}",
                         "clients phase s, r1/steady": "/".join(
                             f"{v:.2f}" for v in (r["clients"][0], steady(r["clients"]))),
                         "FLOPs/R s, steady": f"{steady(work) / flop_rate:.2f}",
                         "fixed ms/client, r1/steady": "/".join(
                             f"{1e3 * v:.2f}" for v in (fixed[0], steady(fixed))),
                         "counted ÷ plain FLOPs": f"{work[-1] / max(ran[-1], 1) / step_flops:.3f}",
                         # where the cores went in the last round: CPU ms per client
                         "CPU ms/client: coordinator, client actors, ray system": ", ".join(
                             f"{1e3 * s / max(ran[-1], 1):.1f}" for s in r["cpu"][-1].values()),
                         "ray start-up s": f"{r['startup']:.1f}" if r["kind"] == "ray" else "-",
                         "peak PSS MiB": f"{r['pss']:.0f}"})
    print(f"\n(b) cross-device, {args.registered} registered clients of {SAMPLES_B} samples\n")
    print(table(rows))


def part_c(args: argparse.Namespace, config: Configure) -> None:
    cfg = config([])
    world = build_world(cfg)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    # R: a plain loop of one client's steps at the run's mean shard (module doc, part b).
    step, step_flops = client_steps(cfg, round(statistics.mean(map(len, world.shards))))

    def sgemm() -> float:
        return rate(lambda: torch.mm(a, b), 2 * 2048**3)

    # The sgemm rate before the run and after each round (outside its wall): a round is
    # set against the mean of the two beside it, so a drift of the host weighs on both.
    flop_rates, peaks, rows = [rate(step, step_flops)], [sgemm()], []
    for r in project_rounds(cfg, "ray", "c default", args.pss_interval, world):
        peaks.append(sgemm())
        row = r["rows"][-1]
        work = row["flops.client"] + row["flops.server"]
        peak = (peaks[-2] + peaks[-1]) / 2
        rows.append({"round": row["round"], "wall s": f"{r['walls'][-1]:.1f}",
                     "clients phase s": f"{r['clients'][-1]:.1f}",
                     "counted GFLOP": f"{work / 1e9:.0f}",
                     "GFLOP/s of wall": work / r["walls"][-1] / 1e9,
                     "GFLOP/s of clients phase": work / r["clients"][-1] / 1e9,
                     "sgemm GFLOP/s before/after": f"{peaks[-2] / 1e9:.1f}/{peaks[-1] / 1e9:.1f}",
                     "% of sgemm, wall": 100 * work / r["walls"][-1] / peak,
                     "% of sgemm, clients phase": 100 * work / r["clients"][-1] / peak})
    flop_rates.append(rate(step, step_flops))
    numbers = [k for k, v in rows[0].items() if isinstance(v, float)]
    steady_values = {k: steady([row[k] for row in rows]) for k in numbers}
    rows.append({**dict.fromkeys(rows[0], ""), "round": "steady (rounds >= 2)", **steady_values})
    for row in rows:
        row.update({k: f"{row[k]:.1f}" for k in numbers})
    flop_rate = statistics.mean(flop_rates) / 1e9
    print(f"\n(c) default run (ray), counted client + server FLOPs; R (a plain loop of a "
          f"client's steps) {flop_rates[0] / 1e9:.1f} before, {flop_rates[1] / 1e9:.1f} after "
          f"GFLOP/s; ray start-up {r['startup']:.1f} s, peak PSS {r['pss']:.0f} MiB\n")
    print(table(rows))
    print(f"\nSteady state against R: {steady_values['GFLOP/s of wall'] / flop_rate:.3f} of "
          f"the wall, {steady_values['GFLOP/s of clients phase'] / flop_rate:.3f} of the "
          f"clients phase")


def part_d(args: argparse.Namespace, config: Configure) -> None:
    runs = {w: project_run(config([f"eval.worker={w}"]), "ray", f"d {w}", args.pss_interval)
            for w in args.workers}
    base = runs[args.workers[0]]
    rows = [{"eval.worker": w, "s/round": f"{r['total'] / len(r['walls']):.2f}",
             "round 1 s": f"{r['walls'][0]:.2f}",
             f"s/round ÷ {args.workers[0]}": f"{r['total'] / base['total']:.3f}",
             "accuracy by round": "/".join(f"{a:.4f}" for a in r["accuracy"]),
             "ray start-up s": f"{r['startup']:.1f}", "peak PSS MiB": f"{r['pss']:.0f}"}
            for w, r in runs.items()]
    print("\n(d) default run (ray), where the evaluation runs\n")
    print(table(rows))


def part_e(args: argparse.Namespace, config: Configure) -> None:
    """The fixed cost inside a client's round, in one process at 1 thread: the local
    backend's rounds of part (b)'s clients against client_steps, alternating."""
    torch.set_num_threads(1)
    cfg = cross_device(args, config, "run.threads=1")
    world = build_world(cfg)
    backend = LocalBackend(world)
    state = initial_progress(world).global_state
    n = min(args.per_round[0], args.registered)
    tasks = [ClientTask(c, 1, world.shards[c], client_seed(cfg.run.seed, 1, c), first_visit=True)
             for c in range(n)]
    step, flops = client_steps(cfg, SAMPLES_B)
    backend.run_clients(tasks[:10], state)  # warm-up: the FLOP cache, allocator, kernels
    project, plain = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        backend.run_clients(tasks, state)
        project.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        for _ in range(n):
            step()
        plain.append((time.perf_counter() - start) / n)
    best_project, best_plain = min(project), min(plain)
    print(f"\n(e) one process, 1 thread, {n} clients of {SAMPLES_B} samples, best of "
          f"{args.rounds}\n")
    print(table([{"project ms/client": f"{1e3 * best_project:.2f}",
                  "plain ms/client": f"{1e3 * best_plain:.2f}",
                  "fixed ms/client": f"{1e3 * (best_project - best_plain):.2f}",
                  "project ÷ plain": f"{best_project / best_plain:.3f}",
                  "plain GFLOP/s": f"{flops / best_plain / 1e9:.1f}"}]))
    torch.set_num_threads(args.threads)


def part_f(args: argparse.Namespace, config: Configure) -> None:
    """Calls of several clients against a call per client, alternating on one backend."""
    if args.rounds < 4:  # A B B A: each setting's first round is a warm-up
        raise SystemExit("--part f needs --rounds 4 or more")
    per_round = args.per_round[0]
    cfg = cross_device(args, config, f"fed.clients_per_round={per_round}",
                       f"fed.rounds={args.rounds}", f"eval.every={args.rounds + 1}")
    client, step_flops = client_steps(cfg, SAMPLES_B)
    flop_rate = max(rate(client, step_flops),
                    concurrent_rate(client_steps, (cfg, SAMPLES_B), CPUS))
    sizes = (1, cfg.ray.clients_per_call)
    world = build_world(cfg)
    backend = RayBackend(world)
    seen: dict[int, list[dict]] = {size: [] for size in sizes}
    inner = backend.run_clients

    def alternating(tasks, global_state):
        # A B B A A B B ...: order and a steady drift of the host weigh on both alike.
        size = backend.pool.clients_per_call = sizes[tasks[0].round // 2 % 2]
        start, cpu_before = time.perf_counter(), cpu_by_role()
        results = inner(tasks, global_state)
        wall = time.perf_counter() - start
        flops = sum(r.client_flops + r.server_flops for r in results)
        seen[size].append({"wall": wall / len(results),
                           "fixed": (wall - flops / flop_rate) / len(results),
                           **{k: (v - cpu_before[k]) / len(results)
                              for k, v in cpu_by_role().items()}})
        log(f"[f {per_round}/round] round {tasks[0].round}, {size} per call: "
            f"{1e3 * seen[size][-1]['wall']:.1f} ms per client-round")
        return results

    backend.run_clients = alternating
    try:
        for _ in run_rounds(world, backend):
            pass
    finally:
        backend.close()
    medians = {size: {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}
               for size, runs in seen.items()}
    rows = [{"clients per call": size, "rounds": len(seen[size]) - 1,
             "wall ms/client-round": f"{1e3 * m['wall']:.2f}",
             "÷ a call per client": f"{m['wall'] / medians[1]['wall']:.3f}",
             "fixed ms/client-round": f"{1e3 * m['fixed']:.2f}",
             "CPU ms/client-round: coordinator, client actors, ray system": ", ".join(
                 f"{1e3 * m[k]:.1f}" for k in cpu_by_role())}
            for size, m in medians.items()]
    print(f"\n(f) {per_round} of {args.registered} clients per round, R "
          f"{flop_rate / 1e9:.1f} GFLOP/s, median of the rounds after each setting's first\n")
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    parser.add_argument("--part", default="a,b,c", help="which of a, b, c, d, e, f to run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run in (a), (c), (f)")
    parser.add_argument("--ks", type=ints, default=[4, 8], help="clients per round in (a)")
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--registered", type=int, default=1000, help="clients in (b)")
    parser.add_argument("--per-round", type=ints, default=[100, 1000], help="in (b)")
    parser.add_argument("--workers", type=lambda s: s.split(","),
                        default=["inline", "thread", "actor"], help="eval.worker in (d)")
    parser.add_argument("--pss-interval", type=float, default=1.0,
                        help="seconds between PSS samples of a run's process tree; 0: none")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")

    def config(base: list[str]) -> Config:
        return load_config(None, [f"fed.rounds={args.rounds}", *base, *args.overrides])

    log(f"{os.cpu_count()} CPUs, {args.threads} torch threads per process, "
        f"load average {os.getloadavg()[0]:.1f}")
    parts = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e, "f": part_f}
    try:
        for name in args.part.split(","):
            parts[name](args, config)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
