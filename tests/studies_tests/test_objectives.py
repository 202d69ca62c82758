"""Objectives reduce a run's rounds to one number, as their column means."""

import pytest

from sfprompt.platform.errors import SfpromptError
from sfprompt.studies.objectives import Objective, default_reduce

ROWS = [
    {"round": 1, "accuracy": 0.5, "bytes.up": 10, "bytes.down": 30, "flops.client": 100,
     "sim.elapsed_seconds": 4.0, "sim.round_seconds": 4.0},
    {"round": 2, "accuracy": 0.7, "bytes.up": 20, "bytes.down": 40, "flops.client": 300,
     "sim.elapsed_seconds": 9.0, "sim.round_seconds": 5.0},
    {"round": 3, "accuracy": 0.6, "bytes.up": 5, "bytes.down": 5, "flops.client": 50,
     "sim.elapsed_seconds": 15.0, "sim.round_seconds": 6.0},
]


@pytest.mark.parametrize("metric, expected", [
    ("accuracy", 0.6),              # final round
    ("bytes.total", 110),           # (10 + 30) + (20 + 40) + (5 + 5)
    ("bytes.up", 35),
    ("flops.client", 450),
    ("sim.elapsed_seconds", 15.0),  # the clock is cumulative: read at the end
    ("sim.round_seconds", 15.0),    # per round: summed
])
def test_default_reduction(metric, expected):
    objective = Objective(metric, "minimize", default_reduce(metric))
    assert objective.value(ROWS) == pytest.approx(expected)
    assert objective.name == metric


def test_explicit_reduction_and_its_name():
    best = Objective("accuracy", "maximize", "max")
    assert best.value(ROWS) == 0.7 and best.name == "accuracy.max"
    assert Objective("accuracy", "maximize", "mean").value(ROWS) == pytest.approx(0.6)


def test_intermediate_values_use_the_rounds_so_far():
    total = Objective("bytes.total", "minimize", "sum")
    assert [total.value(ROWS[:k]) for k in (1, 2, 3)] == [40, 100, 110]


def test_a_missing_column_is_named():
    with pytest.raises(SfpromptError, match="metric 'acc' is not a rounds column"):
        Objective("acc", "maximize", "last").value(ROWS)
