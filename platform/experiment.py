"""One run, end to end: build the world, open the run directory, loop, record.

Everything that can fail on bad input (config, data, model weights) happens before the
run directory is created, so a rejected run leaves nothing behind. After that, every
round rewrites `rounds.parquet` and `clients.parquet` atomically, and `run.json` ends
as `completed`, `failed` (with the error) or `interrupted`: nothing is lost on failure.

The backend comes from the caller as a factory (`make_backend(world)`), because
`platform` never imports what builds on it: `sfprompt.actors.backend.make_backend`
returns the backend `run.backend` names (the CLI passes it). Without a factory only
the in-process reference is available here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sfprompt.platform.config import Config, flat_items, to_dict
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.rounds import (Backend, LocalBackend, World, build_world, client_rows,
                                      run_rounds)
from sfprompt.results.rundir import (attach_run_log, create_run_dir, run_info,
                                     write_config_toml, write_run_json)
from sfprompt.results.tables import write_clients, write_rounds

log = logging.getLogger(__name__)


def run_experiment(cfg: Config, on_round: Callable[[dict], None] = lambda row: None,
                   make_backend: Callable[[World], Backend] | None = None) -> Path:
    """Run `cfg`, write its run directory and return the directory's path."""
    if make_backend is None and cfg.run.backend != "local":
        raise ConfigError(f"run.backend: {cfg.run.backend!r} needs make_backend="
                          "sfprompt.actors.backend.make_backend (or set run.backend=local)")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    world = build_world(cfg)
    cfg = world.cfg  # what runs and is recorded (a pooled method runs one client)
    backend = (make_backend or LocalBackend)(world)
    run_dir = create_run_dir(cfg.run.out_dir, cfg.run.run_id or None)
    handler = attach_run_log(run_dir)
    write_config_toml(run_dir, to_dict(cfg))
    info = run_info("running", run_id=run_dir.name, backend=cfg.run.backend)
    write_run_json(run_dir, info)
    log.info("run %s: %s on %s, %d clients", run_dir.name, cfg.train.method, cfg.data.name,
             cfg.fed.num_clients)
    columns = {"run_id": run_dir.name, **flat_items(cfg)}
    rounds, clients = [], []
    start = time.perf_counter()
    try:
        for row, outcomes in run_rounds(world, backend):
            rounds.append({**row, **{k: v for k, v in columns.items() if k not in row}})
            clients.extend(client_rows(row, outcomes))
            write_rounds(run_dir, rounds)
            write_clients(run_dir, clients)
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
        logging.getLogger("sfprompt").removeHandler(handler)
        handler.close()
        getattr(backend, "close", lambda: None)()  # the ray backend's actors and instance
    return run_dir
