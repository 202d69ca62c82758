"""The server's body on a CUDA device, against the same body on the CPU.

Marked `gpu` (out of the default run): `make test-all` or `pytest -m gpu` on a machine
with a CUDA device. The CPU is the reference: same weights, same smashed data, so the
outputs, input gradients, trained bodies and whole runs must agree up to float rounding,
and the FLOPs counted must agree exactly (they are counted from the ops that ran, and
CPU and CUDA run different attention kernels).
"""

import copy

import pandas as pd
import pytest
import ray
import torch

from sfprompt.actors.cluster import server_options
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import RayConfig
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.build import build_split

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 would round matmul inputs to 10 mantissa bits: the CPU comparison needs fp32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def body_and_smashed(tiny, method="sfprompt"):
    cfg = load_config(None, tiny + [f"train.method={method}"])
    split, norm = build_split(cfg, num_classes=10)
    torch.manual_seed(1)
    size = norm["img_size"]
    with torch.no_grad():
        smashed = split.head(torch.randn(8, 3, size, size))
    return split.body, smashed


def serve_once(server: BodyServer, smashed: torch.Tensor, device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One client's forward and backward, tensors crossing to `device` and back as the
    server actor moves them."""
    out = server.forward("c0", smashed.to(device), input_grad=True).cpu()
    grad_out = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return out, server.backward("c0", grad_out.to(device)).cpu()


def test_body_on_cuda_equals_the_cpu_body_and_counts_the_same_flops(tiny):
    body, smashed = body_and_smashed(tiny)
    cpu, gpu = BodyServer(body), BodyServer(copy.deepcopy(body).to(CUDA))
    out_cpu, grad_cpu = serve_once(cpu, smashed, "cpu")
    out_gpu, grad_gpu = serve_once(gpu, smashed, CUDA)
    assert gpu.take_flops("c0") == cpu.take_flops("c0") > 0
    torch.testing.assert_close(out_gpu, out_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_gpu, grad_cpu, rtol=1e-3, atol=1e-5)


def test_trained_body_on_cuda_steps_like_the_cpu_and_its_state_comes_back_on_the_cpu(tiny):
    body, smashed = body_and_smashed(tiny, method="sfl")
    before = serve_once(BodyServer(copy.deepcopy(body)), smashed, "cpu")[0]
    cpu = BodyServer(body, trains=True)
    gpu = BodyServer(copy.deepcopy(body).to(CUDA), trains=True)
    for _ in range(2):
        serve_once(cpu, smashed, "cpu")
        serve_once(gpu, smashed, CUDA)
    state = gpu.state_dict()  # what a checkpoint and a restarted server get
    tensors = list(state["body"].values()) + [t for s in state["optimizer"]["state"].values()
                                             for t in s.values() if torch.is_tensor(t)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    # Compared by what the bodies compute, not weight by weight: the key bias's true
    # gradient is zero (softmax ignores a shift), so its gradient is float noise that Adam
    # turns into full-size steps of either sign on either device.
    # (Each call steps once more, after its forward: these are the bodies after 2 steps.)
    out_cpu, out_gpu = (serve_once(s, smashed, d)[0] for s, d in ((cpu, "cpu"), (gpu, CUDA)))
    torch.testing.assert_close(out_gpu, out_cpu, rtol=1e-3, atol=1e-4)
    # ... and the steps moved the body by more than that tolerance.
    assert not torch.allclose(out_cpu, before, rtol=1e-3, atol=1e-4)
    # A fresh CUDA server given the state after 2 steps (weights and Adam's moments)
    # serves what the trained one served, and takes the same third step.
    restored = BodyServer(copy.deepcopy(body).to(CUDA), trains=True)
    restored.load_state_dict(state)
    assert all(p.device.type == "cuda" for p in restored.body.parameters())
    torch.testing.assert_close(serve_once(restored, smashed, CUDA)[0], out_gpu, rtol=0, atol=0)
    for name, value in gpu.body.state_dict().items():
        torch.testing.assert_close(restored.body.state_dict()[name], value, rtol=0, atol=0)


@pytest.fixture(scope="module")
def ray_with_gpu():
    if ray.is_initialized():  # conftest's shared instance has no GPU
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.parametrize("method", ["sfprompt", "sfl"])
def test_ray_server_actor_runs_the_body_on_the_gpu_and_matches_the_cpu_run(
        ray_with_gpu, tiny, rounds_both_ways, method):
    assert server_options(RayConfig()) == {"num_cpus": 1, "num_gpus": 1}
    cfg = load_config(None, tiny + [f"train.method={method}", "run.threads=1"])
    local, remote, backend = rounds_both_ways(cfg)
    assert backend.server_placement["device"] == "cuda"
    # Counts are exact whatever the device; losses agree up to float rounding, and
    # accuracy to within one test sample of the 8 (float noise can flip a near tie).
    exact = [c for c in local.columns if c in ("round", "participants", "kept_samples")
             or c.split(".")[0] in ("bytes", "flops", "sim")]
    pd.testing.assert_frame_equal(remote[exact], local[exact], check_exact=True)
    pd.testing.assert_series_equal(remote["train_loss"], local["train_loss"], rtol=1e-3)
    assert (remote["accuracy"] - local["accuracy"]).abs().max() <= 1 / 8 + 1e-9
