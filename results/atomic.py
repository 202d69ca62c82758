"""Result files written atomically: JSON and Parquet on top of `platform/atomic.py`
(temp file beside the target, fsync, one rename: a reader sees the old file or the new
one, never a torn one), and the Parquet reader that does not tear either.

`atomic_open`, `atomic_write_bytes` and `atomic_write_text` are platform's, re-exported
here so results and studies have one module to write through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sfprompt.platform.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from sfprompt.platform.errors import SfpromptError

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "write_json",
           "write_parquet", "read_parquet"]


def write_json(path: str | Path, obj: Any) -> None:
    """Replace `path` with `obj` as indented JSON; a non-JSON value raises TypeError.

    The text is built before any file is touched, so an unserialisable object leaves the
    directory exactly as it was.
    """
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Replace `path` with `df` as Parquet (pyarrow engine, index not stored)."""
    with atomic_open(path) as f:
        df.to_parquet(f, engine="pyarrow", index=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file; a missing file is the user's to fix, so it names the path.

    The file is opened once and read through that handle: given a path, pyarrow stats
    and opens it twice (schema, then scan), and a writer's rename in between yields a
    mix of two versions ("Page was smaller than expected") while a run is writing.
    """
    path = Path(path)
    if not path.is_file():
        raise SfpromptError(f"no such result file: {path}")
    with open(path, "rb") as f:
        return pd.read_parquet(f, engine="pyarrow")
