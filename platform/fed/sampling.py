"""Seeded choices of the federation: which clients a round samples, each client's seed.

Every draw comes from a generator seeded by (run seed, round[, client]), so every
backend, process and resume makes the same draws without carrying random state.
"""

from __future__ import annotations

import numpy as np

from sfprompt.platform.config.schema import Config
from sfprompt.platform.seeds import stream


def client_seed(seed: int, round_: int, client: int) -> int:
    """Independent stream per (run, round, client), the same in every backend."""
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


def sample_clients(cfg: Config, round_: int, count: int | None = None,
                   among: list[int] | None = None) -> list[int]:
    """`count` distinct clients (default fed.clients_per_round), by (seed, round), from
    every registered client or from `among` (all of them when it holds fewer)."""
    rng = stream(cfg.run.seed, round_)
    size = cfg.fed.clients_per_round if count is None else count
    if among is None:
        chosen = rng.choice(cfg.fed.num_clients, size=size, replace=False)
    else:
        chosen = rng.choice(np.asarray(among, dtype=np.int64), size=min(size, len(among)),
                            replace=False)
    return sorted(int(c) for c in chosen)
