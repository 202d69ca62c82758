"""The round loop, written once for every backend.

    for each round:
        sample clients (protocol) -> drop the offline ones -> backend runs each online
        client's round (method.client_round) -> virtual clock: simulated times ->
        protocol: who is aggregated, when the round ends -> aggregate the uploaded
        states (weights = kept samples) -> evaluate -> one row

Under the buffered protocol (FedBuff) a round is one aggregation: it tops the clients
in training up to `fed.concurrency` (they start from the current global state), and
the clients whose simulated finish is not among the buffer's first arrivals stay in
`Progress.in_flight`, to arrive in a later round with a stale update. Every client's
work still runs in the round it starts, so its finish time is known; a round runs its
new clients together, as the synchronous protocols do.

A client whose work is lost (its process crashed: an injected `faults.client_crash`
or a real one the Ray backend survived) returns no result and is "failed". The
loop's state between rounds is a `Progress`, so a run can resume from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sfprompt.platform.config.schema import Config
from sfprompt.platform.fed.aggregation import AGGREGATIONS, aggregate_held
from sfprompt.platform.fed.protocols import PROTOCOLS, is_online
from sfprompt.platform.fed.sampling import client_seed, sample_clients
from sfprompt.platform.fed.staleness import STALENESS, rebase
from sfprompt.platform.loop.backend import Backend
from sfprompt.platform.loop.evaluation import PendingEvaluation, evaluates
from sfprompt.platform.loop.progress import InFlight, Progress
from sfprompt.platform.loop.rows import Outcome, round_row
from sfprompt.platform.loop.world import World, initial_progress
from sfprompt.platform.method.client import ClientTask
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.sim.availability import Schedule
from sfprompt.platform.sim.clock import client_times, message_seconds
from sfprompt.platform.sim.faults import client_crashes, message_faults

log = logging.getLogger(__name__)


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


def _left(schedule: Schedule | None, client: int, start: float, finish: float) -> float:
    """Seconds after its `start` at which `client` went offline before finishing; nan
    when it stayed (always, per_round)."""
    if schedule is None:
        return math.nan
    until = schedule.online_until(client, start)
    return until - start if until is not None and until - start < finish else math.nan


def _copy(progress: Progress) -> Progress:
    """A copy that later rounds cannot change: they replace the global state's and the
    aggregator's dicts (aggregation builds new ones) but grow `visited` and `kept` in
    place."""
    return dataclasses.replace(progress, global_state=dict(progress.global_state),
                               visited=set(progress.visited),
                               aggregator=dict(progress.aggregator), kept=dict(progress.kept),
                               in_flight=list(progress.in_flight), bases=dict(progress.bases))


def _train_round(world: World, backend: Backend, progress: Progress,
                 round_: int) -> tuple[dict, list[Outcome]]:
    """Round `round_` up to its evaluation: its row (accuracy and loss NaN) and
    outcomes, with `progress` updated to the state after it."""
    cfg = world.cfg
    protocol = PROTOCOLS[cfg.fed.protocol]
    schedule = world.availability
    busy = {f.client for f in progress.in_flight}  # the buffered protocol's, still training
    count = protocol.sample_size(cfg.fed) - len(busy)
    online: list[int] = []
    offline: list[int] = []
    if schedule is None:  # per_round: a draw per sampled client
        start = progress.elapsed
        idle = [c for c in range(cfg.fed.num_clients) if c not in busy] if busy else None
        for c in sample_clients(cfg, round_, count, among=idle):
            there = is_online(cfg.run.seed, round_, c, world.profiles[c].availability)
            (online if there else offline).append(c)
    else:  # on the clock: from the clients online when the round starts
        start = progress.elapsed if busy else schedule.first_online(progress.elapsed)
        online = sample_clients(cfg, round_, count,
                                among=[c for c in schedule.online_at(start) if c not in busy])
    wait = start - progress.elapsed
    tasks = [ClientTask(c, round_, world.shards[c], client_seed(cfg.run.seed, round_, c),
                        first_visit=c not in progress.visited,
                        crash=client_crashes(cfg.faults, cfg.run.seed, round_, c),
                        kept=progress.kept.get(c), split=world.split_of(c))
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
    progress.kept.update((r.client, r.kept) for r in results if r.kept is not None)
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
    version = round_ - 1  # the global state they start from
    flights = progress.in_flight + [InFlight(r.client, version, r, t, f,
                                             _left(schedule, r.client, start, t.finish))
                                    for r, t, f in zip(results, times, faults)]
    if len(flights) > len(progress.in_flight):
        progress.bases[version] = progress.global_state
    # The coordinator hears of a client that left when it leaves, instead of its finish.
    statuses, seconds = protocol.select(cfg.fed, [f.event for f in flights],
                                        [not math.isnan(f.left) for f in flights])
    progress.elapsed += wait + seconds
    progress.in_flight = [dataclasses.replace(f, start=f.start - seconds)
                          for f, s in zip(flights, statuses) if s == "training"]
    outcomes = sorted([Outcome(f.client, world.profiles[f.client], s, f.result, f.time, f.faults,
                               left=f.left, staleness=version - f.version, start=f.start,
                               split=world.held_split(f.client))
                       for f, s in zip(flights, statuses) if s != "training"]
                      + [Outcome(c, world.profiles[c], "offline", split=world.held_split(c))
                         for c in offline]
                      + [Outcome(c, world.profiles[c], "failed", crashed=c in crashed,
                                 split=world.held_split(c)) for c in failed],
                      key=lambda o: o.client)
    _aggregate(cfg, progress, [o for o in outcomes if o.status == "ok"], round_)
    # Nothing reads an upload after aggregation: let it go now, not a round later with the
    # caller's outcomes (on Ray: its object-store memory, which the next uploads reuse).
    for o in outcomes:
        if o.result is not None:
            o.result.state = {}
    row = round_row(round_, outcomes, math.nan, math.nan, 0.0, seconds, progress.elapsed,
                    int(round_ == cfg.faults.server_crash_round), wait)
    if row["participants"] and not math.isfinite(row["train_loss"]):
        log.warning("round %d: training loss is %s", round_, row["train_loss"])
    if row["faults.lost_messages"] or row["faults.delay_spikes"]:
        log.info("round %d: %d lost messages resent (%d bytes), %d delay spikes", round_,
                 row["faults.lost_messages"], row["faults.retransmitted_bytes"],
                 row["faults.delay_spikes"])
    progress.round = round_
    if METHODS[cfg.train.method].server_trains:
        progress.server = backend.server_state()
    return row, outcomes


def _aggregate(cfg: Config, progress: Progress, aggregated: list[Outcome], round_: int) -> None:
    """The next global state from the aggregated clients' uploads, stale ones rebased
    onto the current global state (fed/staleness.py); the bases no client still
    training needs are let go."""
    if aggregated:
        weight = STALENESS[cfg.fed.staleness]
        states = [o.result.state if o.staleness == 0 else
                  rebase(o.result.state, progress.bases[round_ - 1 - o.staleness],
                         progress.global_state, weight(cfg.fed, o.staleness))
                  for o in aggregated]
        progress.global_state, progress.aggregator = aggregate_held(
            AGGREGATIONS[cfg.fed.aggregation], states, [o.result.num_kept for o in aggregated],
            progress.global_state, progress.aggregator, cfg.fed)
    else:
        log.warning("round %d: no client update to aggregate; the global state stays", round_)
    needed = {f.version for f in progress.in_flight}
    progress.bases = {v: b for v, b in progress.bases.items() if v in needed}
