"""One run, end to end: build the world, open the run directory, loop, record.

Everything that can fail on bad input (config, data, model weights) happens before the
run directory is created, so a rejected run leaves nothing behind. After that, every
round rewrites `rounds.parquet`, `clients.parquet` and `checkpoint.pt` atomically, and
`run.json` ends as `completed`, `failed` (with the error) or `interrupted`: nothing is
lost on failure. `resume_experiment` continues a run that did not complete (killed,
interrupted, failed) from its `config.toml` and checkpoint, in the same directory.

The backend comes from the caller as a factory (`make_backend(world)`), because
`platform` never imports what builds on it: `sfprompt.actors.backend.make_backend`
returns the backend `run.backend` names (the CLI passes it). Without a factory only
the in-process reference is available here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sfprompt.platform.config.dotted import flatten, to_dict
from sfprompt.platform.config.load import load_config, replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.loop.backend import Backend, LocalBackend
from sfprompt.platform.loop.progress import Progress
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.rows import client_rows
from sfprompt.platform.loop.world import World, build_world, initial_progress
from sfprompt.results.checkpoint import load_checkpoint, save_checkpoint
from sfprompt.results.rundir import (attach_run_log, create_run_dir, require_run_dir, run_info,
                                     write_config_toml, write_run_json)
from sfprompt.results.scalars import Scalars
from sfprompt.results.tables import write_clients, write_rounds

log = logging.getLogger(__name__)


def _start(cfg: Config, make_backend: Callable[[World], Backend] | None
           ) -> tuple[World, Backend]:
    if make_backend is None and cfg.run.backend != "local":
        raise ConfigError(f"run.backend: {cfg.run.backend!r} needs make_backend="
                          "sfprompt.actors.backend.make_backend (or set run.backend=local)")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    world = build_world(cfg)
    return world, (make_backend or LocalBackend)(world)


def run_experiment(cfg: Config, on_round: Callable[[dict], None] = lambda row: None,
                   make_backend: Callable[[World], Backend] | None = None) -> Path:
    """Run `cfg`, write its run directory and return the directory's path."""
    world, backend = _start(cfg, make_backend)
    cfg = world.cfg  # what runs and is recorded (a pooled method runs one client)
    try:
        run_dir = create_run_dir(cfg.run.out_dir, cfg.run.run_id or None)
    except BaseException:  # e.g. the run id is taken: the backend's actors must not leak
        backend.close()
        raise
    handler = attach_run_log(run_dir)
    write_config_toml(run_dir, to_dict(cfg))
    info = run_info("running", run_id=run_dir.name, backend=cfg.run.backend,
                    **_describe(backend))
    write_run_json(run_dir, info)
    log.info("run %s: %s on %s, %d clients", run_dir.name, cfg.train.method, cfg.data.name,
             cfg.fed.num_clients)
    return _record(run_dir, world, backend, info, on_round, handler)


def resume_experiment(run_dir: str | Path, on_round: Callable[[dict], None] = lambda row: None,
                      make_backend: Callable[[World], Backend] | None = None,
                      rounds_to: int | None = None) -> Path:
    """Continue the run in `run_dir` after its last checkpointed round (from round 1 if
    it has none), with the config it recorded, appending to the same directory.

    `rounds_to` extends it to that many rounds (fed.rounds), a completed run too: every
    draw is seeded by round, so the rounds are those of a run started with that many,
    except that the old last round was evaluated (always, whatever eval.every)."""
    run_dir = require_run_dir(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    cfg = load_config(run_dir / "config.toml")
    saved = load_checkpoint(run_dir)
    progress, rounds, clients = saved if saved is not None else (None, [], [])
    if rounds_to is not None:
        if rounds_to < len(rounds):
            raise ConfigError(f"--rounds {rounds_to}: {run_dir} has {len(rounds)} rounds done")
        cfg = replace(cfg, **{"fed.rounds": rounds_to})
    if info.get("status") == "completed" and cfg.fed.rounds <= len(rounds):
        raise SfpromptError(f"{run_dir}: the run already completed its {len(rounds)} rounds; "
                            f"nothing to resume (--rounds N continues it to N)")
    if rounds_to is not None:  # the rows so far say the config the run now has
        write_config_toml(run_dir, to_dict(cfg))
        rounds = [{**r, "fed.rounds": rounds_to} for r in rounds]
    if rounds:  # the tables may hold a round the checkpoint missed (killed in between)
        write_rounds(run_dir, rounds)
        write_clients(run_dir, clients)
    world, backend = _start(cfg, make_backend)
    handler = attach_run_log(run_dir)
    log.info("run %s: resumed after round %d (status was %s)", run_dir.name, len(rounds),
             info.get("status"))
    info.update(status="running", resumes=info.get("resumes", 0) + 1, **_describe(backend))
    info.pop("error", None)
    write_run_json(run_dir, info)
    return _record(run_dir, world, backend, info, on_round, handler, progress, rounds, clients)


def _describe(backend: Backend) -> dict:
    """What run.json records of where the backend runs (the ray backend: its Ray
    instance and namespace, so two runs at once can be told apart)."""
    return backend.describe()


def _record(run_dir: Path, world: World, backend: Backend, info: dict,
            on_round: Callable[[dict], None], handler: logging.Handler,
            progress: Progress | None = None, rounds: list[dict] | None = None,
            clients: list[dict] | None = None) -> Path:
    """The loop, from `progress` on, writing tables, checkpoint and run.json."""
    columns = {"run_id": run_dir.name, **flatten(world.cfg)}
    rounds, clients = list(rounds or []), list(clients or [])
    progress = progress or initial_progress(world)
    scalars = Scalars(run_dir, world.cfg.log.tensorboard, next_round=len(rounds) + 1)
    start = time.perf_counter()
    try:
        for row, outcomes in run_rounds(world, backend, progress):
            rounds.append({**row, **{k: v for k, v in columns.items() if k not in row}})
            clients.extend(client_rows(row, outcomes))
            write_rounds(run_dir, rounds)
            write_clients(run_dir, clients)
            save_checkpoint(run_dir, progress, rounds, clients)
            scalars.write(row)
            log.info("round %d: accuracy %.4f loss %.4f, %.1f simulated s", row["round"],
                     row["accuracy"], row["loss"], row["sim.round_seconds"])
            on_round(row)
        info.update(status="completed")
    except KeyboardInterrupt:
        info.update(status="interrupted")
        raise
    except Exception as err:
        info.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        info.update(wall_seconds=round(time.perf_counter() - start, 3), rounds_done=len(rounds))
        write_run_json(run_dir, info)
        scalars.close()
        logging.getLogger("sfprompt").removeHandler(handler)
        handler.close()
        backend.close()  # the ray backend's actors and instance
    return run_dir
