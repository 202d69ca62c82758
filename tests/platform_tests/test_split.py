import pytest
import torch
from tinyvit import TINY, VARIANTS, tiny_vit

from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.split import ProbeNorm, add_probe_norm, split_vit

DEPTH = TINY["depth"]
SPLITS = [(h, t) for h in range(DEPTH + 1) for t in range(DEPTH + 1 - h)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_split_without_prompts_equals_timm(variant):
    vit = tiny_vit(variant)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = vit(images)
        for h, t in SPLITS:
            split = split_vit(vit, h, t, prompt_length=0)
            diff = (split.forward(images) - expected).abs().max().item()
            assert diff <= 1e-5, (variant, h, t, diff)


@pytest.mark.parametrize("h,t", SPLITS)
def test_local_path_sees_the_image(variant, h, t):
    vit = tiny_vit(variant)
    split = split_vit(vit, h, t, prompt_length=2)
    a, b = torch.randn(2, 3, 32, 32).chunk(2)
    with torch.no_grad():
        assert not torch.allclose(split.local(a), split.local(b), atol=1e-6)


def test_cls_readout_without_client_blocks_is_blind():
    # Why "auto" mean-pools at h = t = 0: the model's own CLS readout ignores the image.
    split = split_vit(tiny_vit("vit"), 0, 0, prompt_length=2, local_pool="model")
    a, b = torch.randn(2, 3, 32, 32).chunk(2)
    with torch.no_grad():
        torch.testing.assert_close(split.local(a), split.local(b))


def test_prompts_are_tokens_after_the_prefix():
    vit = tiny_vit("reg4")
    split = split_vit(vit, 1, 1, prompt_length=3)
    tokens = split.head.embed(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        split.head.blocks = torch.nn.Sequential()  # look at the head's token sequence itself
        out = split.head(torch.randn(2, 3, 32, 32))
    prefix = vit.num_prefix_tokens
    assert out.shape == (2, tokens.shape[1] + 3, TINY["embed_dim"])
    torch.testing.assert_close(out[:, prefix:prefix + 3], split.head.prompts.expand(2, -1, -1))


def test_gradients_reach_exactly_prompts_and_tail(variant):
    split = split_vit(tiny_vit(variant), 1, 1, prompt_length=2)
    set_trainable(split, METHODS["sfprompt"])
    loss = split.forward(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).sum()
    loss.backward()
    got = {n for n, p in split.client().named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    want = {n for n, _ in split.client().named_parameters() if n == "head.prompts" or n.startswith("tail.")}
    assert got == want
    assert all(p.grad is None for p in split.body.parameters())
    frozen = [n for n, p in split.client().named_parameters() if n not in want]
    assert frozen and all(dict(split.client().named_parameters())[n].grad is None for n in frozen)


def test_impossible_split_is_an_error():
    with pytest.raises(SfpromptError, match="split"):
        split_vit(tiny_vit("vit"), 3, 2, prompt_length=0)


def test_probe_norm_is_batchnorm_without_affine():
    """Independent truth: torch's own BatchNorm1d(affine=False, momentum=None), in
    training (batch statistics, cumulative running average) and in evaluation."""
    probe, bn = ProbeNorm(6), torch.nn.BatchNorm1d(6, affine=False, momentum=None)
    for module in (probe, bn):
        module.train()
    for _ in range(3):
        x = torch.randn(8, 6) * 3 + 5
        torch.testing.assert_close(probe(x), bn(x))
    torch.testing.assert_close(probe.running_mean, bn.running_mean)
    torch.testing.assert_close(probe.running_var, bn.running_var)
    for module in (probe, bn):
        module.eval()
    y = torch.randn(3, 6)
    torch.testing.assert_close(probe(y), bn(y))


def test_probe_norm_batch_of_one_and_local_path_leave_running_statistics():
    vit = tiny_vit()
    add_probe_norm(vit)
    split = split_vit(vit, 1, 1, prompt_length=2)
    norm = vit.head.norm
    before = norm.running_mean.clone()
    with split.training():
        split.local(torch.randn(4, 3, 32, 32))  # another distribution: not recorded
        assert torch.equal(norm.running_mean, before)
        one = split.forward(torch.randn(1, 3, 32, 32))  # no statistics of its own
        assert torch.isfinite(one).all() and torch.equal(norm.running_mean, before)
        split.forward(torch.randn(4, 3, 32, 32))
        assert not torch.equal(norm.running_mean, before)
    assert not norm.training and not split.tail.training  # back to evaluation mode
    # A new pass restarts the average: its statistics are the new batch's alone.
    x = torch.randn(4, 3, 32, 32)
    with split.training():
        split.forward(x)
    with torch.no_grad():
        pooled = split.tail.norm(split.tail.blocks(split.body(split.head(x))))[:, 0]
    torch.testing.assert_close(norm.running_mean, pooled.mean(0))
