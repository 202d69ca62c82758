import math

import pytest
import torch

from sfprompt.platform.config.schema import FedConfig
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
