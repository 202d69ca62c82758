"""The paper's headline from the cost model: SFPrompt's client FLOPs as a share of
federated full fine-tuning's, and its per-round traffic as a multiple of FL's.

    python benchmarks/headline.py [--models vit_base_patch16_224,vit_large_patch16_224]

Cao, Zhu, Gong (arXiv 2407.17533) report 0.46 % of FL's client computation and 0.47x
(ViT-B) / 0.19x (ViT-L) of its communication. Both sides here are counted, not
estimated: the methods' own client rounds run on meta tensors (platform/sim/costmodel.py),
one client and one round, at 224 px with 10 classes and fp32 everywhere.

Base assumptions (each row changes one): the client holds only the patch embedding
(+ prompts) and the classifier (`split.head_blocks = split.tail_blocks = 0`, the
paper's head and tail), 10 prompts, 250 samples per client (CIFAR-10 over 200
clients), keep 0.5 (EL2N), 1 local-loss epoch and 1 split epoch; FL trains the whole
model for the same 1 epoch on all 250 samples. SFPrompt's client FLOPs include EL2N
scoring of every sample; traffic is per round, without the one-off head download.

The batch size changes neither bytes nor FLOPs (both add up over batches), only the
number of messages, so each phase runs as one batch here to keep the meta runs short;
the first check row confirms it against batch 32.
"""

from __future__ import annotations

import argparse
import time

from sfprompt.platform.config.load import load_config
from sfprompt.platform.sim.costmodel import client_cost
from sfprompt.results.markdown import markdown_table

BASE = {"split.head_blocks": 0, "split.tail_blocks": 0, "prompt.length": 10,
        "prune.keep": 0.5, "train.local_epochs": 1, "train.split_epochs": 1}
BASE_SAMPLES = 250
# (label, changes to BASE, samples): one assumption at a time.
SETTINGS = [
    ("base", {}, BASE_SAMPLES),
    ("samples 100", {}, 100), ("samples 500", {}, 500), ("samples 1000", {}, 1000),
    ("keep 1.0 (no pruning)", {"prune.keep": 1.0}, BASE_SAMPLES),
    ("keep 0.3", {"prune.keep": 0.3}, BASE_SAMPLES),
    ("keep 0.1", {"prune.keep": 0.1}, BASE_SAMPLES),
    ("keep 0.55", {"prune.keep": 0.55}, BASE_SAMPLES),
    ("prompts 0", {"prompt.length": 0}, BASE_SAMPLES),
    ("prompts 50", {"prompt.length": 50}, BASE_SAMPLES),
    ("prompts 100", {"prompt.length": 100}, BASE_SAMPLES),
    ("local epochs 0", {"train.local_epochs": 0}, BASE_SAMPLES),
    ("local epochs 5", {"train.local_epochs": 5}, BASE_SAMPLES),
    ("split epochs 2 (FL 2)", {"train.split_epochs": 2}, BASE_SAMPLES),
    ("head/tail 1/1 blocks", {"split.head_blocks": 1, "split.tail_blocks": 1}, BASE_SAMPLES),
    ("head/tail 0/1 blocks", {"split.tail_blocks": 1}, BASE_SAMPLES),
    ("head/tail 2/2 blocks", {"split.head_blocks": 2, "split.tail_blocks": 2}, BASE_SAMPLES),
    ("cut in fp16", {"compress.activations": "fp16", "compress.gradients": "fp16"}, BASE_SAMPLES),
    ("cut in int8/token", {"compress.activations": "int8", "compress.gradients": "int8"}, BASE_SAMPLES),
    ("samples 270", {}, 270),
]
PAPER = "paper: client FLOPs 0.46 % of FL; traffic 0.47x FL (ViT-B/16), 0.19x FL (ViT-L/16)"


def _config(model: str, changes: dict, samples: int, method: str, batch: int | None = None):
    batch = batch or samples
    overrides = {**BASE, **changes, "model.name": model, "model.img_size": 224,
                 "train.method": method, "train.batch_size": batch,
                 "train.eval_batch_size": batch, "run.backend": "local"}
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def _round_bytes(result) -> int:
    return sum(v for k, v in result.bytes.items() if k != "frozen_download")


def _check_batch_size(model: str) -> str:
    """Batch 32 against one batch per phase: same bytes by kind and FLOPs."""
    one = client_cost(_config(model, {}, 64, "sfprompt"), 64)
    many = client_cost(_config(model, {}, 64, "sfprompt", batch=32), 64)
    same = (one.bytes == many.bytes and one.client_flops == many.client_flops
            and one.server_flops == many.server_flops)
    return f"check ({model}, 64 samples): batch 32 vs one batch per phase: " + (
        "same bytes and FLOPs" if same else f"DIFFERENT {one.bytes} {many.bytes}")


def headline(models: list[str]) -> list[dict]:
    rows, fl_cache = [], {}
    for model in models:
        for label, changes, samples in SETTINGS:
            start = time.perf_counter()
            cfg = _config(model, changes, samples, "sfprompt")
            sf = client_cost(cfg, samples)
            # FL depends only on the samples and the epochs, not on split, prompts or keep.
            key = (samples, cfg.train.split_epochs)
            if key not in fl_cache:
                fl_cache[key] = client_cost(_config(model, changes, samples, "fl"), samples)
            fl = fl_cache[key]
            rows.append({"model": model, "setting": label, "samples": samples,
                         "kept": sf.num_kept,
                         "client_flops_pct": 100 * sf.client_flops / fl.client_flops,
                         "comm_ratio": _round_bytes(sf) / _round_bytes(fl),
                         "sf_mb": _round_bytes(sf) / 1e6, "fl_mb": _round_bytes(fl) / 1e6,
                         "sf_gflop": sf.client_flops / 1e9, "fl_gflop": fl.client_flops / 1e9,
                         "seconds": time.perf_counter() - start})
        fl_cache.clear()
    return rows


def to_markdown(rows: list[dict]) -> str:
    header = ["model", "setting", "samples", "kept", "client FLOPs % of FL", "traffic x FL",
              "SFPrompt MB/round", "FL MB/round", "SFPrompt GFLOP", "FL GFLOP"]
    return markdown_table(header, [
        [r["model"].replace("_patch16_224", "/16"), r["setting"], r["samples"], r["kept"],
         f"{r['client_flops_pct']:.3f}", f"{r['comm_ratio']:.3f}", f"{r['sf_mb']:,.1f}",
         f"{r['fl_mb']:,.1f}", f"{r['sf_gflop']:,.1f}", f"{r['fl_gflop']:,.1f}"]
        for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_base_patch16_224,vit_large_patch16_224")
    models = parser.parse_args().models.split(",")
    start = time.perf_counter()
    print(_check_batch_size(models[0]), flush=True)
    rows = headline(models)
    print(to_markdown(rows))
    print(f"\n{PAPER}")
    print(f"{len(rows)} settings in {time.perf_counter() - start:.0f} s "
          f"(slowest {max(r['seconds'] for r in rows):.1f} s)")


if __name__ == "__main__":
    main()
