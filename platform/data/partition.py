"""Split a training set over federated clients: one registered function per scheme.

`partition` returns one sorted index array per client; the arrays are disjoint and
together cover every training sample (no scheme here drops any). All randomness comes
from one generator seeded by `seed`, so a config always gives the same clients.

- `iid`: a random shuffle cut into equal parts (sizes differ by at most one).
- `dirichlet`: each class is spread over the clients in proportions drawn from
  Dir(alpha); small alpha gives clients few dominant classes (Hsu et al. 2019).
- `shards`: samples sorted by label, cut into num_clients * shards_per_client
  contiguous shards, and each client gets shards_per_client of them at random
  (McMahan et al. 2017). A client then holds at most shards_per_client labels when
  every class size is a multiple of the shard size; otherwise a shard can straddle
  two classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sfprompt.platform.errors import ConfigError
from sfprompt.platform.registry import Registry
from sfprompt.platform.seeds import stream

# Dirichlet draws are retried until every client has min_samples; past this many tries
# the setting is practically impossible and the user should change it.
MAX_DIRICHLET_TRIES = 1000


@dataclass(frozen=True)
class PartitionParams:
    """The scheme-specific knobs; each partitioner reads the ones it uses."""

    alpha: float  # fed.alpha: Dirichlet concentration, > 0
    shards_per_client: int  # fed.shards_per_client: shards each client gets, >= 1
    min_samples: int  # fed.min_samples: every client ends with at least this many


# (labels, num_clients, rng, params) -> one index array per client, any order inside.
Partitioner = Callable[[np.ndarray, int, np.random.Generator, PartitionParams], list[np.ndarray]]
Parts = list[np.ndarray]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
register_partitioner = PARTITIONERS.register


def partition(
    name: str,
    labels: np.ndarray,
    num_clients: int,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """One sorted int64 index array into `labels` per client, by scheme `name`."""
    scheme = PARTITIONERS.check("fed.partition", name)
    labels = np.asarray(labels)
    assert labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer), (labels.dtype, labels.shape)
    if num_clients < 1:
        raise ConfigError(f"fed.num_clients={num_clients} must be at least 1")
    if num_clients > len(labels):
        raise ConfigError(f"fed.num_clients={num_clients} exceeds the {len(labels)} training samples")
    if min_samples < 1:
        raise ConfigError(f"fed.min_samples={min_samples} must be at least 1")
    if num_clients * min_samples > len(labels):
        raise ConfigError(
            f"fed.min_samples={min_samples} is impossible: {num_clients} clients x {min_samples} "
            f"exceeds the {len(labels)} training samples"
        )
    params = PartitionParams(alpha=alpha, shards_per_client=shards_per_client, min_samples=min_samples)
    parts = scheme(labels, num_clients, stream(seed), params)
    smallest = min(len(p) for p in parts)
    if smallest < min_samples:
        raise ConfigError(
            f"fed.min_samples={min_samples}: {name} gave a client only {smallest} samples; "
            "use fewer fed.num_clients or a smaller fed.min_samples"
        )
    return [np.sort(p).astype(np.int64) for p in parts]


@register_partitioner("iid")
def _iid(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, params: PartitionParams
) -> Parts:
    return np.array_split(rng.permutation(len(labels)), num_clients)


@register_partitioner("dirichlet")
def _dirichlet(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, params: PartitionParams
) -> Parts:
    if not params.alpha > 0:
        raise ConfigError(f"fed.alpha={params.alpha} must be > 0")
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    sizes = np.array([len(members) for members in by_class])
    for _ in range(MAX_DIRICHLET_TRIES):
        shares = rng.dirichlet(np.full(num_clients, params.alpha), size=len(by_class))  # (C, K)
        # Interior cut points from cumulative shares: piece sizes follow the shares and the
        # last piece takes the rest, so every member is used. Only the sizes decide a
        # retry, so a failed try is cheap.
        cuts = np.floor(np.cumsum(shares[:, :-1], axis=1) * sizes[:, None]).astype(int)  # (C, K-1)
        bounds = np.hstack([np.zeros((len(sizes), 1), int), cuts, sizes[:, None]])  # (C, K+1)
        if np.diff(bounds, axis=1).sum(axis=0).min() >= params.min_samples:
            pieces = [np.split(rng.permutation(m), cut) for m, cut in zip(by_class, cuts)]  # C x K
            return [np.concatenate([p[k] for p in pieces]) for k in range(num_clients)]
    raise ConfigError(
        f"fed.alpha={params.alpha}: no Dirichlet draw in {MAX_DIRICHLET_TRIES} tries gave all "
        f"{num_clients} clients at least {params.min_samples} samples; "
        "raise fed.alpha or lower fed.num_clients / fed.min_samples"
    )


@register_partitioner("shards")
def _shards(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, params: PartitionParams
) -> Parts:
    per_client = params.shards_per_client
    if per_client < 1:
        raise ConfigError(f"fed.shards_per_client={per_client} must be at least 1")
    num_shards = num_clients * per_client
    if num_shards > len(labels):
        raise ConfigError(
            f"fed.shards_per_client={per_client}: {num_clients} clients x {per_client} shards "
            f"exceeds the {len(labels)} training samples (fed.num_clients)"
        )
    # Shuffle first so the order inside a class (and so each shard's content) depends on
    # the seed; the stable sort then groups by label.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    owner = rng.permutation(num_shards).reshape(num_clients, per_client)  # (K, shards per client)
    return [np.concatenate([shards[s] for s in row]) for row in owner]
