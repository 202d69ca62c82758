"""The result tables of a run, as code: which columns each must have, and their order.

A table is a list of flat rows (one dict per round, or per client per round) with
dotted column names that match configuration keys (`prune.keep`, `bytes.smashed_up`),
so runs, studies and configs join without renaming (docs/design.md, Result tables, where
every column is described). Each table names only the columns every row must have;
anything else a method reports is simply another
column, so later features add metrics without touching this file. Columns are ordered
required-first, then alphabetically, so two runs' files line up column for column.

Whole tables are rewritten atomically after each round: a reader (or a crashed run)
sees every row up to some round, never a half-written file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sfprompt.platform.errors import SfpromptError
from sfprompt.results.atomic import read_parquet, write_parquet


@dataclass(frozen=True)
class Table:
    """One result table: stored as `<name>.parquet` in the run directory."""

    name: str  # file stem and the word used in error messages
    required: tuple[str, ...]  # columns every row must have, in this order

    @property
    def filename(self) -> str:
        return f"{self.name}.parquet"


ROUNDS = Table("rounds", ("round", "accuracy", "loss", "wall_seconds", "participants"))
CLIENTS = Table("clients", ("round", "client"))


def table_frame(table: Table, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Check `rows` against `table` and build its frame (required columns, then sorted).

    A row may lack optional columns (e.g. metrics evaluated every k rounds); those cells
    are missing (NaN/None). A missing required column or a dict value is a bug in the
    code producing rows, and the error names the column and row.
    """
    extra: set[str] = set()
    for i, row in enumerate(rows):
        for column in table.required:
            if column not in row:
                raise ValueError(f"{table.name} row {i} lacks required column {column!r}")
        for column, value in row.items():
            if isinstance(value, Mapping):
                raise ValueError(
                    f"{table.name} row {i} column {column!r} holds a dict; flatten() the row"
                )
        extra.update(row.keys() - set(table.required))
    return pd.DataFrame(rows, columns=[*table.required, *sorted(extra)])


def write_table(run_dir: str | Path, table: Table, rows: list[dict[str, Any]]) -> None:
    """Check `rows` and atomically (re)write `run_dir/<table>.parquet`."""
    write_parquet(Path(run_dir) / table.filename, table_frame(table, rows))


def read_table(run_dir: str | Path, table: Table) -> pd.DataFrame:
    """Read `run_dir/<table>.parquet`; a file without the required columns is refused."""
    path = Path(run_dir) / table.filename
    df = read_parquet(path)
    missing = [c for c in table.required if c not in df.columns]
    if missing:
        raise SfpromptError(f"{path} lacks required column {missing[0]!r}")
    return df


def write_rounds(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    write_table(run_dir, ROUNDS, rows)


def read_rounds(run_dir: str | Path) -> pd.DataFrame:
    return read_table(run_dir, ROUNDS)


def write_clients(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    write_table(run_dir, CLIENTS, rows)


def read_clients(run_dir: str | Path) -> pd.DataFrame:
    return read_table(run_dir, CLIENTS)
