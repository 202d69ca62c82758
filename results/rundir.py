"""The run directory: where one run's files go and what identifies the run.

A run writes `runs/<run-id>/` (docs/design.md, The run directory) holding
`config.toml`, `rounds.parquet`, `clients.parquet`, `run.json` and `run.log`. Run ids sort by start time
(`20261127-081500-ab12`: UTC date, time, 4 random hex digits so runs started in the
same second do not clash), and a directory is never reused: overwriting an earlier
run's tables would silently mix two experiments.

`run.json` records what is needed to reproduce or explain a number later: package
versions, the git commit (and whether the tree had uncommitted changes), the host, the
start time and the run's status. Build it once with `run_info` at start, then update
`status` (and add e.g. `finished`) on the same dict and write it again.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import platform
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

import tomli_w

import sfprompt
from sfprompt.platform.errors import SfpromptError
from sfprompt.results.atomic import atomic_write_text, write_json

logger = logging.getLogger(__name__)

# Distributions whose versions change results; looked up by metadata, never imported
# (importing ray costs seconds and starts nothing useful here).
VERSIONED_DISTRIBUTIONS = (
    "torch", "torchvision", "timm", "numpy", "pandas", "pyarrow", "ray", "optuna",
)
_ID_ATTEMPTS = 8  # fresh random suffixes to try before giving up on a generated id


def new_run_id(now: dt.datetime | None = None) -> str:
    """`YYYYmmdd-HHMMSS-xxxx` in UTC, so ids sort by start time across time zones."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def create_run_dir(out_dir: str | Path, run_id: str | None = None) -> Path:
    """Create and return `out_dir/run_id` (parents too); refuse an existing directory.

    With `run_id=None` an id is generated, retried with a new random suffix on the rare
    clash; an explicit id that exists is an error, never a merge.
    """
    out = Path(out_dir)
    if run_id is not None and (run_id in ("", ".", "..") or Path(run_id).name != run_id):
        raise SfpromptError(f"run id {run_id!r} must be a plain directory name")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SfpromptError(f"cannot create output directory {out}: {e.strerror}") from e
    for _ in range(1 if run_id is not None else _ID_ATTEMPTS):
        path = out / (run_id if run_id is not None else new_run_id())
        try:
            path.mkdir()  # not exist_ok: mkdir is the atomic "claim this id" step
            return path
        except FileExistsError:
            continue
    raise SfpromptError(f"run directory {path} already exists; pick another run id")


def require_run_dir(path: str | Path) -> Path:
    """`path` as a Path, if it is a run directory (its config.toml and run.json are
    there); else a one-line error naming it."""
    path = Path(path)
    if not (path / "config.toml").is_file() or not (path / "run.json").is_file():
        raise SfpromptError(f"{path}: not a run directory (no config.toml or run.json)")
    return path


def git_state(directory: str | Path) -> dict[str, Any]:
    """`{"commit", "dirty"}` of the git checkout rooted at `directory`, else Nones.

    Only a checkout *rooted* at `directory` counts: an installed package sitting in a
    virtualenv inside some other repository must not report that repository's commit.
    """
    directory = Path(directory).resolve()
    unknown = {"commit": None, "dirty": None}
    # GIT_DIR and friends (set e.g. inside git hooks) would point git elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True, text=True, timeout=10, env=env,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            logger.debug("git %s in %s failed: %s", args[0], directory, e)
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "--show-toplevel", "HEAD")
    if head is None:
        return unknown
    toplevel, commit = head.splitlines()
    if Path(toplevel).resolve() != directory:
        return unknown
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": None if status is None else bool(status.strip())}


def _cpu_model() -> str:
    """The processor's name (`platform.processor()` is empty on most Linux hosts)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()


def _torch_info() -> dict[str, Any] | None:
    """Torch build and devices; imported here, not at module level (results stays light)."""
    try:
        import torch
    except ImportError:
        return None
    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "num_threads": torch.get_num_threads(),
        # The kernels torch dispatches to (e.g. AVX2, AVX512) decide the last bits of a
        # float sum: results are bit for bit the same only on hosts that agree here.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "sfprompt": sfprompt.__version__,
    }
    for name in VERSIONED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info(status: str, *, source_dir: str | Path | None = None, **extra: Any) -> dict:
    """The content of `run.json`: status, start time, versions, git, host, then `extra`.

    `source_dir` is the checkout whose commit is recorded; it defaults to the one this
    package runs from. All values are JSON-serialisable.
    """
    if source_dir is None:
        source_dir = Path(sfprompt.__file__).resolve().parent.parent
    info: dict[str, Any] = {
        "status": status,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "git": git_state(source_dir),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "torch": _torch_info(),
        },
    }
    clash = sorted(info.keys() & extra.keys())
    if clash:
        raise ValueError(f"run_info extra keys {clash} would overwrite recorded fields")
    info.update(extra)
    return info


def write_run_json(run_dir: str | Path, info: dict) -> None:
    """(Re)write `run_dir/run.json` atomically."""
    write_json(Path(run_dir) / "run.json", info)


def _drop_none(value: Any, key: str) -> Any:
    """TOML has no null: drop None-valued keys (tuples become lists, as TOML reads back).

    A None inside a list cannot be dropped without shifting positions, so it is an error.
    """
    if isinstance(value, dict):
        return {k: _drop_none(v, f"{key}.{k}" if key else k)
                for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise SfpromptError(f"{key}: a list with None cannot be written to TOML")
        return [_drop_none(v, key) for v in value]
    return value


def write_config_toml(run_dir: str | Path, config_dict: dict) -> None:
    """Write the resolved configuration as `run_dir/config.toml`.

    Keys whose value is None are omitted (TOML has no null), so loading the file back
    with `tomllib` gives the dict without them; the config loader's defaults fill them in
    again. Tuples come back as lists.
    """
    text = "# Resolved configuration of this run; keys whose value was None are omitted.\n"
    text += tomli_w.dumps(_drop_none(config_dict, ""))
    atomic_write_text(Path(run_dir) / "config.toml", text)


def attach_run_log(run_dir: str | Path, level: int = logging.INFO) -> logging.FileHandler:
    """Copy the project's log records (`sfprompt.*` loggers) at `level`+ to `run.log`.

    The `sfprompt` logger is lowered to `level` if needed, or records would be dropped
    before reaching the handler. Detach with `logging.getLogger("sfprompt")
    .removeHandler(h)` and `h.close()` when the run ends.
    """
    handler = logging.FileHandler(Path(run_dir) / "run.log", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    project = logging.getLogger("sfprompt")
    if project.getEffectiveLevel() > level:
        project.setLevel(level)
    project.addHandler(handler)
    return handler
