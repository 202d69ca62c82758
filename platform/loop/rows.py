"""The rows a round leaves: one in rounds.parquet, one per sampled client in clients.parquet.

An `Outcome` is one sampled client in one round: its status and, if it ran, what it
did and when. What the update learned from counts the aggregated clients; what the
round cost counts every client that ran.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.sim.clock import ClientTime
from sfprompt.platform.sim.faults import MessageFaults
from sfprompt.platform.sim.profiles import Profile
from sfprompt.platform.wire.link import DOWN, KINDS


@dataclass(frozen=True)
class Outcome:
    """One sampled client in one round: its status and, if it ran, what it did and when."""

    client: int
    profile: Profile
    status: str  # ok, late, dropped, offline or failed (fed/protocols.py)
    result: ClientResult | None = None  # None when offline or failed
    time: ClientTime | None = None
    faults: MessageFaults = MessageFaults()  # injected loss and delay spikes
    crashed: bool = False  # an injected client crash (faults.client_crash)
    left: float = math.nan  # seconds after its start it went offline (availability.py)
    # The buffered protocol: aggregations since the model it started from, and when it
    # started, in seconds from the round's start (< 0: in an earlier round).
    staleness: int = 0
    start: float = 0.0
    split: tuple[int, int] | None = None  # (head_blocks, tail_blocks) it holds


def round_row(round_: int, outcomes: list[Outcome], accuracy: float, loss: float, wall: float,
              sim_seconds: float, sim_elapsed: float, server_crashes: int = 0,
              sim_wait: float = 0.0) -> dict:
    """One row of rounds.parquet. What the update learned from (participants, samples,
    training loss) counts the aggregated clients; what the round cost (FLOPs, bytes)
    counts every client that ran, late and dropped ones included: that work was spent.
    `sim_wait` is the simulated time the round waited for a client to come online."""
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
           "sim.wait_seconds": sim_wait, "sim.round_seconds": sim_seconds,
           "sim.elapsed_seconds": sim_elapsed,
           "staleness.mean": (sum(o.staleness for o in outcomes if o.status == "ok")
                              / len(aggregated) if aggregated else math.nan),
           "staleness.max": max((o.staleness for o in outcomes if o.status == "ok"), default=0)}
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
    Idle is the time a client waits, done, for the round to end; times are from its own
    start but `sim.start_seconds`, which is from the round's."""
    rows = []
    for o in outcomes:
        out = {"round": row["round"], "client": o.client, "status": o.status,
               **{f"profile.{k}": v for k, v in dataclasses.asdict(o.profile).items()}}
        if o.split is not None:
            out["split.head_blocks"], out["split.tail_blocks"] = o.split
        r, t = o.result, o.time
        if r is not None and t is not None:
            out.update({"samples": r.num_samples, "kept_samples": r.num_kept,
                        "train_loss": r.train_loss, "local_loss": r.local_loss,
                        "flops.client": r.client_flops, "flops.server": r.server_flops,
                        **{f"bytes.{k}": r.bytes.get(k, 0) for k in KINDS},
                        **{f"messages.{k}": r.messages.get(k, 0) for k in KINDS},
                        "sim.compute_seconds": t.compute, "sim.comm_seconds": t.comm,
                        "sim.server_seconds": t.server, "sim.queue_seconds": t.queue,
                        "sim.finish_seconds": t.finish, "sim.left_seconds": o.left,
                        "sim.start_seconds": o.start, "staleness": o.staleness,
                        "sim.idle_seconds": max(row["sim.round_seconds"]
                                                - (o.start + t.finish), 0.0),
                        **o.faults.columns()})
        rows.append(out)
    return rows
