"""The `sfprompt` command. Only this module prints.

    sfprompt run    [--config FILE] [key=value ...]   run a simulation, write runs/<id>/
    sfprompt resume RUN_DIR [--rounds N]              continue a killed, interrupted or failed run
    sfprompt config [--config FILE] [key=value ...]   print the resolved configuration
    sfprompt profiles                                 list the device and server tiers
    sfprompt models [PATTERN] [--refused]             timm ViT names the split takes
    sfprompt study run FILE [--dir DIR] [--parallel N]  run an Optuna study (studies/)
    sfprompt study resume DIR [--parallel N]          continue a stopped or killed study
    sfprompt study export DIR                         trials.parquet, Pareto front, plots
    sfprompt compare [--config FILE] [--methods a,b] [--seeds 0,1,2] [--target ACC] [key=value ...]
                                                      every method x seed, one table + plots
    sfprompt report DIR [--target ACC]                report.html (+ PNGs, tables) of a run, comparison or study
    sfprompt cost [--config FILE] [--samples N] [--classes C] [--methods a,b] [key=value ...]
                                                      bytes and FLOPs of one client's round, no compute
    sfprompt plan [--config FILE] [--splits 0:0,1:1] [--samples N] [--memory-fraction F] [key=value ...]
                                                      the split each device should hold, no compute

User errors (bad keys, missing files, impossible splits) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from sfprompt import api
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


@contextlib.contextmanager
def _clients_bar() -> Iterator[None]:
    """On a terminal, a bar of the round's clients settled, with elapsed time and ETA
    (tqdm, on stderr); elsewhere (CI, pipes, logs) nothing: the line per round is it."""
    if not sys.stderr.isatty():
        yield
        return
    from tqdm import tqdm
    bar = None

    def advance(settled: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="clients", unit="client", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        bar.update(settled - bar.n)
        if settled >= total:
            bar.close()
            bar = None

    try:
        with api.on_client_done(advance):
            yield
    finally:
        if bar is not None:
            bar.close()


def _config(args):
    from sfprompt.platform.config.load import load_config
    return load_config(args.config, args.overrides)


def cmd_run(args) -> int:
    cfg = _config(args)
    print(f"sfprompt: {cfg.train.method} on {cfg.data.name} with {cfg.model.name} "
          f"({cfg.model.weights} weights), {cfg.fed.num_clients} clients, "
          f"{cfg.fed.clients_per_round} per round, {cfg.fed.rounds} rounds", flush=True)
    with _clients_bar():
        run = api.run(cfg, on_round=_progress(cfg.fed.rounds))
    print(f"results: {run.dir}")
    return 0


def cmd_resume(args) -> int:
    from sfprompt.platform.config.load import load_config
    rounds = load_config(f"{args.dir}/config.toml").fed.rounds  # a missing file: one line
    print(f"sfprompt: resuming {args.dir}", flush=True)
    with _clients_bar():
        run = api.resume(args.dir, on_round=_progress(args.rounds or rounds), rounds=args.rounds)
    print(f"results: {run.dir}")
    return 0


def cmd_config(args) -> int:
    import tomli_w

    from sfprompt.platform.config.dotted import to_dict
    print(tomli_w.dumps(to_dict(_config(args))), end="")
    return 0


def cmd_models(args) -> int:
    from tqdm import tqdm
    bar = tqdm(desc="checking", unit="model", leave=False, file=sys.stderr,
               disable=not sys.stderr.isatty())
    found = api.models(args.pattern, on_model=lambda name: bar.update())
    bar.close()
    for name, why in found.items():
        if why is None or args.refused:
            print(name if why is None else f"{name}  (refused: {why})")
    if not any(why is None for why in found.values()):
        raise SfpromptError(f"no timm ViT the split takes matches {args.pattern!r}")
    return 0


def cmd_profiles(args) -> int:
    from sfprompt.platform.sim.profiles import SERVER_TIERS, TIERS
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


def _trial_printer(objectives):
    def show(trial, done: int, total: int) -> None:
        values = "  ".join(f"{o.name} {v:.4g}" for o, v in zip(objectives, trial.values or []))
        reason = trial.user_attrs.get("fail_reason", "")
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial.params.items())
        print(f"[{done}/{total}] trial {trial.number:>4} {trial.state.name.lower():<8} "
              f"{seconds:7.1f} s  {params}"
              f"{'  ' + values if values else ''}{'  (' + reason + ')' if reason else ''}",
              flush=True)
    return show


def _study_exports(study_dir) -> int:
    from sfprompt.studies.export import PARETO_MD, export_study
    written = export_study(study_dir)
    print((study_dir / PARETO_MD).read_text(), end="")
    print("exports:\n" + "\n".join(f"  {p}" for p in written))
    return 0


def cmd_study(args) -> int:
    from pathlib import Path

    import optuna

    from sfprompt.actors.trials import RayExecutor
    from sfprompt.studies.runner import run_study, start_study
    from sfprompt.studies.spec import load_spec
    from sfprompt.studies.storage import read_study_spec
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trial lines below say it all
    if args.action == "run":
        show = _trial_printer(load_spec(args.target).objectives)
        study_dir = start_study(args.target, args.dir, args.parallel, on_trial=show,
                                make_executor=RayExecutor)
    else:
        study_dir = Path(args.target)
        if args.action == "resume":
            show = _trial_printer(read_study_spec(study_dir).objectives)
            run_study(study_dir, args.parallel, on_trial=show, make_executor=RayExecutor)
    print(f"study: {study_dir}")
    return _study_exports(study_dir)


METHOD_ORDER = ",".join(api.COMPARE_METHODS)


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SfpromptError(f"{what}: give a comma-separated list, got {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _names(text, "--seeds")]
    except ValueError:
        raise SfpromptError(f"--seeds: expected integers like 0,1,2, got {text!r}") from None


def _print_report(files: list, dir) -> int:
    """A comparison's table, then every file written (report.html last)."""
    from pathlib import Path
    table = Path(dir) / "compare.md"
    if table in files:
        print(table.read_text(), end="")
    print("results:\n" + "".join(f"  {p}\n" for p in files), end="")
    return 0


def cmd_compare(args) -> int:
    from sfprompt.actors.backend import make_backend
    from sfprompt.results.comparison import run_compare
    cfg = _config(args)
    methods, seeds = _names(args.methods, "--methods"), _seeds(args.seeds)

    def announce(i: int, n: int, run_cfg) -> None:
        print(f"run {i + 1}/{n}: {run_cfg.train.method}, seed {run_cfg.run.seed}", flush=True)

    compare_dir = run_compare(cfg, methods, seeds, on_run=announce,
                              on_round=_progress(cfg.fed.rounds), make_backend=make_backend)
    return _print_report(api.report_files(compare_dir, args.target, methods), compare_dir)


def cmd_report(args) -> int:
    return _print_report(api.report_files(args.dir, args.target), args.dir)


def cmd_cost(args) -> int:
    from sfprompt.platform.sim.costmodel import cost_table
    cfg = _config(args)
    rows = cost_table(cfg, _names(args.methods, "--methods"), args.samples, args.classes)
    print(f"{cfg.model.name} at {cfg.model.img_size} px, split {cfg.split.head_blocks}/"
          f"{cfg.split.tail_blocks}, {cfg.prompt.length} prompts, keep {cfg.prune.keep}, "
          f"epochs local {cfg.train.local_epochs} / split {cfg.train.split_epochs}, batch "
          f"{cfg.train.batch_size}, {args.samples} samples, {args.classes} classes; one client, "
          "one round (MB = 1e6 bytes)")
    kinds = ("download", "smashed_up", "activations_down", "gradients_up", "gradients_down",
             "upload")
    print(f"{'method':<12}{'kept':>6}{'client GFLOP':>14}{'server GFLOP':>14}"
          + "".join(f"{k:>18}" for k in kinds) + f"{'MB/round':>11}{'one-off MB':>12}"
          f"{'FLOPs/fl':>10}{'bytes/fl':>10}")
    for r in rows:
        ratios = "".join(f"{r[k]:>10.4g}" if k in r else f"{'-':>10}"
                         for k in ("flops.client_vs_fl", "bytes.round_vs_fl"))
        print(f"{r['method']:<12}{r['kept_samples']:>6}{r['flops.client'] / 1e9:>14,.1f}"
              f"{r['flops.server'] / 1e9:>14,.1f}"
              + "".join(f"{r[f'bytes.{k}'] / MB:>18,.2f}" for k in kinds)
              + f"{r['bytes.round'] / MB:>11,.2f}{r['bytes.frozen_download'] / MB:>12,.2f}{ratios}")
    return 0


def _splits(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(x) for x in item.split(":")) for item in _names(text, "--splits")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SfpromptError(f"--splits: expected head:tail pairs like 0:0,1:1, got {text!r}")
    return pairs


def cmd_plan(args) -> int:
    import pandas as pd

    from sfprompt.platform.sim.splitplan import plan_splits
    cfg = _config(args)
    rows = plan_splits(cfg, _splits(args.splits), args.samples, args.classes,
                       args.memory_fraction)
    print(f"{cfg.train.method}, {cfg.model.name} at {cfg.model.img_size} px, {args.samples} "
          f"samples per client; one client's later round alone on each device of the fleet "
          f"(MB = 1e6 bytes, MiB of memory = 2^20 bytes, plan = fastest that fits "
          f"{args.memory_fraction:g} of the device's memory)")
    table = pd.DataFrame({
        "device": [r["tier"] for r in rows], "clients": [r["clients"] for r in rows],
        "split": [f"{r['split.head_blocks']}:{r['split.tail_blocks']}" for r in rows],
        "memory MiB": [r["memory_bytes"] / 2**20 for r in rows],
        "fits": [r["fits"] for r in rows],
        "client GFLOP": [r["flops.client"] / 1e9 for r in rows],
        "MB/round": [r["bytes.round"] / MB for r in rows],
        "one-off MB": [r["bytes.frozen_download"] / MB for r in rows],
        "compute s": [r["sim.compute_seconds"] for r in rows],
        "comm s": [r["sim.comm_seconds"] for r in rows],
        "round s": [r["sim.round_seconds"] for r in rows],
        "plan": ["<-" if r["chosen"] else "" for r in rows]})
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    for device in dict.fromkeys(table["device"]):
        if not (table[table["device"] == device]["plan"] != "").any():
            print(f"{device}: no candidate split fits", flush=True)
    return 0


def _add_comparison_commands(sub) -> None:
    p = sub.add_parser("compare", help="run several methods and seeds, tabulate and plot")
    p.add_argument("--config", "-c", help="TOML file (defaults apply to what it leaves out)")
    p.add_argument("--methods", default=METHOD_ORDER, help=f"comma-separated (default {METHOD_ORDER})")
    seeds = ",".join(map(str, api.COMPARE_SEEDS))
    p.add_argument("--seeds", default=seeds, help=f"comma-separated run seeds (default {seeds})")
    p.add_argument("--target", type=float,
                   help="target accuracy (default 0.8 x the best accuracy of any run)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("report", help="report.html, plots and tables of a run, comparison or "
                       "study directory")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--target", type=float, help="target accuracy of a comparison's table")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("cost", help="bytes and FLOPs of one client's round, without compute")
    p.add_argument("--config", "-c", help="TOML file (defaults apply to what it leaves out)")
    p.add_argument("--samples", type=int, default=500, help="samples the client holds (500)")
    p.add_argument("--classes", type=int, default=10, help="classes of the task (10)")
    methods = ",".join(api.COST_METHODS)
    p.add_argument("--methods", default=methods, help=f"comma-separated (default {methods})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.set_defaults(fn=cmd_cost)
    p = sub.add_parser("plan", help="which split each device of the fleet should hold: "
                       "footprint and simulated round time per candidate, without compute")
    p.add_argument("--config", "-c", help="TOML file (defaults apply to what it leaves out)")
    p.add_argument("--splits", default="0:0,1:1,2:2",
                   help="candidate head_blocks:tail_blocks, comma-separated (0:0,1:1,2:2)")
    p.add_argument("--samples", type=int, default=500, help="samples a client holds (500)")
    p.add_argument("--classes", type=int, default=10, help="classes of the task (10)")
    p.add_argument("--memory-fraction", type=float, default=1.0,
                   help="share of a device's memory the client may use (1)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.set_defaults(fn=cmd_plan)


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
    p = sub.add_parser("resume", help="continue a killed, interrupted or failed run")
    p.add_argument("dir", metavar="RUN_DIR")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="continue to N rounds in all (fed.rounds), a completed run too")
    p.set_defaults(fn=cmd_resume)
    sub.add_parser("profiles", help="list the device and server tiers").set_defaults(fn=cmd_profiles)
    p = sub.add_parser("models", help="timm ViT names the split takes (checked on meta tensors)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default *)")
    p.add_argument("--refused", action="store_true", help="also list refused ones, with why")
    p.set_defaults(fn=cmd_models)
    study = sub.add_parser("study", help="Optuna studies over split, prompt, keep, ...")
    actions = study.add_subparsers(dest="action", required=True)
    for action, target, help_ in (("run", "FILE", "run the study file FILE"),
                                  ("resume", "DIR", "continue the study in DIR"),
                                  ("export", "DIR", "write the exports of the study in DIR")):
        p = actions.add_parser(action, help=help_)
        p.add_argument("target", metavar=target)
        if action == "run":
            p.add_argument("--dir", help="study directory (default runs/studies/<name>)")
        if action != "export":
            p.add_argument("--parallel", type=int, help="trials at once (> 1: Ray tasks)")
        p.set_defaults(fn=cmd_study)
    _add_comparison_commands(sub)
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
