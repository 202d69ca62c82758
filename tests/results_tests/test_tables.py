"""Result table schemas: required columns, column order, Parquet round trip."""

import math

import pandas as pd
import pytest

from sfprompt.platform.config.dotted import flatten
from sfprompt.platform.errors import SfpromptError
from sfprompt.results.atomic import write_parquet
from sfprompt.results.tables import (
    CLIENTS,
    ROUNDS,
    read_clients,
    read_rounds,
    table_frame,
    write_clients,
    write_rounds,
)


def rounds_frame(rows):
    return table_frame(ROUNDS, rows)


def clients_frame(rows):
    return table_frame(CLIENTS, rows)


def _round(r, **more):
    return {"round": r, "accuracy": 0.5 + r / 10, "loss": 1.0 / (r + 1),
            "wall_seconds": 2.0, "participants": 4, **more}


def test_rounds_frame_orders_required_then_sorted_and_fills_gaps():
    rows = [
        _round(0, **{"flops.client": 10, "bytes.smashed_up": 7}),
        _round(1, **{"dropped": 1, "bytes.smashed_up": 8}),
    ]
    df = rounds_frame(rows)
    assert list(df.columns) == [
        "round", "accuracy", "loss", "wall_seconds", "participants",
        "bytes.smashed_up", "dropped", "flops.client",
    ]
    assert df["bytes.smashed_up"].tolist() == [7, 8]
    assert math.isnan(df["dropped"][0]) and df["dropped"][1] == 1
    assert df["flops.client"][0] == 10 and math.isnan(df["flops.client"][1])


def test_rounds_frame_rejects_missing_required_column_by_name():
    row = _round(0)
    del row["loss"]
    with pytest.raises(ValueError, match=r"row 1 lacks required column 'loss'"):
        rounds_frame([_round(0), row])


def test_rounds_frame_rejects_nested_values_by_column():
    with pytest.raises(ValueError, match=r"column 'bytes' holds a dict"):
        rounds_frame([_round(0, bytes={"smashed_up": 3})])
    # the fix the message suggests works
    assert "bytes.smashed_up" in rounds_frame([flatten(_round(0, bytes={"smashed_up": 3}))])


def test_empty_table_still_has_required_columns():
    assert list(clients_frame([]).columns) == ["round", "client"]


def test_rounds_and_clients_round_trip_through_run_dir(tmp_path):
    rounds = [_round(r, **{"bytes.smashed_up": 100 * r}) for r in range(3)]
    write_rounds(tmp_path, rounds)
    pd.testing.assert_frame_equal(read_rounds(tmp_path), rounds_frame(rounds))

    clients = [{"round": r, "client": c, "kept": 10 + c} for r in range(2) for c in (5, 9)]
    write_clients(tmp_path, clients)
    back = read_clients(tmp_path)
    pd.testing.assert_frame_equal(back, clients_frame(clients))
    assert back["kept"].tolist() == [15, 19, 15, 19]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.parquet", "rounds.parquet"]


def test_reading_a_table_without_required_columns_names_file_and_column(tmp_path):
    write_parquet(tmp_path / "rounds.parquet", pd.DataFrame({"round": [0], "accuracy": [0.1]}))
    with pytest.raises(SfpromptError, match=r"rounds\.parquet lacks required column 'loss'"):
        read_rounds(tmp_path)
    with pytest.raises(SfpromptError, match="clients.parquet"):
        read_clients(tmp_path)
