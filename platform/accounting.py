"""Measured accounting: bytes that cross the client/server boundary and FLOPs that run.

Nothing here estimates. `Link.send` is the boundary itself: every tensor that goes from
a client to the server or back passes through it, is copied (as a wire would) and is
counted as numel x element size under its kind; a kind with a codec (compression.py)
is counted as encoded and arrives decoded (`send_held`: a state the receiver already
holds, counted without the copy). FLOPs come from torch's own `FlopCounterMode` around
the code that actually runs, once per distinct computation (`Flops`); we add the
formulas torch lacks for the CPU flash-attention kernels so attention is counted on
every device.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

if TYPE_CHECKING:
    from sfprompt.platform.compression import Codec

# The kinds of traffic, in the order of a round.
KINDS = (
    "head_download",     # one-off: frozen head weights, the first time a client joins
    "download",          # per round: global trainable state (prompts, tail, ...)
    "smashed_up",        # head output, client -> server
    "activations_down",  # body output, server -> client
    "gradients_up",      # gradient of the body output, client -> server
    "gradients_down",    # gradient of the smashed activations, server -> client
    "upload",            # trained state, client -> server
)
DOWN = ("head_download", "download", "activations_down", "gradients_down")


def nbytes(payload: torch.Tensor | Mapping[str, torch.Tensor]) -> int:
    """Size on the wire of a tensor or a state dict: numel x element size, summed."""
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    return sum(nbytes(t) for t in payload.values())


# Called with (kind, bytes) for every message sent inside `on_send` (realtime emulation).
_send_hook: ContextVar[Callable[[str, int], None] | None] = ContextVar("send_hook", default=None)


@contextlib.contextmanager
def on_send(hook: Callable[[str, int], None]) -> Iterator[None]:
    """Call `hook(kind, nbytes)` for every message any Link sends in this context."""
    token = _send_hook.set(hook)
    try:
        yield
    finally:
        _send_hook.reset(token)


class Link:
    """One client's connection to the server: copies what crosses and counts its bytes.
    `codecs` gives the encoding of a kind's tensors (none: as they are)."""

    def __init__(self, codecs: Mapping[str, Codec] | None = None) -> None:
        self.bytes: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.codecs = dict(codecs or {})

    def send(self, kind: str, payload):
        """Carry `payload` (tensor or state dict) across; returns the receiver's copy."""
        codec = self.codecs.get(kind) if isinstance(payload, torch.Tensor) else None
        wire = codec.encode(payload.detach()) if codec is not None else payload
        self._count(kind, nbytes(wire))
        if codec is not None:
            return codec.decode(wire, payload.dtype)
        if isinstance(payload, torch.Tensor):
            return payload.detach().clone()
        return {name: t.detach().clone() for name, t in payload.items()}

    def send_held(self, kind: str, payload: Mapping[str, torch.Tensor]) -> None:
        """Send a state the receiver already holds bit for bit: counted like `send`, with
        no copy to deliver. (The frozen head: every Device starts with the model's
        frozen weights, so a first visit's download changes nothing it holds.)"""
        self._count(kind, nbytes(payload))

    def _count(self, kind: str, size: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown traffic kind {kind!r}")
        self.bytes[kind] += size
        self.messages[kind] += 1  # one per send: each pays the latency
        hook = _send_hook.get()
        if hook is not None:
            hook(kind, size)


@contextlib.contextmanager
def count_flops(total: Counter, key: Hashable) -> Iterator[None]:
    """Add the FLOPs of everything run inside (forward and backward) to `total[key]`."""
    mode = FlopCounterMode(display=False)
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


# --- attention on CPU: torch counts the CUDA kernels only (as of 2.14) -----------------

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
