"""Trace files: a CSV or Parquet table named by a config key (device profiles,
availability intervals), read with every problem as one line naming the key and file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sfprompt.platform.errors import SfpromptError, first_line


def read_table(key: str, path: str | Path, columns: Sequence[str]):
    """The file as a pandas DataFrame holding at least `columns`."""
    import pandas as pd  # only traces need it; the rest of platform/ is torch/numpy

    path = Path(path)
    if not path.is_file():
        raise SfpromptError(f"{key} {path}: file not found")
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    if path.suffix.lower() not in readers:
        raise SfpromptError(f"{key} {path}: expected a .csv or .parquet file")
    try:
        df = readers[path.suffix.lower()](path)
    except Exception as err:  # any parser error is the file's fault, said in one line
        raise SfpromptError(f"{key} {path}: cannot read ({first_line(err)})") from None
    for column in columns:
        if column not in df.columns:
            raise SfpromptError(f"{key} {path}: missing column {column!r} "
                                f"(needs {', '.join(columns)})")
    return df
