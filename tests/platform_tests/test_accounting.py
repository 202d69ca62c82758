from collections import Counter

import torch

from sfprompt.platform.wire.flops import Flops, count_flops, shape_of, trainable_signature
from sfprompt.platform.wire.link import KINDS, Link, nbytes


def test_linear_flops_are_2mnk():
    m, n, k = 8, 16, 32
    layer, x = torch.nn.Linear(k, n, bias=False), torch.randn(m, k)
    total = Counter()
    with count_flops(total, "fwd"):
        layer(x)
    assert total["fwd"] == 2 * m * n * k


def test_attention_flops_are_counted_on_cpu():
    b, h, s, d = 2, 3, 5, 8
    q = torch.randn(b, h, s, d, requires_grad=True)
    total = Counter()
    with count_flops(total, "fwd"):
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert total["fwd"] == 2 * (2 * b * h * s * s * d)  # QK^T and AV
    with count_flops(total, "bwd"):
        out.sum().backward()
    # The flash kernel's backward recomputes the scores (QK^T) and then runs four more
    # (b h) batched products of the same size: dP = dO V^T, dV = P^T dO, dQ = dS K and
    # dK = dS^T Q. Five in all, each 2 * s * s * d FLOPs per (batch, head).
    assert total["bwd"] == 5 * (2 * b * h * s * s * d)


def _step(layers, flops, x):
    with flops.count("client", "step", shape_of(x)):
        layers(x).sum().backward()


def test_flops_counts_each_signature_once_and_exactly():
    m, n, k = 4, 6, 8
    layers = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False), torch.nn.Linear(n, n, bias=False))
    cache = {}
    flops = Flops(cache, trainable_signature(layers.parameters()))
    _step(layers, flops, torch.randn(m, k))
    _step(layers, flops, torch.randn(m, k))  # a hit
    _step(layers, flops, torch.randn(1, k))  # another shape: counted
    full = 2 * m * k * n + 2 * m * n * n  # forward
    full += 2 * m * n * n + 2 * m * n * k + 2 * m * n * n  # weight grads, one input grad
    assert flops["client"] == 2 * full + full // m and len(cache) == 2
    # With the first layer frozen, backward computes only the second layer's weight
    # gradient: the same shapes, a new signature.
    layers[0].weight.requires_grad_(False)
    frozen = Flops(cache, trainable_signature(layers.parameters()))
    _step(layers, frozen, torch.randn(m, k))
    uncached = Flops()
    _step(layers, uncached, torch.randn(m, k))
    assert frozen["client"] == uncached["client"] == 2 * m * k * n + 2 * m * n * n + 2 * m * n * n
    assert len(cache) == 3


def test_link_counts_numel_times_element_size_and_copies():
    link = Link()
    t = torch.randn(3, 4, requires_grad=True)
    got = link.send("smashed_up", t)
    half = link.send("activations_down", torch.zeros(5, dtype=torch.float16))
    state = link.send("upload", {"a": torch.zeros(2, 2), "b": torch.zeros(3, dtype=torch.int64)})
    assert link.bytes == {"smashed_up": 48, "activations_down": 10, "upload": 16 + 24}
    assert link.messages == {"smashed_up": 1, "activations_down": 1, "upload": 1}
    assert nbytes(state) == 40 and half.dtype == torch.float16
    assert not got.requires_grad and got.data_ptr() != t.data_ptr()
    torch.testing.assert_close(got, t.detach())


def test_link_rejects_unknown_kinds():
    import pytest
    with pytest.raises(ValueError):
        Link().send("smuggled", torch.zeros(1))
    assert len(set(KINDS)) == len(KINDS)
