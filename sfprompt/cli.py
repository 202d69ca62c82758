"""The `sfprompt` command. Only this module prints.

    sfprompt run    [--config FILE] [key=value ...]   run a simulation, write runs/<id>/
    sfprompt config [--config FILE] [key=value ...]   print the resolved configuration

User errors (bad keys, missing files, impossible splits) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sfprompt.platform.errors import SfpromptError

MB = 1e6


def _progress(total_rounds: int):
    def show(row: dict) -> None:
        print(f"round {row['round']:>3}/{total_rounds}  acc {row['accuracy']:.4f}  "
              f"loss {row['loss']:.4f}  up {row['bytes.up'] / MB:8.2f} MB  "
              f"down {row['bytes.down'] / MB:8.2f} MB  "
              f"client {row['flops.client'] / 1e9:8.1f} GFLOP  "
              f"server {row['flops.server'] / 1e9:8.1f} GFLOP  wall {row['wall_seconds']:6.1f} s",
              flush=True)
    return show


def _config(args):
    from sfprompt.platform.config import load_config
    return load_config(args.config, args.overrides)


def cmd_run(args) -> int:
    from sfprompt.platform.experiment import run_experiment
    cfg = _config(args)
    print(f"sfprompt: {cfg.train.method} on {cfg.data.name} with {cfg.model.name} "
          f"({cfg.model.weights} weights), {cfg.fed.num_clients} clients, "
          f"{cfg.fed.clients_per_round} per round, {cfg.fed.rounds} rounds", flush=True)
    run_dir = run_experiment(cfg, on_round=_progress(cfg.fed.rounds))
    print(f"results: {run_dir}")
    return 0


def cmd_config(args) -> int:
    import tomli_w
    from sfprompt.platform.config import to_dict
    print(tomli_w.dumps(to_dict(_config(args))), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sfprompt", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("run", cmd_run, "run a simulation"),
                            ("config", cmd_config, "print the resolved configuration")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", "-c", help="TOML file (defaults apply to what it leaves out)")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides, e.g. fed.rounds=20 prune.keep=0.3")
        p.set_defaults(fn=fn)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except SfpromptError as err:
        print(f"sfprompt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
