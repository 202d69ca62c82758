"""One run, end to end: build the world, open the run directory, loop, record.

Everything that can fail on bad input (config, data, model weights) happens before the
run directory is created, so a rejected run leaves nothing behind. After that, every
round rewrites `rounds.parquet` and `clients.parquet` atomically, and `run.json` ends
as `completed`, `failed` (with the error) or `interrupted`: nothing is lost on failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sfprompt.platform.client import ClientResult
from sfprompt.platform.config import Config, flat_items, to_dict
from sfprompt.platform.rounds import LocalBackend, build_world, run_rounds
from sfprompt.results.rundir import (attach_run_log, create_run_dir, run_info,
                                     write_config_toml, write_run_json)
from sfprompt.results.tables import write_clients, write_rounds

log = logging.getLogger(__name__)


def client_rows(round_: int, results: list[ClientResult]) -> list[dict]:
    """One row per client of this round for clients.parquet."""
    return [{"round": round_, "client": r.client, "samples": r.num_samples, "kept_samples": r.num_kept,
             "train_loss": r.train_loss, "local_loss": r.local_loss,
             "flops.client": r.client_flops, "flops.server": r.server_flops,
             **{f"bytes.{k}": v for k, v in r.bytes.items()}} for r in results]


def run_experiment(cfg: Config, on_round: Callable[[dict], None] = lambda row: None) -> Path:
    """Run `cfg`, write its run directory and return the directory's path."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    world = build_world(cfg)
    backend = LocalBackend(world)
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
        for row, results in run_rounds(world, backend):
            rounds.append({**row, **{k: v for k, v in columns.items() if k not in row}})
            clients.extend(client_rows(row["round"], results))
            write_rounds(run_dir, rounds)
            write_clients(run_dir, clients)
            log.info("round %d: accuracy %.4f loss %.4f", row["round"], row["accuracy"], row["loss"])
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
    return run_dir
