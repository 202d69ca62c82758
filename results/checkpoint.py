"""Checkpoints: everything the round loop needs to continue a run where it stopped.

After every round the run directory gets `checkpoint.pt` (atomically: temp file, fsync,
rename), so a run killed at any moment resumes from its last finished round
(`sfprompt resume RUN_DIR`) and ends with the numbers an uninterrupted run has. It
holds the loop's `Progress` (under the buffered protocol, the clients still training
with their uploads) and the table rows so far.

Rows hold plain numbers and strings, and tensors are plain tensors, so the file loads
with `torch.load(weights_only=True)`: resuming never runs code from the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.loop.progress import InFlight, Progress
from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.sim.clock import ClientTime
from sfprompt.platform.sim.faults import MessageFaults
from sfprompt.results.atomic import atomic_open

CHECKPOINT = "checkpoint.pt"


# Bumped when the layout changes (2: tail.classifier; 3: no aggregation memory;
# 4: aggregation rule state); an old file is refused.
_FORMAT = 4


def save_checkpoint(run_dir: str | Path, progress: Progress, rounds: list[dict],
                    clients: list[dict]) -> None:
    """(Re)write `run_dir/checkpoint.pt` with `progress` and the table rows so far."""
    payload = {"format": _FORMAT, "round": int(progress.round),
               "global_state": progress.global_state,
               "visited": sorted(int(c) for c in progress.visited),
               "elapsed": float(progress.elapsed), "server": progress.server,
               "aggregator": progress.aggregator,
               "kept": {int(c): torch.from_numpy(np.asarray(k, dtype=np.int64))
                        for c, k in progress.kept.items()},
               "in_flight": [_flight_dict(f) for f in progress.in_flight],
               "bases": {int(v): b for v, b in progress.bases.items()},
               "rounds": [_plain(r) for r in rounds],
               "clients": [_plain(r) for r in clients]}
    with atomic_open(Path(run_dir) / CHECKPOINT) as f:
        torch.save(payload, f)


def load_checkpoint(run_dir: str | Path) -> tuple[Progress, list[dict], list[dict]] | None:
    """`(progress, rounds rows, clients rows)` of `run_dir`, or None when no round finished."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # a foreign or damaged file: say which, not a pickle trace
        raise SfpromptError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if payload.get("format") != _FORMAT:
        raise SfpromptError(f"{path}: checkpoint format {payload.get('format')!r}, "
                            f"this version reads {_FORMAT}")
    progress = Progress(global_state=payload["global_state"], round=payload["round"],
                        visited=set(payload["visited"]), elapsed=payload["elapsed"],
                        server=payload["server"], aggregator=payload["aggregator"],
                        kept={c: k.numpy() for c, k in payload.get("kept", {}).items()},
                        in_flight=[_flight(d) for d in payload.get("in_flight", [])],
                        bases=payload.get("bases", {}))
    return progress, payload["rounds"], payload["clients"]


def _flight_dict(f: InFlight) -> dict:
    """An InFlight as plain values (dataclasses of numbers, dicts and tensors)."""
    result = _plain(dataclasses.asdict(f.result))
    result.update(bytes=_plain(result["bytes"]), messages=_plain(result["messages"]))
    if f.result.kept is not None:
        result["kept"] = torch.from_numpy(np.asarray(f.result.kept, dtype=np.int64))
    return {**_plain({"client": f.client, "version": f.version, "left": f.left,
                      "start": f.start}),
            "result": result, "time": _plain(dataclasses.asdict(f.time)),
            "faults": _plain(dataclasses.asdict(f.faults))}


def _flight(d: dict) -> InFlight:
    result = dict(d["result"])
    if result["kept"] is not None:
        result["kept"] = result["kept"].numpy()
    return InFlight(d["client"], d["version"], ClientResult(**result), ClientTime(**d["time"]),
                    MessageFaults(**d["faults"]), d["left"], d["start"])


def _plain(row: dict) -> dict:
    """A row with numpy scalars as Python numbers (weights_only loads no numpy types)."""
    return {k: v.item() if hasattr(v, "item") and not isinstance(v, torch.Tensor) else v
            for k, v in row.items()}
