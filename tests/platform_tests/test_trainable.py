"""The registered optimizers (foreach) step to exactly the floats of torch's per-tensor
loop with the same settings: the speed-up changes no result."""

import pytest
import torch

from sfprompt.platform.config.load import load_config
from sfprompt.platform.method.trainable import OPTIMIZERS

REFERENCE = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, momentum=cfg.train.momentum,
                                               weight_decay=cfg.train.weight_decay,
                                               foreach=False),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, weight_decay=cfg.train.weight_decay,
                                                 foreach=False),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_registered_optimizer_equals_per_tensor_loop(name):
    assert sorted(OPTIMIZERS) == sorted(REFERENCE)  # a new one needs its reference here
    cfg = load_config(None, [f"train.optimizer={name}", "train.weight_decay=0.01",
                             "train.momentum=0.8"])
    torch.manual_seed(0)
    shapes = [(7,), (5, 7), (1, 3, 7), (11, 5)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    start = [p.detach().clone() for p in ours]

    def groups(params):  # two learning rates, as make_optimizer builds them
        return [{"params": params[:2], "lr": 3e-3}, {"params": params[2:], "lr": 1e-2}]

    a, b = OPTIMIZERS[name](groups(ours), cfg), REFERENCE[name](groups(theirs), cfg)
    for _ in range(4):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step(), b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
    assert not any(torch.equal(p, s) for p, s in zip(ours, start))  # every one stepped
