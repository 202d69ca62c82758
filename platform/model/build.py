"""The split model of a run, built once the same way for every user of it.

The coordinator, the server actor, client and evaluation actors, the cost model and
the feasibility check of studies all call `build_split`: same seed, same weights, the
same trainable set, so no model needs to travel between processes. Being the one call
every computing process makes after importing torch, it also lets the CUDA libraries'
pages go where there is no GPU (cuda_pages.py).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.registry import METHODS, prompt_length
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.cuda_pages import page_out_cuda_libraries
from sfprompt.platform.model.plans import reference_split
from sfprompt.platform.model.split import (SplitModel, add_probe_norm, classifier_names,
                                           split_vit)
from sfprompt.platform.model.weights import create_vit


def build_split(cfg: Config, num_classes: int) -> tuple[SplitModel, dict]:
    """The split model with the method's trainable set; same seed => same initial state
    in every process (classifier and prompt init draw from the seeded torch RNG)."""
    page_out_cuda_libraries()
    torch.manual_seed(cfg.run.seed)
    vit = create_vit(cfg.model.name, num_classes=num_classes, img_size=cfg.model.img_size,
                     weights=cfg.model.weights)
    vit.eval()  # no dropout or drop-path: the parts are trained, the model is not sampled
    # A zero classifier starts every client from uniform predictions, so the first
    # round's updates are about the data rather than about a random head's bias.
    for name in classifier_names(vit):
        torch.nn.init.zeros_(getattr(vit, name).weight)
        torch.nn.init.zeros_(getattr(vit, name).bias)
    split = method_split(cfg, vit)
    if cfg.split.plan != "fixed":  # other cuts of the model are made from it (plans.py)
        split.vit = vit
    pcfg = vit.pretrained_cfg
    norm = dict(img_size=cfg.model.img_size, mean=tuple(pcfg.get("mean", (0.5,) * 3)),
                std=tuple(pcfg.get("std", (0.5,) * 3)))
    return split, norm


def method_split(cfg: Config, vit: VisionTransformer) -> SplitModel:
    """`vit` split as `cfg` says, with the method's prompts and trainable set (and the
    probe norm when asked): on real weights here, on the meta device for a study's
    memory check (studies/feasibility.py)."""
    if cfg.model.probe_norm:
        add_probe_norm(vit)
    head_blocks, tail_blocks = reference_split(cfg.split)  # the fixed split, unless planned
    method = METHODS[cfg.train.method]
    # A method without a local path has no local-loss update, so no local classifier.
    separate = cfg.train.local_classifier == "separate" and method.local_path
    split = split_vit(vit, head_blocks, tail_blocks, prompt_length(cfg),
                      cfg.split.local_pool, separate)
    set_trainable(split, method)
    return split
