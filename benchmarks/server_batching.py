"""Would the server gain from batching concurrent requests? Body forward + input-gradient
backward of k client requests one by one vs as one concatenated batch.

    python benchmarks/server_batching.py [--requests 4] [--batch 32] [--threads 1 2]
                                         [--repeats 5] [--device cpu|cuda] [key=value ...]

Uses the body of the configured split (default: DINOv2 ViT-S/14 at 56 px, h = t = 1)
on random smashed activations, alternating the two ways so host noise hits both, and
prints the best time of each and whether the outputs are bit-identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from sfprompt.platform.config.load import load_config
from sfprompt.platform.model.build import build_split


def serve(body: torch.nn.Module, requests: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
    """Input gradients of every request (ones as the output gradient)."""
    if batched:
        x = torch.cat(requests).requires_grad_(True)  # (k B, T, D)
        out = body(x)
        out.backward(torch.ones_like(out))
        return list(x.grad.split([len(r) for r in requests]))
    grads = []
    for r in requests:
        x = r.clone().requires_grad_(True)
        out = body(x)
        out.backward(torch.ones_like(out))
        grads.append(x.grad)
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where the body runs (cpu, cuda)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(None, args.overrides)
    split, _ = build_split(cfg, num_classes=10)
    with torch.no_grad():
        tokens = split.head(torch.zeros(1, 3, cfg.model.img_size, cfg.model.img_size)).shape[1:]
    device = torch.device(args.device)
    body = split.body.to(device)
    torch.manual_seed(0)
    requests = [torch.randn(args.batch, *tokens).to(device)  # (B, T, D) each
                for _ in range(args.requests)]
    print(f"{cfg.model.name} body ({len(body.blocks)} blocks) at {cfg.model.img_size} px on "
          f"{device}, {args.requests} requests of {args.batch} x {tuple(tokens)}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeats):
            for batched in (False, True):
                start = time.perf_counter()
                serve(body, requests, batched)
                if device.type == "cuda":
                    torch.cuda.synchronize()  # kernels run asynchronously
                best[batched] = min(best[batched], time.perf_counter() - start)
        same = all(torch.equal(a, b) for a, b in zip(serve(body, requests, False),
                                                     serve(body, requests, True)))
        print(f"{threads} thread(s): one by one {best[False]:.3f} s, batched {best[True]:.3f} s, "
              f"speed-up {best[False] / best[True]:.2f}x, bit-identical {same}")


if __name__ == "__main__":
    main()
