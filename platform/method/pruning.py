"""Data pruning: score every local sample, keep the hardest `prune.keep` fraction.

A score is one registered function `(logits, labels, generator) -> (N,) scores`, higher
meaning harder (kept first). EL2N (Paul et al., 2021) is the error-vector norm
`|| softmax(f(x)) - onehot(y) ||_2`, computed by SFPrompt on the client's *local path*
(head -> tail, body skipped) so that scoring costs no communication.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sfprompt.platform.registry import Registry

Score = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
SCORES: Registry[Score] = Registry("pruning score")
register_score = SCORES.register


@register_score("el2n")
def el2n(logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """L2 norm of the error vector, softmax(logits) - onehot(labels); in [0, sqrt(2)]."""
    error = F.softmax(logits.float(), dim=1) - F.one_hot(labels, logits.shape[1]).float()
    return error.norm(dim=1)  # (N,)


@register_score("random")
def random_score(logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores: keeps a random subset, the control for EL2N's choice."""
    return torch.rand(labels.shape[0], generator=generator)  # (N,)


def keep_count(n: int, keep: float) -> int:
    """Samples kept out of n: ceil(keep * n), so any keep > 0 keeps at least one."""
    # The epsilon absorbs float error, e.g. 0.7 * 10 = 7.000000000000001 -> 7, not 8.
    return min(n, max(1, math.ceil(keep * n - 1e-9)))


def select_hardest(scores: torch.Tensor, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Positions of the `keep` fraction with the highest scores, in ascending position
    order. Ties are broken in a random order drawn from `generator`, not by position:
    scores tie exactly when the classifier is uniform (the zero-initialised first
    round), and a client's shard is grouped by class, so "earliest first" would drop
    whole classes."""
    k = keep_count(scores.shape[0], keep)
    shuffle = torch.randperm(scores.shape[0], generator=generator).to(scores.device)
    order = shuffle[torch.sort(-scores[shuffle], stable=True).indices]  # hardest first
    return order[:k].sort().values
