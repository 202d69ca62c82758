"""The cost model: bytes and FLOPs of one client's round for any model, without weights
or compute.

It runs the method's own client round (platform/method/) on meta tensors: the timm model is
built on `torch.device("meta")`, the client's images are meta tensors of the model's
input size, and everything is counted by the same `Link` and `count_flops` a real run
uses. Meta tensors have shapes and no values, so every count that depends only on
shapes comes out exactly as in a real run, while nothing is allocated or computed:
ViT-L/16 at 224 px costs without a GPU. The dry-run seam in steps.py is the only code
that knows: values leave a tensor in three places (a loss for the record, the positions
pruning keeps, the labels of per-class pruning: a dry run prunes the shard as one
class), and optimizer steps, which move no byte and no counted FLOP, are skipped.

One thing differs on meta: `scaled_dot_product_attention` picks torch's math kernel
there, where a CPU or GPU run takes a fused kernel whose backward recomputes the
scores (counted as 2.5x the forward instead of 2x). `HostAttention` routes meta
attention to the fused CPU kernel, which has a meta implementation, so attention is
counted as the real run counts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, client_state
from sfprompt.platform.method.pruning import keep_count
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.build import build_split
from sfprompt.platform.wire.link import KINDS

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                     scale=None, enable_gqa=False):
    if enable_gqa:  # the fused CPU kernel has no grouped-query attention
        raise NotImplementedError("cost model: grouped-query attention")
    return _flash(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


class HostAttention(TorchFunctionMode):
    """Attention on meta tensors through the fused kernel a real run uses (module doc)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and args[0].is_meta:
            return _fused_attention(*args, **kwargs)
        return func(*args, **kwargs)


def client_cost(cfg: Config, samples: int, num_classes: int = 10,
                first_visit: bool = True) -> ClientResult:
    """What one client holding `samples` samples spends in one round of `cfg`'s method:
    bytes and messages by kind, client FLOPs and the server FLOPs it causes.
    `first_visit` adds the one-off frozen_download; a later visit under `prune.once`
    trains on the subset its first visit kept, without scoring. Losses come back nan."""
    # Shapes only: no weights are read. (dataclasses.replace: `cfg` is valid already,
    # and validating again would build the model once more.) One client at the split
    # `split.head_blocks:split.tail_blocks`, whatever `split.plan` gives others.
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="random"),
                              split=dataclasses.replace(cfg.split, plan="fixed"))
    with torch.device("meta"):
        split, norm = build_split(cfg, num_classes)
    size = cfg.model.img_size
    images = torch.empty(samples, 3, size, size, dtype=torch.uint8, device="meta")
    labels = torch.empty(samples, dtype=torch.long, device="meta")
    worker = ClientWorker(split, images, labels, **norm)
    method = METHODS[cfg.train.method]
    server = BodyServer(split.body, trains=method.server_trains, lr=cfg.train.pretrained_lr)
    # A dry run keeps the first positions (steps.kept_positions): so did its first visit.
    kept = (np.arange(keep_count(samples, cfg.prune.keep))
            if cfg.prune.once and not first_visit else None)
    task = ClientTask(client=0, round=1, indices=np.arange(samples), seed=cfg.run.seed,
                      first_visit=first_visit, kept=kept)
    global_state = client_state(split.client())
    with HostAttention():
        result = method.client_round(cfg, worker, task, global_state, server)
    result.server_flops = server.take_flops(task.client)
    return result


def cost_table(cfg: Config, methods: Sequence[str], samples: int,
               num_classes: int = 10) -> list[dict]:
    """One row per method: a client's per-round bytes by kind (`bytes.round` leaves out
    the one-off frozen_download), FLOPs, and the ratios to `fl` when it is in `methods`."""
    for name in methods:
        METHODS.check("train.method", name)
    rows = []
    for name in methods:
        method_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method=name))
        r = client_cost(method_cfg, samples, num_classes)
        row = {"method": name, "samples": samples, "kept_samples": r.num_kept,
               "flops.client": r.client_flops, "flops.server": r.server_flops,
               **{f"bytes.{k}": r.bytes.get(k, 0) for k in KINDS}}
        row["bytes.round"] = sum(row[f"bytes.{k}"] for k in KINDS if k != "frozen_download")
        rows.append(row)
    fl = next((row for row in rows if row["method"] == "fl"), None)
    for row in rows if fl else ():
        row["flops.client_vs_fl"] = row["flops.client"] / fl["flops.client"]
        row["bytes.round_vs_fl"] = row["bytes.round"] / fl["bytes.round"]
    return rows
