"""The split step against the unsplit model, and what crosses the boundary."""

from collections import Counter

import torch
import torch.nn.functional as F
from tinyvit import tiny_vit

from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.method.pruning import el2n
from sfprompt.platform.method.steps import (evaluate, kept_positions, local_loss_update,
                                            score_samples, split_update)
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.split import split_vit
from sfprompt.platform.wire.flops import Flops, count_flops
from sfprompt.platform.wire.link import Link, nbytes


class Capture:
    """An optimizer stand-in that records the gradients it would apply."""

    def __init__(self, params):
        self.params, self.grads = list(params), []

    def step(self):
        self.grads.append([p.grad.clone() for p in self.params])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


class RecordingServer(BodyServer):
    """A BodyServer that keeps every payload it receives and sends."""

    def __init__(self, body):
        super().__init__(body)
        self.received, self.sent = [], []

    def forward(self, key, smashed, input_grad):
        self.received.append(smashed)
        out = super().forward(key, smashed, input_grad)
        self.sent.append(out)
        return out

    def backward(self, key, grad_out):
        self.received.append(grad_out)
        grad = super().backward(key, grad_out)
        self.sent.append(grad)
        return grad


def _setup(variant="dinov2", h=1, t=1, prompts=3):
    split = split_vit(tiny_vit(variant), h, t, prompt_length=prompts)
    set_trainable(split, METHODS["sfprompt"])
    trainable = [p for p in split.client().parameters() if p.requires_grad]
    torch.manual_seed(1)
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    return split, trainable, batch


def test_split_step_gradients_equal_unsplit_model(variant):
    split, trainable, (x, y) = _setup(variant)
    F.cross_entropy(split.forward(x), y).backward()
    expected = [p.grad.clone() for p in trainable]
    for p in trainable:
        p.grad = None

    capture = Capture(trainable)
    split_update(split, [(x, y)], capture, BodyServer(split.body), Link(), key=0, flops=Flops())
    for got, want in zip(capture.grads[0], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_bytes_counted_equal_the_tensors_that_crossed():
    split, trainable, (x, y) = _setup(h=2, t=1, prompts=3)
    server, link = RecordingServer(split.body), Link()
    split_update(split, [(x, y), (x[:3], y[:3])], Capture(trainable), server, link, key=0,
                 flops=Flops())
    smashed = [server.received[0], server.received[2]]
    grads_up = [server.received[1], server.received[3]]
    assert link.bytes["smashed_up"] == sum(nbytes(t) for t in smashed)
    assert link.bytes["gradients_up"] == sum(nbytes(t) for t in grads_up)
    assert link.bytes["activations_down"] == sum(nbytes(t) for t in server.sent[0::2])
    assert link.bytes["gradients_down"] == sum(nbytes(t) for t in server.sent[1::2])
    # By hand: 7 images, 1 CLS + 3 prompts + 16 patches, dim 48, float32.
    assert link.bytes["smashed_up"] == 7 * (1 + 3 + 16) * 48 * 4
    assert set(link.bytes) == {"smashed_up", "activations_down", "gradients_up", "gradients_down"}


def test_no_gradient_crosses_when_nothing_upstream_learns():
    # No prompts and no head blocks training: the gradient has no one to go to.
    split, trainable, (x, y) = _setup(prompts=0)
    link = Link()
    split_update(split, [(x, y)], Capture(trainable), BodyServer(split.body), link, key=0,
                 flops=Flops())
    assert link.bytes["gradients_up"] == 0 and link.bytes["gradients_down"] == 0
    assert link.bytes["smashed_up"] > 0


def test_local_loss_update_sends_nothing_and_changes_only_trainables():
    split, trainable, (x, y) = _setup()
    before = {n: p.clone() for n, p in split.client().named_parameters()}
    body_before = [p.clone() for p in split.body.parameters()]
    flops = Flops()
    opt = torch.optim.SGD(trainable, lr=0.1)
    local_loss_update(split, [(x, y)], opt, flops)
    for n, p in split.client().named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == p.requires_grad, n
    assert all(torch.equal(a, b) for a, b in zip(body_before, split.body.parameters()))
    assert flops["client"] > 0


def test_a_frozen_classifier_stays_and_its_weight_gradient_is_neither_computed_nor_counted():
    split, trainable, (x, y) = _setup()
    classifier = split.tail.classifier
    before = {n: p.clone() for n, p in split.client().named_parameters()}
    runs, cache = {}, {}  # one FLOP cache: the frozen epoch must not hit the shared one's
    for frozen in (False, True):
        for n, p in split.client().named_parameters():
            p.data.copy_(before[n])
        flops = Flops(cache=cache)
        opt = torch.optim.SGD(trainable, lr=0.1)
        local_loss_update(split, [(x, y), (x[:3], y[:3])], opt, flops, frozen_classifier=frozen)
        runs[frozen] = flops["client"], {n: p.clone() for n, p in split.client().named_parameters()}
        assert all(p.requires_grad for p in classifier.parameters())  # trains again after
    for n, p in runs[True][1].items():
        changed = not torch.equal(before[n], p)
        assert changed == (p.requires_grad and not n.startswith("tail.classifier")), n
    assert not torch.equal(runs[False][1]["tail.classifier.weight"], before["tail.classifier.weight"])
    # the classifier's weight gradient is a (C x B) @ (B x D) product: 2 B D C FLOPs a batch
    c, d = classifier.weight.shape
    assert runs[False][0] - runs[True][0] == 2 * (4 + 3) * d * c


def test_server_flops_are_not_billed_to_the_client():
    split, trainable, (x, y) = _setup(h=1, t=1)
    server, flops = BodyServer(split.body), Flops()
    split_update(split, [(x, y)], Capture(trainable), server, Link(), key=7, flops=flops)
    whole = Counter()
    with count_flops(whole, "all"):
        F.cross_entropy(split.forward(x), y).backward()
    server_flops = server.take_flops(7)
    assert server_flops > 0 and flops["client"] > 0
    # The same operations run, split across the two bills.
    assert flops["client"] + server_flops == whole["all"]


def test_scoring_and_a_local_epoch_by_hand():
    split, trainable, (x, y) = _setup(prompts=2)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]  # a full batch and a partial one
    flops = Flops()
    scores = score_samples(split, batches, el2n, torch.Generator(), flops)
    counted = Counter()
    with torch.no_grad(), count_flops(counted, "by hand"):
        want = torch.cat([el2n(split.local(b), c, None) for b, c in batches])
    assert not scores.requires_grad and torch.equal(scores, want)
    assert flops["client"] == counted["by hand"] > 0  # billed to the client
    # The epoch's loss is the mean over samples, each batch weighted by its size; its
    # optimizer clears the gradients to None after each step.
    with torch.no_grad():
        per_batch = [F.cross_entropy(split.local(b), c).item() for b, c in batches]
    optimizer = Capture(trainable)
    loss = local_loss_update(split, batches, optimizer, Flops())
    assert abs(loss - (3 * per_batch[0] + per_batch[1]) / 4) < 1e-6
    assert len(optimizer.grads) == 2
    one = local_loss_update(split, [batches[1]], torch.optim.SGD(trainable, lr=0.0), Flops())
    assert abs(one - per_batch[1]) < 1e-6 and all(p.grad is None for p in trainable)
    assert local_loss_update(split, [], Capture(trainable), Flops()) == 0.0


def test_a_dry_run_keeps_the_first_positions():
    assert kept_positions(torch.empty(3, dtype=torch.long, device="meta")).tolist() == [0, 1, 2]
    assert kept_positions(torch.tensor([4, 7])).tolist() == [4, 7]


def test_split_epoch_loss_is_the_mean_over_samples_by_hand():
    split, trainable, (x, y) = _setup(prompts=2)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]  # a full batch and a partial one
    with torch.no_grad():
        per_batch = [F.cross_entropy(split.forward(b), c).item() for b, c in batches]
    optimizer = Capture(trainable)
    loss = split_update(split, batches, optimizer, BodyServer(split.body), Link(), 0, Flops())
    assert abs(loss - (3 * per_batch[0] + per_batch[1]) / 4) < 1e-6
    assert len(optimizer.grads) == 2
    one = split_update(split, [batches[1]], Capture(trainable), BodyServer(split.body), Link(),
                       0, Flops())
    assert abs(one - per_batch[1]) < 1e-6  # one sample: its loss, not half of it
    assert split_update(split, [], Capture(trainable), BodyServer(split.body), Link(), 0,
                        Flops()) == 0.0


def test_evaluate_one_sample_builds_no_graph_and_nothing_is_zero():
    split, _, (x, y) = _setup(prompts=2)
    with torch.no_grad():
        logits = split.forward(x[:1])
    grad_modes = []
    forward = split.forward
    split.forward = lambda images: (grad_modes.append(torch.is_grad_enabled()),
                                    forward(images))[1]
    y1 = logits.argmax(dim=1)  # the one sample is right
    accuracy, loss = evaluate(split, [(x[:1], y1)])
    assert accuracy == 1.0 and grad_modes == [False]
    assert abs(loss - F.cross_entropy(logits, y1).item()) < 1e-6
    assert evaluate(split, []) == (0.0, 0.0)
    # Over batches of 2 + 1 + 1: sums over samples, each batch counted once.
    with torch.no_grad():
        all_logits = forward(x)
    labels = all_logits.argmax(dim=1)
    labels[:2] = (labels[:2] + 1) % all_logits.shape[1]  # 2 of 4 wrong
    accuracy, loss = evaluate(split, [(x[:2], labels[:2]), (x[2:3], labels[2:3]),
                                      (x[3:], labels[3:])])
    assert accuracy == 0.5
    assert abs(loss - F.cross_entropy(all_logits, labels).item()) < 1e-6
