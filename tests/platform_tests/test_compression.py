"""Codecs of the tensors that cross the cut: bytes by hand, round-trip error bounds,
and which traffic they apply to in a real split step."""

import pytest
import torch
from tinyvit import tiny_vit

from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import CompressConfig
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.method.steps import split_update
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.split import split_vit
from sfprompt.platform.wire.codecs import CODECS, cut_codecs
from sfprompt.platform.wire.flops import Flops
from sfprompt.platform.wire.link import Link

B, T, D = 2, 5, 8


def _tensor(seed=0):
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))
    x[1, 2] = 0.0  # an all-zero token: scale 0 must not divide by zero
    x[0, 1] *= 1000.0  # a loud token must not hurt the others' precision
    return x


@pytest.mark.parametrize("name,size", [("none", B * T * D * 4), ("fp16", B * T * D * 2),
                                       ("bf16", B * T * D * 2),
                                       ("int8", B * T * D * 1 + B * T * 4)])
def test_bytes_on_the_wire_by_hand(name, size):
    link = Link({"smashed_up": CODECS[name]})
    x = _tensor()
    got = link.send("smashed_up", x)
    assert link.bytes["smashed_up"] == size and link.messages["smashed_up"] == 1
    assert got.dtype == x.dtype and got.shape == x.shape
    assert got.data_ptr() != x.data_ptr()


def test_round_trip_error_bounds():
    x = _tensor()
    link = Link({k: CODECS[n] for k, n in (("smashed_up", "fp16"), ("activations_down", "bf16"),
                                           ("gradients_up", "int8"), ("gradients_down", "none"))})
    fp16, bf16 = link.send("smashed_up", x), link.send("activations_down", x)
    int8, none = link.send("gradients_up", x), link.send("gradients_down", x)
    assert torch.equal(none, x)
    # Rounding to nearest: relative error at most half an ulp, 2^-11 (fp16), 2^-8 (bf16).
    assert ((fp16 - x).abs() <= x.abs() * 2.0 ** -11).all()
    assert ((bf16 - x).abs() <= x.abs() * 2.0 ** -8).all()
    # int8: at most half a step, a step being the token's absmax / 127.
    step = x.abs().amax(dim=-1, keepdim=True) / 127
    assert ((int8 - x).abs() <= step / 2 * (1 + 1e-5)).all()
    assert torch.equal(int8[1, 2], torch.zeros(D))
    # Per token: the quiet tokens keep their precision beside the loud one.
    assert (int8[0, 0] - x[0, 0]).abs().max() < 0.05


def test_state_dicts_and_weights_travel_uncompressed():
    link = Link(cut_codecs(CompressConfig(activations="int8", gradients="int8")))
    state = {"w": torch.randn(3, 4)}
    got = link.send("upload", state)
    assert link.bytes["upload"] == 48 and torch.equal(got["w"], state["w"])
    assert set(cut_codecs(CompressConfig())) == {"smashed_up", "activations_down",
                                                 "gradients_up", "gradients_down"}


class Capture:
    """An optimizer stand-in that keeps the gradients it would apply."""

    def __init__(self, params):
        self.params, self.grads = list(params), []

    def step(self):
        self.grads.append(torch.cat([p.grad.flatten() for p in self.params]))

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def test_split_step_counts_encoded_bytes_and_learns_almost_the_same():
    # 1 CLS + 2 prompts + 16 patches = 19 tokens of D = 48, 4 images, head and tail 1 block.
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    grads = {}
    for codec in ("none", "int8"):
        split = split_vit(tiny_vit("dinov2"), 1, 1, prompt_length=2)
        set_trainable(split, METHODS["sfprompt"])
        capture = Capture(p for p in split.client().parameters() if p.requires_grad)
        link = Link(cut_codecs(CompressConfig(activations=codec, gradients=codec)))
        split_update(split, [(x, y)], capture, BodyServer(split.body), link, key=0, flops=Flops())
        grads[codec] = capture.grads[0]
        per_token = 48 * 4 if codec == "none" else 48 + 4
        for kind in ("smashed_up", "activations_down", "gradients_up", "gradients_down"):
            assert link.bytes[kind] == 4 * 19 * per_token, (codec, kind)
    rel = (grads["int8"] - grads["none"]).norm() / grads["none"].norm()
    assert 0 < rel < 0.05


def test_unknown_codec_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^compress\.gradients: unknown codec 'zip' "
                                          r"\(known: bf16, fp16, int8, none\)$"):
        load_config(None, ["compress.gradients=zip"])


def test_int8_stays_in_range_when_a_tokens_scale_is_subnormal():
    # absmax 2e-42: absmax / 127 rounds to a subnormal with few bits, and v / s reaches
    # 130; the values are clamped to the int8 range, not wrapped around.
    wire = CODECS["int8"].encode(torch.tensor([[2e-42, -2e-42, 0.0]]))
    assert wire["values"].tolist() == [[127, -127, 0]]
