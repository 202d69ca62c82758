import math

import pytest
import torch

from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.fed.aggregation import AGGREGATIONS, fedavg
from sfprompt.platform.method.pruning import SCORES, el2n, keep_count, select_hardest


def test_el2n_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    labels = torch.tensor([0, 2, 1])
    scores = el2n(probs.log(), labels, torch.Generator())
    # (0.7-1, 0.2, 0.1); (0.7, 0.2, 0.1-1); (1/3, 1/3-1, 1/3)
    want = [math.sqrt(0.09 + 0.04 + 0.01), math.sqrt(0.49 + 0.04 + 0.81), math.sqrt(2 / 9 + 4 / 9)]
    torch.testing.assert_close(scores, torch.tensor(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,keep,k", [(10, 1.0, 10), (10, 0.5, 5), (10, 0.7, 7), (10, 0.01, 1),
                                      (3, 0.5, 2), (1, 0.1, 1)])
def test_keep_count(n, keep, k):
    assert keep_count(n, keep) == k


def test_select_hardest_keeps_highest_scores():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2])
    g = torch.Generator().manual_seed(0)
    assert select_hardest(scores, 0.4, g).tolist() == [1, 3]
    assert select_hardest(scores, 0.6, g).tolist() == [1, 2, 3]
    assert select_hardest(scores, 1.0, g).tolist() == [0, 1, 2, 3, 4]


def test_skip_hardest_passes_over_the_very_hardest_first():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.0])
    g = torch.Generator().manual_seed(0)
    # hardest first: 1 (0.9), 3, 5, 7, 2, 8, 6, 4, 0, 9
    assert select_hardest(scores, 0.3, g, skip=0.2).tolist() == [2, 5, 7]  # 5, 7, 2
    assert select_hardest(scores, 0.3, g, skip=0.0).tolist() == [1, 3, 5]
    # keep + skip past the end: the skip shrinks to keep the keep fraction
    assert select_hardest(scores, 0.5, g, skip=0.7).tolist() == [0, 4, 6, 8, 9]


def test_per_class_keeps_the_hardest_of_each_class():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.6, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    g = torch.Generator().manual_seed(0)
    # class 0: ceil(0.5 x 3) = 2 of 0.9, 0.8, 0.7; class 1: 2 of 0.1, 0.2, 0.6, 0.5
    assert select_hardest(scores, 0.5, g, labels=labels).tolist() == [0, 1, 5, 6]
    assert select_hardest(scores, 0.5, g).tolist() == [0, 1, 2, 5]  # the shard as one
    # and with a skip per class: floor(0.34 x 3) = 1, floor(0.34 x 4) = 1
    assert select_hardest(scores, 0.5, g, skip=0.34, labels=labels).tolist() == [1, 2, 4, 6]
    # three classes of 2, 1 and 3: ceil(0.4 x n) = 1, 1, 2 of each
    scores = torch.tensor([0.3, 0.4, 0.9, 0.1, 0.8, 0.5])
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    assert select_hardest(scores, 0.4, g, labels=labels).tolist() == [1, 2, 4, 5]


def test_an_unknown_score_names_the_key_and_the_registry():
    with pytest.raises(ConfigError, match=r"^prune.score: unknown pruning score 'hard' "
                                          r"\(known: el2n, random\)$"):
        SCORES.check("prune.score", "hard")


def test_select_hardest_breaks_ties_at_random_by_seed():
    # All tied (a uniform classifier's EL2N): a seeded random half, not the first half,
    # which on a class-grouped shard would be whole classes.
    tied = torch.ones(100)
    picks = [select_hardest(tied, 0.5, torch.Generator().manual_seed(s)).tolist() for s in (0, 0, 1)]
    assert picks[0] == picks[1] != picks[2]
    assert len(picks[0]) == 50 and picks[0] == sorted(picks[0])
    assert picks[0] != list(range(50)) and max(picks[0]) >= 50
    # Ties among the highest only: the strictly harder sample is always kept.
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5])
    kept = select_hardest(scores, 0.5, torch.Generator().manual_seed(3)).tolist()
    assert 1 in kept and len(kept) == 2


@pytest.mark.parametrize("name", sorted(SCORES))
def test_every_score_gives_one_value_per_sample(name):
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    scores = SCORES[name](logits, labels, torch.Generator().manual_seed(0))
    assert scores.shape == (6,) and torch.isfinite(scores).all()


def test_fedavg_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(4.0)}
    out = fedavg([a, b], [1, 3])  # (1*a + 3*b) / 4
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(out["b"], torch.tensor(3.0))
    assert out["w"].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_aggregating_identical_states_is_identity(name):
    # Clients that all return the global state moved nowhere: no rule moves it either.
    s = {"p": torch.randn(3, 4)}
    state, _ = AGGREGATIONS[name]([s, s, s], [1, 5, 2], s, {}, FedConfig())
    torch.testing.assert_close(state["p"], s["p"])


def test_fedavg_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        fedavg([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError):
        fedavg([{"a": torch.zeros(1)}], [1, 2])
    with pytest.raises(ValueError):
        fedavg([{"a": torch.zeros(1)}], [0])
