"""The client/server boundary: every tensor that crosses it, copied and counted.

Nothing here estimates. `Link.send` is the boundary itself: every tensor that goes from
a client to the server or back passes through it, is copied (as a wire would) and is
counted as numel x element size under its kind; a kind with a codec (codecs.py) is
counted as encoded and arrives decoded (`send_held`: a state the receiver already
holds, counted without the copy).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sfprompt.platform.wire.codecs import Codec


# The kinds of traffic, in the order of a round.
KINDS = (
    "frozen_download",   # one-off, on a client's first visit: every client-side weight
                         # that never trains (the head's; for fl_prompt the whole model)
    "download",          # per round: global trainable state (prompts, tail, ...)
    "smashed_up",        # head output, client -> server
    "activations_down",  # body output, server -> client
    "gradients_up",      # gradient of the body output, client -> server
    "gradients_down",    # gradient of the smashed activations, server -> client
    "upload",            # trained state, client -> server
)


DOWN = ("frozen_download", "download", "activations_down", "gradients_down")


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
        no copy to deliver. (The frozen head: every ClientWorker starts with the model's
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
