"""Compression of the tensors that cross the cut: smashed activations, body outputs and
the gradients of both.

A codec is one registered pair: `encode(tensor) -> wire` (a dict of tensors, which is
what `Link` counts, byte for byte) and `decode(wire, dtype) -> tensor` on the receiver.
`compress.activations` picks the codec of `smashed_up` and `activations_down`,
`compress.gradients` that of `gradients_up` and `gradients_down`; model weights
(download, upload) always travel as they are.

    none   the tensor as it is (fp32 in fp32 runs)
    fp16   IEEE half: 2 bytes per value, overflows past 65504
    bf16   bfloat16: 2 bytes, fp32's range with 8 bits of mantissa
    int8   per-token absmax: each token's vector v (the last dim, D values) becomes
           round(v / s) in [-127, 127] with s = max|v| / 127, sent as int8 plus s as
           fp32; D + 4 bytes per token, error at most s / 2 per value
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sfprompt.platform.config.schema import CompressConfig
from sfprompt.platform.registry import Registry

Wire = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Codec:
    encode: Callable[[torch.Tensor], Wire]
    decode: Callable[[Wire, torch.dtype], torch.Tensor]


CODECS: Registry[Codec] = Registry("codec")
register_codec = CODECS.add  # (name, codec)

ACTIVATION_KINDS = ("smashed_up", "activations_down")
GRADIENT_KINDS = ("gradients_up", "gradients_down")


def _cast(dtype: torch.dtype | None) -> Codec:
    """Send the values cast to `dtype` (None: as they are). copy=True: the receiver
    never shares memory with the sender, even when nothing is cast."""
    return Codec(encode=lambda t: {"values": t.to(dtype or t.dtype, copy=True)},
                 decode=lambda wire, dtype_out: wire["values"].to(dtype_out))


register_codec("none", _cast(None))
register_codec("fp16", _cast(torch.float16))
register_codec("bf16", _cast(torch.bfloat16))


def _int8_encode(t: torch.Tensor) -> Wire:
    scale = t.detach().abs().amax(dim=-1, keepdim=True).float() / 127  # (..., 1)
    # An all-zero token has scale 0: dividing by 1 instead sends zeros, decoded as 0.
    q = torch.round(t.float() / torch.where(scale > 0, scale, 1.0)).clamp_(-127, 127)
    return {"values": q.to(torch.int8), "scales": scale.squeeze(-1)}  # (..., D), (...)


def _int8_decode(wire: Wire, dtype: torch.dtype) -> torch.Tensor:
    return (wire["values"].float() * wire["scales"].unsqueeze(-1)).to(dtype)  # (..., D)


register_codec("int8", Codec(_int8_encode, _int8_decode))


def cut_codecs(cfg: CompressConfig) -> dict[str, Codec]:
    """The codec of each kind that crosses the cut, for `Link(codecs=...)`."""
    return {**{k: CODECS[cfg.activations] for k in ACTIVATION_KINDS},
            **{k: CODECS[cfg.gradients] for k in GRADIENT_KINDS}}
