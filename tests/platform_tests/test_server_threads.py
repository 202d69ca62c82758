"""BodyServer serving many clients from many threads at once (as the Ray server actor
does) gives each client exactly what it gets alone: output, input gradient, FLOPs."""

from concurrent.futures import ThreadPoolExecutor

import torch
from tinyvit import tiny_vit

from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.split import split_vit


def _serve(server, key, smashed, grad_out, rounds=3):
    outs = []
    for _ in range(rounds):  # several forward/backward pairs per client, interleaving
        out = server.forward(key, smashed.clone(), input_grad=True)
        outs.append((out, server.backward(key, grad_out)))
    return outs


def test_concurrent_clients_get_what_they_get_alone():
    body = split_vit(tiny_vit("dinov2"), 1, 1, prompt_length=2).body
    torch.manual_seed(0)
    requests = {key: (torch.randn(3, 1 + 2 + 16, 48), torch.randn(3, 1 + 2 + 16, 48))
                for key in range(8)}
    alone = BodyServer(body)
    expected = {key: _serve(alone, key, *req) for key, req in requests.items()}
    expected_flops = {key: alone.take_flops(key) for key in requests}

    shared = BodyServer(body)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {key: pool.submit(_serve, shared, key, *req) for key, req in requests.items()}
        got = {key: f.result() for key, f in futures.items()}
    for key in requests:
        for (out, grad), (want_out, want_grad) in zip(got[key], expected[key]):
            assert torch.equal(out, want_out) and torch.equal(grad, want_grad)
        assert shared.take_flops(key) == expected_flops[key] > 0
    assert shared.take_flops(0) == 0 and not shared._pending


def test_the_callers_tensor_is_left_alone_and_its_graph_does_not_hide_the_gradient():
    # A caller's smashed tensor that is part of a graph (as a `.to(device)` copy of a
    # tensor needing grad is) must still get the gradient, and must not be changed.
    body = split_vit(tiny_vit("dinov2"), 1, 1, prompt_length=2).body
    torch.manual_seed(0)
    leaf = torch.randn(3, 1 + 2 + 16, 48, requires_grad=True)
    in_graph = leaf * 1.0
    server, reference = BodyServer(body), BodyServer(body)
    server.forward("c", in_graph, input_grad=True)
    grad = server.backward("c", torch.ones(3, 1 + 2 + 16, 48))
    reference.forward("c", leaf.detach().clone(), input_grad=True)
    assert torch.equal(grad, reference.backward("c", torch.ones(3, 1 + 2 + 16, 48)))
    plain = torch.randn(3, 1 + 2 + 16, 48)
    server.forward("c", plain, input_grad=True)
    assert not plain.requires_grad and leaf.grad is None
