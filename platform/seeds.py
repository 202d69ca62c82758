"""Seeded random streams: every draw of a run comes from a generator keyed by the run's
seed and where it is used, so no random state carries between rounds or processes.

`stream(seed, round, client, _CRASH_STREAM)` is the same stream in every backend, on
every resume and in every process; the keys say which draw it is (a round, a client, a
module's own stream constant so two modules never share draws). The key list is the
SeedSequence entropy as given: keys are never reordered, and adding one makes another
stream.
"""

from __future__ import annotations

import numpy as np


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The generator of `(seed, *keys)`: `np.random.default_rng([seed, *keys])`, which is
    also `default_rng(seed)` when there are no keys."""
    return np.random.default_rng([seed, *keys])
