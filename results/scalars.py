"""A run's rounds as TensorBoard scalars (`log.tensorboard = true`).

Each round's own columns (not the config columns every row repeats) are written under
their rounds.parquet names, step = round, to `<run dir>/tensorboard/`. A resumed run
opens the same directory with `purge_step` at its next round, so TensorBoard drops
whatever a killed process logged past the checkpoint, and every step appears once.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"


class Scalars:
    """Writes rounds to TensorBoard, or does nothing when `enabled` is false."""

    def __init__(self, run_dir: Path, enabled: bool, next_round: int) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # the optional extra
            self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=next_round)

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value) and key != "round"):
                self.writer.add_scalar(key, value, global_step=row["round"])
        self.writer.flush()  # a killed run keeps every round it finished

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
