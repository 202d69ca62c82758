"""The `sfprompt` command. Only this module prints.

    sfprompt run    [--config FILE] [key=value ...]   run a simulation, write runs/<id>/
    sfprompt config [--config FILE] [key=value ...]   print the resolved configuration
    sfprompt profiles                                 list the device and server tiers

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
              f"server {row['flops.server'] / 1e9:8.1f} GFLOP  "
              f"clients {row['participants']}/{row['sampled']}  "
              f"sim {row['sim.round_seconds']:8.1f} s  wall {row['wall_seconds']:6.1f} s",
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


def cmd_profiles(args) -> int:
    from sfprompt.platform.profiles import SERVER_TIERS, TIERS
    print(f"{'client tier':<15}{'peak GFLOP/s':>13}{'eff':>6}{'GFLOP/s':>9}{'up Mbit/s':>11}"
          f"{'down Mbit/s':>13}{'RTT ms':>8}{'jitter ms':>11}{'avail':>7}{'mem GiB':>9}  example")
    for name, t in TIERS.items():
        print(f"{name:<15}{t.peak_flops_per_s / 1e9:>13,.0f}{t.efficiency:>6.2f}"
              f"{t.peak_flops_per_s * t.efficiency / 1e9:>9,.1f}{t.uplink_bps / 1e6:>11,.0f}"
              f"{t.downlink_bps / 1e6:>13,.0f}{t.rtt_s * 1e3:>8.0f}{t.jitter_s * 1e3:>11.0f}"
              f"{t.availability:>7.2f}{t.memory_bytes / 2**30:>9.0f}  {t.example}")
    print(f"\n{'server tier':<15}{'peak TFLOP/s':>13}{'eff':>6}{'TFLOP/s':>9}{'slots':>7}  example")
    for name, t in SERVER_TIERS.items():
        print(f"{name:<15}{t.peak_flops_per_s / 1e12:>13,.0f}{t.efficiency:>6.2f}"
              f"{t.peak_flops_per_s * t.efficiency / 1e12:>9,.1f}{t.concurrency:>7}  {t.example}")
    print("\nsources (effective throughput = peak x eff, our assumption):")
    for name, t in {**TIERS, **SERVER_TIERS}.items():
        print(f"  {name}: {t.source}")
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
    sub.add_parser("profiles", help="list the device and server tiers").set_defaults(fn=cmd_profiles)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The console gets warnings only; the run's own log file (run.log) gets INFO.
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[console])
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
