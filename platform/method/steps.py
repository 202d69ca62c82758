"""The client-side steps of one SFPrompt round, each a small function over batches.

    score_samples      EL2N (or another score) on the local path, frozen, no gradients
    local_loss_update  cross-entropy on the local path (head -> tail): nothing crosses
    full_update        cross-entropy on the full path in one place (the unsplit baselines)
    split_update       head -> smashed up -> body -> output down -> tail, loss ->
                       gradient up -> body backward -> gradient down -> prompts

Client FLOPs are counted around client code only, so the server's work (which the
server counts itself) never lands on the client's bill even in one process.

The cost model (costmodel.py) runs these same steps on meta tensors, which have shapes
but no values. Values leave a tensor in exactly three places, `loss_value`,
`kept_positions` and `class_labels`, and `apply_step` skips the optimizer on meta (it
changes no value anyone could read, and neither sends nor counts anything); they are
the dry-run seam, and nothing else here knows about meta.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from sfprompt.platform.method.pruning import Score
from sfprompt.platform.model.split import SplitModel
from sfprompt.platform.wire.flops import Flops, shape_of
from sfprompt.platform.wire.link import Link

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def loss_value(loss: torch.Tensor) -> float:
    """The loss as a number for the record; unknown (nan) in a dry run."""
    return math.nan if loss.is_meta else loss.item()


def kept_positions(selected: torch.Tensor) -> np.ndarray:
    """Positions chosen by pruning. A dry run knows how many, not which: all samples
    have the same shape, so the first ones stand in and every cost is the same."""
    return np.arange(selected.shape[0]) if selected.is_meta else selected.numpy()


def class_labels(labels: torch.Tensor) -> torch.Tensor | None:
    """Labels for per-class pruning. A dry run has none, so it prunes the shard as one
    class: per class, a real run keeps up to one more sample per class (ceil each)."""
    return None if labels.is_meta else labels


def apply_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Step on the gradients of `loss`, then clear them; a dry run only clears. The
    optimizer's step pre-hooks run inside `step` (FedProx's proximal gradient, session.py)."""
    if not loss.is_meta:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def score_samples(split: SplitModel, batches: Batches, score: Score, generator: torch.Generator,
                  flops: Flops) -> torch.Tensor:
    """Hardness of every sample, in batch order, from the local path's logits."""
    scores = []
    for images, labels in batches:
        with flops.count("client", "score", shape_of(images)):
            logits = split.local(images)
        scores.append(score(logits, labels, generator))
    return torch.cat(scores)  # (N,)


def _train_epoch(split: SplitModel, forward: Callable[[torch.Tensor], torch.Tensor],
                 batches: Batches, optimizer: torch.optim.Optimizer, flops: Flops,
                 frozen: str = "") -> float:
    """One epoch of cross-entropy through `forward`, all on the client; mean loss.
    `frozen` names what the caller froze for this epoch only, which the FLOP meter's
    context (the round's trainable parameters) does not see."""
    total, count = 0.0, 0
    with split.training():
        for images, labels in batches:
            with flops.count("client", "train", forward.__name__, frozen, shape_of(images)):
                loss = F.cross_entropy(forward(images), labels)
                loss.backward()
            apply_step(optimizer, loss)
            total, count = total + loss_value(loss) * len(labels), count + len(labels)
    return total / max(count, 1)


def local_loss_update(split: SplitModel, batches: Batches, optimizer: torch.optim.Optimizer,
                      flops: Flops, frozen_classifier: bool = False) -> float:
    """One epoch of the local-loss update; returns the mean training loss. A frozen
    classifier gets no gradient (so no step, and its weight gradients are not computed
    or counted)."""
    if not frozen_classifier:
        return _train_epoch(split, split.local, batches, optimizer, flops)
    params = [p for p in split.tail.classifier.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        return _train_epoch(split, split.local, batches, optimizer, flops, "classifier")
    finally:
        for p in params:
            p.requires_grad_(True)


def full_update(split: SplitModel, batches: Batches, optimizer: torch.optim.Optimizer,
                flops: Flops) -> float:
    """One epoch on the full path (head -> body -> tail) with the whole model on the
    client, as the unsplit baselines train; nothing crosses. Returns the mean loss."""
    return _train_epoch(split, split.forward, batches, optimizer, flops)


def split_update(split: SplitModel, batches: Batches, optimizer: torch.optim.Optimizer,
                 server, link: Link, key: Hashable, flops: Flops,
                 server_trains: bool = False) -> float:
    """One epoch of split training through `server` (BodyServer or a proxy to one);
    every tensor between client and server crosses `link`. Returns the mean loss."""
    total, count = 0.0, 0
    with split.training():  # batch statistics in the probe norm
        for images, labels in batches:
            with flops.count("client", "head", shape_of(images)):
                smashed = split.head(images)  # (B, prefix + P + N, D)
            head_trains = smashed.requires_grad
            out = server.forward(key, link.send("smashed_up", smashed), input_grad=head_trains)
            out = link.send("activations_down", out).requires_grad_(True)
            with flops.count("client", "tail", shape_of(out)):
                loss = F.cross_entropy(split.tail(out), labels)
                loss.backward()
            # The gradient goes up only if someone upstream of the cut learns from it.
            if head_trains or server_trains:
                grad = server.backward(key, link.send("gradients_up", out.grad))
                if head_trains:
                    grad = link.send("gradients_down", grad)
                    with flops.count("client", "head.backward", shape_of(smashed)):
                        smashed.backward(grad)
            apply_step(optimizer, loss)
            total, count = total + loss_value(loss) * len(labels), count + len(labels)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(split: SplitModel, batches: Batches) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the full path, head -> body -> tail."""
    correct, loss, count = 0, 0.0, 0
    for images, labels in batches:
        logits = split.forward(images)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        count += len(labels)
    return correct / max(count, 1), loss / max(count, 1)
