"""The U-shaped split of a timm VisionTransformer into client head, server body, client tail.

    image -> [head: embed, CLS, pos, prompts, blocks[0:h)]  -- smashed -->
             [body: blocks[h:L-t)]                          -- body output -->
             [tail: blocks[L-t:L), norm, pool, classifier] -> logits

The three parts share the parameters of the model they were cut from (no copies), so a
split with no prompts computes exactly timm's `model(x)`. The *local path* runs head ->
tail with the body skipped; it is what the client uses for EL2N scoring and the
local-loss update.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from timm.layers import global_pool_nlc
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sfprompt.platform.errors import ConfigError, SfpromptError


class Head(nn.Module):
    """Client side before the cut: patch embedding, prefix tokens, prompts, first blocks."""

    def __init__(self, vit: VisionTransformer, head_blocks: int, prompt_length: int) -> None:
        super().__init__()
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.dist_token = getattr(vit, "dist_token", None)  # DeiT's distillation token
        self.reg_token = vit.reg_token
        self.pos_embed = vit.pos_embed
        self.no_embed_class = vit.no_embed_class
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.pos_drop, self.patch_drop, self.norm_pre = vit.pos_drop, vit.patch_drop, vit.norm_pre
        self.blocks = nn.Sequential(*vit.blocks[:head_blocks])
        self.prompts = nn.Parameter(init_prompts(vit, prompt_length)) if prompt_length else None

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompts is None else self.prompts.shape[1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """timm's patch + position embedding (VisionTransformer._pos_embed, static size)."""
        x = self.patch_embed(images)  # (B, N, D)
        prefix = [t.expand(x.shape[0], -1, -1)
                  for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        if self.pos_embed is None:
            x = torch.cat(prefix + [x], dim=1)
        elif self.no_embed_class:
            x = torch.cat(prefix + [x + self.pos_embed], dim=1)  # (B, prefix + N, D)
        else:
            x = torch.cat(prefix + [x], dim=1) + self.pos_embed  # (B, prefix + N, D)
        return self.norm_pre(self.patch_drop(self.pos_drop(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        if self.prompts is not None:
            # Shallow VPT: prompts go right after the prefix tokens and get no position
            # embedding.
            p = self.num_prefix_tokens
            prompts = self.prompts.expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :p], prompts, x[:, p:]], dim=1)  # (B, prefix + P + N, D)
        return self.blocks(x)


class Body(nn.Module):
    """Server side: the middle blocks, frozen in SFPrompt, never sent to a client."""

    def __init__(self, vit: VisionTransformer, head_blocks: int, tail_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*vit.blocks[head_blocks:len(vit.blocks) - tail_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Tail(nn.Module):
    """Client side after the body: last blocks, final norm, pooling and the classifier.
    A MAP head's attention pool (timm's `attn_pool`, SigLIP) is pooling, so it is here
    and trains with the tail. With `local_classifier`, the local path reads out through a
    classifier of its own (a copy of the model's, `local_classifier`), and the full path
    through the model's."""

    def __init__(self, vit: VisionTransformer, tail_blocks: int, prompt_length: int,
                 local_classifier: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*vit.blocks[len(vit.blocks) - tail_blocks:])
        # `classifier`, not timm's `head`: the head is SFPrompt's client-side first part.
        self.norm, self.fc_norm, self.head_drop = vit.norm, vit.fc_norm, vit.head_drop
        distilled = getattr(vit, "head_dist", None)
        self.classifier = vit.head if distilled is None else DistilledClassifier(vit.head,
                                                                                 distilled)
        self.local_classifier = copy.deepcopy(self.classifier) if local_classifier else None
        self.global_pool = vit.global_pool
        self.attn_pool = vit.attn_pool  # None unless global_pool == "map"
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.pool_include_prefix = vit.pool_include_prefix
        self.prompt_length = prompt_length

    def forward(self, x: torch.Tensor, pool: str | None = None,
                local: bool = False) -> torch.Tensor:
        """Logits from tokens (B, prefix + P + N, D); `pool` overrides the model's pooling,
        `local` (the local path) reads out through the local classifier if there is one."""
        x = self.norm(self.blocks(x))
        p = self.num_prefix_tokens
        x = torch.cat([x[:, :p], x[:, p + self.prompt_length:]], dim=1)  # (B, prefix + N, D)
        pool = pool or self.global_pool
        if pool == "map":  # timm's pool(): the latent query attends to every token
            pooled = self.attn_pool(x)  # (B, D)
        else:
            pooled = global_pool_nlc(x, pool_type=pool, num_prefix_tokens=p,
                                     reduce_include_prefix=self.pool_include_prefix)
        classifier = self.classifier
        if local and self.local_classifier is not None:
            classifier = self.local_classifier
        if isinstance(classifier, DistilledClassifier):
            # The distillation token's classifier reads that token (the second prefix
            # token) where the class token's reads the class token, else the same pool.
            dist = x[:, 1] if pool == "token" else pooled
            return classifier(self.head_drop(self.fc_norm(pooled)),
                              self.head_drop(self.fc_norm(dist)))
        return classifier(self.head_drop(self.fc_norm(pooled)))


class DistilledClassifier(nn.Module):
    """DeiT's two classifiers (timm's VisionTransformerDistilled): `head` on the class
    token, `dist` on the distillation token; the logits are their mean, as timm computes
    them outside distillation training (fine-tuning here has no teacher)."""

    def __init__(self, head: nn.Module, dist: nn.Module) -> None:
        super().__init__()
        self.head, self.dist = head, dist

    def forward(self, cls: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return (self.head(cls) + self.dist(dist)) / 2


def init_prompts(vit: VisionTransformer, length: int) -> torch.Tensor:
    """VPT's init: uniform with the Xavier bound of a patch-to-token projection.

    Draws from the global torch RNG, so seeding before the split makes it deterministic.
    """
    dim = vit.embed_dim
    patch = vit.patch_embed.patch_size
    bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + dim))
    return torch.empty(1, length, dim).uniform_(-bound, bound)  # (1, P, D)


class ProbeNorm(nn.Module):
    """Standardises the pooled feature before the classifier: batch statistics in
    training steps, running statistics otherwise (EL2N scoring, evaluation). It is
    BatchNorm without affine, the linear-probe head of MAE (He et al., 2022), and the
    running statistics travel and are averaged with the classifier (client.State).

    Why: pretrained features share one large common direction (the mean feature is
    nearly as long as a single feature). Under label skew each client pushes the
    classifier's rows along it by its own class mix, and FedAvg of those pushes
    favours whichever class most clients hold; standardising the feature removes the
    common direction (figures: README, Benchmarks, "Probe norm").

    The running statistics are the cumulative average over the batches of the current
    training pass (BatchNorm's momentum=None; `SplitModel.training` starts a pass), so
    each client uploads the statistics of its own data under the current model, and
    their FedAvg is the statistics of all the round's data, with no lag behind the model
    however few steps a client takes. They describe the full path only: the local
    path's features are another distribution (far from the full path's: README,
    Benchmarks, "Probe norm"), so it always uses its own batch's statistics and never
    updates the running ones. A batch of one has no statistics of its own and uses the
    running ones.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.batches = 0  # batches averaged into the running statistics in this pass
        self.local_path = False  # set by SplitModel.local while it runs
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        if (self.training or self.local_path) and x.shape[0] > 1:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            if self.training and not self.local_path:
                self.batches += 1
                with torch.no_grad():
                    self.running_mean.lerp_(mean, 1.0 / self.batches)
                    self.running_var.lerp_(x.var(0), 1.0 / self.batches)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps)


def classifier_names(vit: VisionTransformer) -> tuple[str, ...]:
    """The attributes of `vit` that are classifiers: `head`, and DeiT's `head_dist`."""
    return ("head", "head_dist") if hasattr(vit, "head_dist") else ("head",)


def add_probe_norm(vit: VisionTransformer) -> None:
    """Put a `ProbeNorm` in front of each of `vit`'s classifiers (`head.norm`,
    `head.linear`)."""
    for name in classifier_names(vit):
        linear = getattr(vit, name)
        norm = ProbeNorm(linear.in_features).train(vit.training)
        setattr(vit, name, nn.Sequential(OrderedDict(norm=norm, linear=linear)))


@dataclass
class SplitModel:
    """The three parts plus the local-path readout; `client` holds what a device stores."""

    head: Head
    body: Body
    tail: Tail
    local_pool: str
    # The body lives on the client too (methods that do not split: fl, fl_prompt,
    # centralized); set by `method.trainable.set_trainable` from the method.
    client_body: bool = False
    # The model the parts were cut from, kept where other cuts of it are needed (split
    # plans: `cut`), and `split.local_pool`'s choice, which each cut resolves again.
    vit: VisionTransformer | None = None
    pool_choice: str = "auto"

    def __post_init__(self) -> None:
        self._norms = [m for m in self.tail.modules() if isinstance(m, ProbeNorm)]
        self._cuts: dict[tuple[int, int], SplitModel] = {}

    def cut(self, head_blocks: int, tail_blocks: int) -> SplitModel:
        """The same model cut at (head_blocks, tail_blocks): every parameter shared with
        this split, the prompts and the local classifier included, so training one cut
        trains the others (model/plans.py). Needs `vit`; made once per cut."""
        key = (head_blocks, tail_blocks)
        if key not in self._cuts:
            vit = self.vit
            if vit is None:
                raise SfpromptError("split: this split model keeps no ViT to cut again")
            head = Head(vit, head_blocks, 0)  # no prompt drawn: the RNG stays untouched
            head.prompts = self.head.prompts
            tail = Tail(vit, tail_blocks, self.tail.prompt_length)
            tail.local_classifier = self.tail.local_classifier
            pool = local_pool_for(vit.global_pool, head_blocks, tail_blocks, self.pool_choice)
            self._cuts[key] = SplitModel(head, Body(vit, head_blocks, tail_blocks), tail, pool,
                                         vit=vit, pool_choice=self.pool_choice)
        return self._cuts[key]

    def client(self) -> nn.ModuleDict:
        """The parameters that live on a client, named `head.*` and `tail.*` (and
        `body.*` when the whole model is on the client)."""
        parts = {"head": self.head, "body": self.body, "tail": self.tail}
        return nn.ModuleDict({k: m for k, m in parts.items() if k != "body" or self.client_body})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The full path, head -> body -> tail, in one process (evaluation, tests)."""
        return self.tail(self.body(self.head(images)))

    def local(self, images: torch.Tensor) -> torch.Tensor:
        """The local path: head -> tail with the body skipped."""
        norms = self._norms
        for m in norms:
            m.local_path = True
        try:
            return self.tail(self.head(images), pool=self.local_pool, local=True)
        finally:
            for m in norms:
                m.local_path = False

    @contextmanager
    def training(self):
        """Training mode while a training pass runs: batch statistics in `ProbeNorm`,
        evaluation mode otherwise. The probe norms are the only modules with a training
        mode to switch (the model is built without dropout or drop-path, model/build.py), so
        only they are switched: setting a mode walks every submodule."""
        for m in self._norms:
            m.train()
            m.batches = 0
        try:
            yield
        finally:
            for m in self._norms:
                m.eval()


def local_pool_for(model_pool: str, head_blocks: int, tail_blocks: int, choice: str) -> str:
    """Readout of the local path. With no block on the client the CLS token is the same
    for every image (it never attends to a patch), so "auto" mean-pools then."""
    if choice == "mean" or (choice == "auto" and head_blocks + tail_blocks == 0):
        return "avg"
    return model_pool


def check_splittable(vit: VisionTransformer) -> None:
    """Refuse the ViT layouts the split does not handle, naming `model.name` (config
    validation calls this on the meta-device model, before anything runs)."""
    if getattr(vit, "dynamic_img_size", False):
        raise ConfigError("model.name: dynamic image size ViTs are not supported")


def split_vit(vit: VisionTransformer, head_blocks: int, tail_blocks: int, prompt_length: int,
              local_pool: str = "auto", local_classifier: bool = False) -> SplitModel:
    """Cut `vit` at (head_blocks, tail_blocks), with a classifier of the local path's own
    when `local_classifier` (Tail). Every parameter starts frozen; the method
    (method/trainable.py) unfreezes what it trains."""
    depth = len(vit.blocks)
    if head_blocks < 0 or tail_blocks < 0 or head_blocks + tail_blocks > depth:
        raise SfpromptError(f"split: head_blocks={head_blocks} + tail_blocks={tail_blocks} "
                            f"does not fit a model of {depth} blocks")
    check_splittable(vit)
    head = Head(vit, head_blocks, prompt_length)
    body = Body(vit, head_blocks, tail_blocks)
    tail = Tail(vit, tail_blocks, prompt_length, local_classifier)
    for param in itertools.chain(vit.parameters(), tail.parameters()):  # the copy too
        param.requires_grad_(False)
    if head.prompts is not None:
        head.prompts.requires_grad_(False)
    for part in (head, body, tail):  # in the model's mode, as their submodules are
        part.train(vit.training)
    pool = local_pool_for(vit.global_pool, head_blocks, tail_blocks, local_pool)
    return SplitModel(head, body, tail, pool, pool_choice=local_pool)
