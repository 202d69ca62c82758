"""Data pruning: score every local sample, keep the hardest `prune.keep` fraction.

Two variants within the method: `prune.skip_hardest` passes over the very hardest
fraction first (the EL2N paper's remedy when the hardest are mislabelled or
unlearnable at high pruning rates, Paul et al. 2021, section 4), and `prune.per_class`
keeps the hardest of each class, so that pruning keeps the shard's class mix.

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


def select_hardest(scores: torch.Tensor, keep: float, generator: torch.Generator,
                   skip: float = 0.0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Positions of the `keep` fraction with the highest scores, in ascending position
    order, after passing over the hardest `skip` fraction; with `labels`, of each class
    on its own (`keep_count` and the skip per class). Ties are broken in a random order
    drawn from `generator`, not by position: scores tie exactly when the classifier is
    uniform (the zero-initialised first round), and a client's shard is grouped by
    class, so "earliest first" would drop whole classes."""
    shuffle = torch.randperm(scores.shape[0], generator=generator).to(scores.device)
    order = shuffle[torch.sort(-scores[shuffle], stable=True).indices]  # hardest first
    if labels is None:
        return _hardest(order, keep, skip).sort().values
    ordered = labels[order]  # (N,) the class of each sample, hardest first
    return torch.cat([_hardest(order[ordered == c], keep, skip)
                      for c in torch.unique(labels)]).sort().values


def _hardest(order: torch.Tensor, keep: float, skip: float) -> torch.Tensor:
    """The keep fraction of `order` (hardest first) after its first skip fraction;
    the skip shrinks when keep and skip would run past the last sample."""
    n = order.shape[0]
    k = keep_count(n, keep)
    s = min(math.floor(skip * n + 1e-9), n - k)  # the epsilon as in keep_count
    return order[s:s + k]
