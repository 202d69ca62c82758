"""The arithmetic of compute (`run.precision`): fp32, or bf16 autocast.

Under "bf16" the operators autocast lists (matrix products, attention) run in
bfloat16 while parameters, optimizer state and gradients stay fp32 (master weights),
so a round changes only in the rounding of those products. FLOPs are counted from
shapes and come out the same; a tensor that crosses the network keeps the dtype the
model gives it, so bytes still follow the codecs (wire/codecs.py).
"""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str, device: torch.device | str = "cpu"):
    """The autocast context of `precision` for compute on `device`: none for fp32, and
    none on meta tensors, which have no arithmetic to round (the cost model)."""
    device_type = torch.device(device).type
    if precision == "fp32" or device_type == "meta":
        return contextlib.nullcontext()
    # No cast cache: it keeps a weight's bf16 copy until the context exits, and a whole
    # client round (many optimizer steps) runs in one context.
    return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)
