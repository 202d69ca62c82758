"""Partitioners: disjoint, covering, deterministic, and each scheme's own promise."""

import inspect

import numpy as np
import pytest

from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.data import partition as partition_module
from sfprompt.platform.data.partition import PARTITIONERS, partition
from sfprompt.platform.errors import ConfigError

# 10 classes of unequal size (30, 40, ..., 120): 750 samples, in a scrambled order.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), np.arange(30, 130, 10)))


def mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over clients of the entropy of their label histogram, in units of log(classes)."""
    num_classes = labels.max() + 1
    entropies = []
    for part in parts:
        p = np.bincount(labels[part], minlength=num_classes) / len(part)
        p = p[p > 0]
        entropies.append(-(p * np.log(p)).sum() / np.log(num_classes))
    return float(np.mean(entropies))


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_parts_are_sorted_disjoint_and_cover_every_sample(name):
    parts = partition(name, LABELS, 7, seed=0)
    assert len(parts) == 7
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_same_seed_same_parts_other_seed_other_parts(name):
    first, again, other = (partition(name, LABELS, 7, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_one_client_gets_everything(name):
    (only,) = partition(name, LABELS, 1, seed=0, shards_per_client=1)
    assert np.array_equal(only, np.arange(len(LABELS)))


def test_iid_sizes_differ_by_at_most_one():
    sizes = [len(p) for p in partition("iid", LABELS, 7, seed=0)]
    assert sum(sizes) == 750 and max(sizes) - min(sizes) <= 1  # 750 = 7 x 107 + 1


def test_shards_give_each_client_at_most_shards_per_client_labels():
    # 5 classes x 20 samples, 10 clients x 2 shards: 20 shards of 5, each one label.
    labels = np.repeat(np.arange(5), 20)[::-1].copy()
    parts = partition("shards", labels, 10, seed=0, shards_per_client=2)
    for part in parts:
        assert len(part) == 10
        assert len(np.unique(labels[part])) <= 2
    # Every label is held by some client in whole shards: counts are multiples of 5.
    for part in parts:
        assert all(count % 5 == 0 for count in np.bincount(labels[part]))


def test_shards_are_far_less_mixed_than_iid():
    iid = mean_label_entropy(LABELS, partition("iid", LABELS, 10, seed=0))
    shards = mean_label_entropy(LABELS, partition("shards", LABELS, 10, seed=0, shards_per_client=2))
    assert shards < 0.5 < 0.9 < iid


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha():
    labels = np.repeat(np.arange(10), 500)
    def entropies(alpha):
        return [mean_label_entropy(labels, partition("dirichlet", labels, 10, seed=s, alpha=alpha))
                for s in range(3)]

    skewed, even = entropies(0.1), entropies(100.0)
    # Measured: about 0.43 for alpha=0.1 and 0.998 for alpha=100 (1 = every label equally).
    assert max(skewed) < 0.6 and min(even) > 0.95


def test_dirichlet_resamples_until_min_samples_holds():
    labels = np.repeat(np.arange(10), 100)
    unconstrained = partition("dirichlet", labels, 20, seed=0, alpha=0.1, min_samples=1)
    assert min(len(p) for p in unconstrained) < 15  # so the constraint below really binds
    constrained = partition("dirichlet", labels, 20, seed=0, alpha=0.1, min_samples=15)
    assert min(len(p) for p in constrained) >= 15
    assert np.array_equal(np.sort(np.concatenate(constrained)), np.arange(1000))


def test_dirichlet_gives_up_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(partition_module, "MAX_DIRICHLET_TRIES", 20)
    labels = np.repeat(np.arange(10), 50)
    with pytest.raises(ConfigError) as info:
        partition("dirichlet", labels, 50, seed=0, alpha=0.001, min_samples=9)
    assert str(info.value) == ("fed.alpha=0.001: no Dirichlet draw in 20 tries gave all 50 "
                               "clients at least 9 samples; raise fed.alpha or lower "
                               "fed.num_clients / fed.min_samples")


def test_shards_that_leave_a_client_short_are_reported():
    # 8 samples, 2 clients x 3 shards: shard sizes 2, 2, 1, 1, 1, 1, so a client gets
    # 3 to 5 samples depending on the draw; min_samples=4 fails for some seeds only.
    outcomes = []
    for seed in range(10):
        try:
            parts = partition("shards", np.arange(8) % 2, 2, seed=seed, shards_per_client=3,
                              min_samples=4)
            outcomes.append(min(len(p) for p in parts) >= 4)
        except ConfigError as err:
            assert str(err) == ("fed.min_samples=4: shards gave a client only 3 samples; use "
                                "fewer fed.num_clients or a smaller fed.min_samples")
            outcomes.append("error")
    assert set(outcomes) == {True, "error"}


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("nope", {}, "fed.partition: unknown partitioner 'nope' (known: dirichlet, iid, shards)"),
        ("iid", {"num_clients": 0}, "fed.num_clients=0 must be at least 1"),
        ("iid", {"num_clients": 751}, "fed.num_clients=751 exceeds the 750 training samples"),
        ("iid", {"min_samples": 0}, "fed.min_samples=0 must be at least 1"),
        ("iid", {"num_clients": 10, "min_samples": 76},  # 10 x 76 > 750
         "fed.min_samples=76 is impossible: 10 clients x 76 exceeds the 750 training samples"),
        ("dirichlet", {"alpha": 0.0}, "fed.alpha=0.0 must be > 0"),
        ("dirichlet", {"alpha": -1.0}, "fed.alpha=-1.0 must be > 0"),
        ("shards", {"shards_per_client": 0}, "fed.shards_per_client=0 must be at least 1"),
        ("shards", {"num_clients": 100, "shards_per_client": 8},  # 800 > 750
         "fed.shards_per_client=8: 100 clients x 8 shards exceeds the 750 training samples "
         "(fed.num_clients)"),
    ],
)
def test_bad_settings_name_their_config_key(name, kwargs, message):
    num_clients = kwargs.pop("num_clients", 5)
    with pytest.raises(ConfigError) as info:
        partition(name, LABELS, num_clients, seed=0, **kwargs)
    assert str(info.value) == message


def test_the_limits_themselves_are_allowed():
    # As many clients as samples (one each), and as many shards as samples.
    assert [len(p) for p in partition("iid", LABELS[:6], 6, seed=0)] == [1] * 6
    assert [len(p) for p in partition("shards", LABELS[:6], 3, seed=0, shards_per_client=2)] == [2] * 3
    with pytest.raises(AssertionError):  # labels are one integer per sample
        partition("iid", LABELS.reshape(-1, 2), 5, seed=0)


def test_the_defaults_are_the_configs():
    defaults = inspect.signature(partition).parameters
    fed = FedConfig()
    assert [defaults[k].default for k in ("alpha", "shards_per_client", "min_samples")] == [
        fed.alpha, fed.shards_per_client, fed.min_samples]
