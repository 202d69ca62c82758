"""A client's training footprint, measured on the meta device: what a device must hold.

The split model is built on the meta device (shapes only, no memory, no arithmetic),
one training batch runs through the client's local path (head -> tail), and
autograd's saved-tensor hook sees every activation kept for the backward pass. The
footprint is

    client parameters (frozen and trainable)
    + gradient and two Adam moments per trainable parameter
    + activations saved for backward + the input batch.

The classifier is built for 1,000 classes (ImageNet's) because the class count is known
only once the data is loaded; that over-counts a 10-class task by 6 MiB of a ViT-S
client's ~80 MiB (the default split), on the safe side. The dataset shard itself is
not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import timm
import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.model.build import method_split

MIB = 2**20
_ADAM_COPIES = 3  # gradient, exp_avg, exp_avg_sq, each the size of the parameter
_CLASSES = 1000  # an upper bound on the classes of the datasets here (module doc)


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
