"""FLOPs that run, counted by torch's own `FlopCounterMode`, once per distinct computation.

`Flops.count(key, *signature)` counts the first occurrence of a computation and looks
the rest up: a step's FLOPs depend only on what runs and on shapes (the signature),
so the cached counts equal counting every step. We add the formulas torch lacks for
the CPU flash-attention kernels, so attention is counted on every device.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator

import torch

# Where triton is absent (sfprompt/__init__.py), torch warns on import that triton
# kernels cannot be counted; none runs here.
logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
from torch.utils import flop_counter  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula  # noqa: E402

class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, which attributes FLOPs to modules
    by hooking every module's forward and backward. We read only the total (its "Global"
    entry), and the tracker fails on a view of a parameter made under no_grad, as timm's
    attention pool makes for its latent query (torch 2.14)."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc) -> None:
        return None


@contextlib.contextmanager
def count_flops(total: Counter, key: Hashable) -> Iterator[None]:
    """Add the FLOPs of everything run inside (forward and backward) to `total[key]`."""
    mode = FlopCounterMode(display=False)
    mode.mod_tracker = _GlobalOnly()
    with mode:
        yield
    total[key] += mode.get_total_flops()


class Flops(Counter):
    """FLOPs by key (`"client"`, or a client's key on the server), each distinct
    computation counted once.

    The FLOPs of a block of code depend only on what runs and on shapes, never on
    values, so `count(key, *signature)` runs torch's counter the first time it sees a
    `signature` and adds the remembered figure every later time. A signature names
    what runs (the step and model part) and the shapes and gradient requirements of
    its inputs; whatever else could change the count (which parameters train, grad
    mode, the device) is added here. Counting under the FLOP counter costs a
    TorchDispatchMode call per operator, which on a small model is a large part of a
    step. `cache=None` counts every block afresh (the exactness tests compare both).
    """

    def __init__(self, cache: dict | None = None, context: Hashable = ()) -> None:
        super().__init__()
        self.cache = cache
        self.context = context  # e.g. which parameters train, fixed for the meter's life

    @contextlib.contextmanager
    def count(self, key: Hashable, *signature: Hashable) -> Iterator[None]:
        full = (self.context, torch.is_grad_enabled(), *signature)
        known = None if self.cache is None else self.cache.get(full)
        if known is not None:
            yield
        else:
            counted: Counter = Counter()
            with count_flops(counted, key):
                yield
            known = counted[key]
            if self.cache is not None:
                self.cache[full] = known
        self[key] += known


def trainable_signature(parameters: Iterable[torch.nn.Parameter]) -> tuple[bool, ...]:
    """Which of `parameters` train: part of every FLOP signature, since the backward
    pass computes a weight gradient only for those. (Callers keep the list: walking a
    model's modules for it costs more than a small step's FLOP count.)"""
    return tuple(p.requires_grad for p in parameters)


def shape_of(t: torch.Tensor) -> tuple:
    """What of a tensor a FLOP count can depend on: shape, whether it needs a
    gradient, and the device type (kernels, and so counted formulas, differ)."""
    return (tuple(t.shape), t.requires_grad, t.device.type)


# Attention on CPU: torch counts the CUDA kernels only (as of 2.14).
_cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


_cpu_flash_bwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


if _cpu_flash is not None and _cpu_flash not in flop_counter.flop_registry:

    @register_flop_formula(_cpu_flash, get_raw=True)
    def _cpu_flash_flops(query, key, value, *args, **kwargs) -> int:
        # (B, H, S, d): QK^T and AV, 2 FLOPs per multiply-add each.
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


if _cpu_flash_bwd is not None and _cpu_flash_bwd not in flop_counter.flop_registry:

    @register_flop_formula(_cpu_flash_bwd, get_raw=True)
    def _cpu_flash_bwd_flops(grad_out, query, key, value, *args, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape,
                                                     value.shape)
