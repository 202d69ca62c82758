from collections import Counter

import pytest
import torch

from sfprompt.platform.wire.flops import Flops, count_flops, shape_of, trainable_signature
from sfprompt.platform.wire.codecs import CODECS
from sfprompt.platform.wire.link import DOWN, KINDS, Link, nbytes, on_send


def test_linear_flops_are_2mnk():
    m, n, k = 8, 16, 32
    layer, x = torch.nn.Linear(k, n, bias=False), torch.randn(m, k)
    total = Counter()
    with count_flops(total, "fwd"):
        layer(x)
    assert total["fwd"] == 2 * m * n * k
    with count_flops(total, "fwd"):  # adds to what the key holds
        layer(x)
    assert total["fwd"] == 2 * (2 * m * n * k)


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


def test_a_known_signature_is_looked_up_not_counted_again():
    # The signature, not the block, decides a hit: a later block under a known signature
    # adds the remembered count without running the counter, even where (unlike in a
    # real step) it computes something else.
    m, k = 4, 8
    x, w = torch.randn(m, k), torch.randn(k, k)
    flops = Flops({})
    with flops.count("client", "step"):
        x @ w
    with flops.count("client", "step"):
        x @ w @ w @ w
    assert flops["client"] == 2 * (2 * m * k * k)


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
    with pytest.raises(ValueError, match=r"^unknown traffic kind 'smuggled'$"):
        Link().send("smuggled", torch.zeros(1))


# Written out from the round's steps (docs/design.md): each kind, in the order of a
# round, and which way it goes.
DIRECTION = {"frozen_download": "down", "download": "down", "smashed_up": "up",
             "activations_down": "down", "gradients_up": "up", "gradients_down": "down",
             "upload": "up"}


def test_the_traffic_kinds_and_their_directions():
    assert KINDS == tuple(DIRECTION)
    assert set(DOWN) == {k for k, way in DIRECTION.items() if way == "down"}
    link = Link()
    for i, kind in enumerate(KINDS):
        link.send(kind, torch.zeros(i + 1))  # a size of its own per kind
    assert link.bytes == {k: 4 * (i + 1) for i, k in enumerate(KINDS)}


def test_sends_add_up_and_a_codec_applies_to_tensors_of_its_kind_only():
    link = Link({"smashed_up": CODECS["fp16"]})
    link.send("smashed_up", torch.zeros(3))
    link.send("smashed_up", torch.zeros(5))
    link.send("smashed_up", {"w": torch.zeros(4)})  # a state travels as it is
    link.send("upload", torch.zeros(2))
    assert link.bytes == {"smashed_up": 2 * 3 + 2 * 5 + 4 * 4, "upload": 8}
    assert link.messages == {"smashed_up": 3, "upload": 1}


def test_on_send_hears_every_message_in_its_context_only():
    heard = []
    link = Link({"gradients_up": CODECS["int8"]})
    with on_send(lambda kind, size: heard.append((kind, size))):
        link.send("download", {"a": torch.zeros(2, 3)})
        link.send("gradients_up", torch.ones(2, 3))  # 2 tokens: 3 int8 values + a scale each
        link.send_held("frozen_download", {"b": torch.zeros(5)})
    link.send("upload", torch.zeros(1))
    assert heard == [("download", 24), ("gradients_up", 2 * 3 + 2 * 4), ("frozen_download", 20)]
