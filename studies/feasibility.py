"""Does a trial's split fit its clients? Checked before the trial trains anything.

A point of the search space can be impossible: head + tail deeper than the model (the
config rejects it), or a client part whose training footprint exceeds the memory of
some client in the fleet (`Profile.memory_bytes`). Such a trial is recorded as failed
with the reason, never run, and the study goes on.

The footprint is measured, not estimated by formula: the split model is built on the
meta device (shapes only, no memory, no arithmetic), one training batch runs through
the client's local path (head -> tail), and autograd's saved-tensor hook sees every
activation kept for the backward pass. The footprint is

    client parameters (frozen and trainable)
    + gradient and two Adam moments per trainable parameter
    + activations saved for backward + the input batch.

The classifier is built for 1,000 classes (ImageNet's) because the class count is known
only once the data is loaded; that over-counts a 10-class task by 6 MiB of a ViT-S
client's ~80 MiB (the default split), on the safe side. The dataset shard itself is not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import timm
import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.model.build import method_split
from sfprompt.platform.sim.profiles import make_profiles

log = logging.getLogger(__name__)
MIB = 2**20
_ADAM_COPIES = 3  # gradient, exp_avg, exp_avg_sq, each the size of the parameter
_CLASSES = 1000  # an upper bound on the classes of the datasets here (module doc)


class Infeasible(SfpromptError):
    """This point of the space cannot run; the message says why (a trial user attr)."""


def saved_activation_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn()` runs,
    leaving out those of `exclude` (parameters, counted on their own). Views of one
    tensor share a storage and count once."""
    # A storage's identity is its C pointer (`_cdata`): on the meta device every
    # data_ptr() is 0, so the address of the data cannot tell two storages apart.
    skip = {t.untyped_storage()._cdata for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def client_memory_bytes(cfg: Config) -> dict[str, int]:
    """The training footprint of one client under `cfg`, by part (module doc)."""
    with torch.device("meta"):
        vit = timm.create_model(cfg.model.name, num_classes=_CLASSES,
                                img_size=cfg.model.img_size)
        split = method_split(cfg, vit)
        params = list(split.client().parameters())
        size = cfg.model.img_size
        images = torch.empty(cfg.train.batch_size, vit.patch_embed.proj.in_channels, size, size)
        activations = saved_activation_bytes(lambda: split.local(images), exclude=params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return {"parameters": sum(p.numel() * p.element_size() for p in params),
            "optimizer": _ADAM_COPIES * trainable,
            "activations": activations + images.numel() * images.element_size()}


def check_memory(cfg: Config, memory_fraction: float) -> None:
    """Raise Infeasible if some client cannot hold the footprint in `memory_fraction`
    of its memory; every registered client may be sampled, so all of them must fit."""
    if memory_fraction <= 0:
        return
    parts = client_memory_bytes(cfg)
    need = sum(parts.values())
    profiles = make_profiles(cfg.profiles, cfg.fed.num_clients, cfg.run.seed)
    smallest = min(range(len(profiles)), key=lambda i: profiles[i].memory_bytes)
    allowed = memory_fraction * profiles[smallest].memory_bytes
    log.info("client footprint %.1f MiB (%s); smallest client %d has %.1f MiB",
             need / MIB, ", ".join(f"{k} {v / MIB:.1f}" for k, v in parts.items()), smallest,
             profiles[smallest].memory_bytes / MIB)
    if need > allowed:
        raise Infeasible(
            f"client memory: the split needs {need / MIB:.1f} MiB per client but client "
            f"{smallest} ({profiles[smallest].tier}) may use {allowed / MIB:.1f} MiB "
            f"({memory_fraction:g} of {profiles[smallest].memory_bytes / MIB:.1f} MiB)")
