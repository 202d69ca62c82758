"""`make mutate`: mutation testing of the core modules, each against its own fast tests.

For each module below, mutmut (2.x: it mutates a file in place, runs the tests, puts the
file back) plants one small bug at a time — a flipped comparison, an off-by-one, a
dropped argument — and counts the mutants the module's tests kill. The work happens in
a copy of the tracked files under a temporary directory, so the checkout is never
mutated and a killed run leaves nothing behind in it; in the copy, pytest
imports the copy (the current directory comes first on sys.path).

    python tools/mutate.py                    every module, then the table
    python tools/mutate.py aggregation clock  only these (names below)

Prints one line per module as it ends, with its surviving mutants (`mutmut show` of
each) so a reader can judge whether each is equivalent (no test could tell it apart)
or a missing test, and a Markdown table at the end; the README keeps the latest table.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
T = "tests/platform_tests"
# module name -> (file to mutate, its fast test files)
MODULES = {
    "aggregation": ("platform/fed/aggregation.py",
                    [f"{T}/test_aggregation_rules.py", f"{T}/test_pruning_aggregation.py"]),
    "clock": ("platform/sim/clock.py", [f"{T}/test_clock.py"]),
    "partition": ("platform/data/partition.py", [f"{T}/test_partition.py"]),
    "sampling": ("platform/fed/sampling.py", [f"{T}/test_protocols.py",
                                             f"{T}/test_availability.py"]),
    "availability": ("platform/sim/availability.py", [f"{T}/test_availability.py"]),
    "protocols": ("platform/fed/protocols.py", [f"{T}/test_protocols.py"]),
    "staleness": ("platform/fed/staleness.py", [f"{T}/test_protocols.py"]),
    "codecs": ("platform/wire/codecs.py", [f"{T}/test_compression.py"]),
    "link": ("platform/wire/link.py", [f"{T}/test_accounting.py"]),
    "flops": ("platform/wire/flops.py", [f"{T}/test_flop_cache.py", f"{T}/test_accounting.py"]),
    "pruning": ("platform/method/pruning.py", [f"{T}/test_core_truths.py",
                                               f"{T}/test_pruning_aggregation.py"]),
    "split": ("platform/model/split.py", [f"{T}/test_split.py", f"{T}/test_split_truths.py",
                                          f"{T}/test_plans.py"]),
    "plans": ("platform/model/plans.py", [f"{T}/test_plans.py"]),
    "steps": ("platform/method/steps.py", [f"{T}/test_steps.py"]),
    "sfprompt": ("platform/method/sfprompt.py", [f"{T}/test_methods.py",
                                                 f"{T}/test_prune_once.py"]),
    "baselines": ("platform/method/baselines.py", [f"{T}/test_methods.py"]),
}


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def _counts(work: Path) -> dict[str, list[int]]:
    """Mutant ids by status (killed, survived, timeout, suspicious, skipped, untested),
    from mutmut's own cache (a SQLite file; its `results` command lists no killed ones)."""
    with sqlite3.connect(work / ".mutmut-cache") as db:
        rows = db.execute("SELECT id, status FROM Mutant").fetchall()
    found: dict[str, list[int]] = {}
    for id_, status in rows:
        found.setdefault(status.split("_", 1)[-1], []).append(id_)
    return found


def mutate(name: str, work: Path) -> dict:
    path, tests = MODULES[name]
    (work / ".mutmut-cache").unlink(missing_ok=True)
    # mutmut 2.x counts only exit status 1 as failing tests, so a mutant that breaks the
    # import (pytest exits 2: collection error) would pass as a survivor: any failure is
    # made 1, in the process mutmut starts (its timeout kills that one).
    code = "import sys, pytest; sys.exit(1 if pytest.main(sys.argv[1:]) else 0)"
    runner = f"{PY} -c '{code}' -x -q -p no:cacheprovider {' '.join(tests)}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([PY, "-m", "mutmut", "run", "--paths-to-mutate", path, "--runner", runner,
                    "--tests-dir", "tests", "--no-progress", "--simple-output"],
                   cwd=work, env=env, capture_output=True, text=True)
    counts = _counts(work)
    survivors = counts.get("survived", [])
    shown = [subprocess.run([PY, "-m", "mutmut", "show", str(i)], cwd=work,
                            capture_output=True, text=True).stdout for i in survivors]
    # "suspicious" is mutmut's killed-but-slow (tests failed, in over twice the baseline
    # time), which a busy host makes common: killed all the same.
    killed = sum(len(counts.get(s, [])) for s in ("killed", "timeout", "suspicious"))
    total = killed + len(survivors)
    return {"module": path, "mutants": total, "killed": killed, "survived": len(survivors),
            "score": killed / total if total else float("nan"), "shown": shown,
            "seconds": time.perf_counter() - start}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"mutate: unknown module {unknown[0]!r} (known: {', '.join(MODULES)})",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("mutmut") is None:
        print("mutate: mutmut is not installed (make mutate installs it)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfprompt-mutate-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        for name in names or list(MODULES):
            row = mutate(name, work)
            rows.append(row)
            print(f"{row['module']}: {row['killed']}/{row['mutants']} killed "
                  f"({row['score']:.1%}) in {row['seconds']:.0f} s", flush=True)
            for shown in row["shown"]:  # now, so a stopped run keeps what it found
                print(shown, flush=True)
    print("\n| module | mutants | killed | survived | score |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['module']}` | {r['mutants']} | {r['killed']} | {r['survived']} "
              f"| {r['score']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
