"""The split against independent truth where test_split.py bounds or skips it: with
prompts, against timm's own modules run on the same token sequence; layouts without a
position embedding or pooling over the prefix; the prompts' init bound by hand; the
probe norm where its eps and a batch of two matter; the local classifier apart from
the model's (these kill mutants of split.py that survived test_split.py)."""

import math

import pytest
import torch
from tinyvit import TINY, VARIANTS, tiny_vit

from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.platform.model.split import (ProbeNorm, add_probe_norm, classifier_names,
                                           init_prompts, local_pool_for, split_vit)

DEPTH = TINY["depth"]
P = 3


def timm_with_prompts(vit, prompts, images, blocks):
    """timm's own embedding, `blocks` of its own, its norm and readout, with the prompts
    inserted after the prefix tokens and removed before the readout (shallow VPT)."""
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    p = vit.num_prefix_tokens
    x = torch.cat([x[:, :p], prompts.expand(x.shape[0], -1, -1), x[:, p:]], dim=1)
    for block in blocks:
        x = block(x)
    x = vit.norm(x)
    return vit.forward_head(torch.cat([x[:, :p], x[:, p + prompts.shape[1]:]], dim=1))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_split_with_prompts_equals_timm_on_the_same_tokens(variant):
    vit = tiny_vit(variant)
    images = torch.randn(3, 3, 32, 32)
    for h, t in [(0, 0), (1, 1), (0, 2), (2, 1)]:
        split = split_vit(vit, h, t, prompt_length=P, local_pool="model")
        prompts = split.head.prompts
        with torch.no_grad():
            full = timm_with_prompts(vit, prompts, images, list(vit.blocks))
            torch.testing.assert_close(split.forward(images), full, rtol=0, atol=1e-5)
            local = timm_with_prompts(vit, prompts, images,
                                      list(vit.blocks[:h]) + list(vit.blocks[DEPTH - t:]))
            torch.testing.assert_close(split.local(images), local, rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"pos_embed": "none"},
                                       {"global_pool": "avg", "pool_include_prefix": True}],
                         ids=["no_pos_embed", "pool_over_prefix"])
def test_other_layouts_equal_timm(overrides):
    vit = tiny_vit("reg4", **overrides)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = vit(images)
        for h, t in [(0, 0), (1, 2)]:
            got = split_vit(vit, h, t, prompt_length=0).forward(images)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_prompt_length_is_the_number_of_prompt_tokens():
    vit = tiny_vit()
    assert split_vit(vit, 1, 1, prompt_length=0).head.prompt_length == 0
    assert split_vit(vit, 1, 1, prompt_length=P).head.prompt_length == P


def test_prompt_init_is_uniform_within_the_xavier_bound_of_the_patch_projection():
    # A non-square patch (8 x 4) tells its two sides apart: 3 * 8 * 4 inputs + 48 outputs.
    vit = tiny_vit(patch_size=(8, 4))
    bound = math.sqrt(6 / (3 * 8 * 4 + 48))
    torch.manual_seed(0)
    prompts = init_prompts(vit, 500)  # 24,000 draws
    assert prompts.shape == (1, 500, 48)
    assert prompts.max() <= bound and prompts.min() >= -bound
    assert prompts.max() > 0.999 * bound and prompts.min() < -0.999 * bound


def test_probe_norm_is_batchnorm_where_eps_and_a_batch_of_two_matter():
    probe, bn = ProbeNorm(6), torch.nn.BatchNorm1d(6, affine=False, momentum=None)
    for module in (probe, bn):
        module.train()
    x = torch.randn(2, 6) * 3e-3  # variance near eps: a different eps changes the output
    torch.testing.assert_close(probe(x), bn(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.running_var, bn.running_var)


def test_the_local_classifier_is_the_local_paths_own():
    vit = tiny_vit()
    split = split_vit(vit, 1, 1, prompt_length=P, local_classifier=True)
    tail = split.tail
    own, model = dict(tail.local_classifier.named_parameters()), dict(tail.classifier.named_parameters())
    assert own.keys() == model.keys()
    for name in own:  # a copy: equal values, storage of its own
        assert torch.equal(own[name], model[name])
        assert own[name].data_ptr() != model[name].data_ptr()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full, local = split.forward(images), split.local(images)
        own["bias"].add_(1.0)  # moves the local path's logits only
        torch.testing.assert_close(split.forward(images), full)
        torch.testing.assert_close(split.local(images), local + 1.0)
        model["bias"].add_(2.0)  # moves the full path's only
        torch.testing.assert_close(split.forward(images), full + 2.0)
        torch.testing.assert_close(split.local(images), local + 1.0)


def test_every_parameter_starts_frozen():
    split = split_vit(tiny_vit(), 1, 1, prompt_length=P, local_classifier=True)
    for part in (split.head, split.body, split.tail):
        assert not any(p.requires_grad for p in part.parameters())


def test_a_client_holds_head_and_tail_and_the_body_only_when_it_trains_it():
    split = split_vit(tiny_vit(), 1, 1, prompt_length=0)
    assert list(split.client().keys()) == ["head", "tail"]
    split.client_body = True
    assert list(split.client().keys()) == ["head", "body", "tail"]


def test_distilled_models_have_two_classifiers_each_with_a_probe_norm():
    assert classifier_names(tiny_vit()) == ("head",)
    vit = tiny_vit("distilled")
    assert classifier_names(vit) == ("head", "head_dist")
    add_probe_norm(vit)
    assert all(isinstance(getattr(vit, n).norm, ProbeNorm) for n in ("head", "head_dist"))


def test_the_local_readout():
    assert local_pool_for("token", 0, 0, "auto") == "avg"  # the CLS token is blind there
    assert local_pool_for("token", 1, 1, "auto") == "token"
    assert local_pool_for("token", 2, 0, "mean") == "avg"
    assert local_pool_for("token", 0, 0, "model") == "token"


@pytest.mark.parametrize("h,t", [(-1, 1), (1, -1), (3, 2)])
def test_an_impossible_split_is_named_in_full(h, t):
    with pytest.raises(SfpromptError) as err:
        split_vit(tiny_vit(), h, t, prompt_length=0)
    assert str(err.value) == (f"split: head_blocks={h} + tail_blocks={t} "
                              f"does not fit a model of {DEPTH} blocks")


def test_a_dynamic_image_size_vit_is_refused_naming_the_model_key():
    with pytest.raises(ConfigError) as err:
        split_vit(tiny_vit(dynamic_img_size=True), 1, 1, prompt_length=0)
    assert str(err.value) == "model.name: dynamic image size ViTs are not supported"


def test_a_split_without_its_vit_refuses_to_be_cut_again():
    split = split_vit(tiny_vit(), 1, 1, prompt_length=P)  # a fixed plan keeps no vit
    with pytest.raises(SfpromptError) as err:
        split.cut(0, 1)
    assert str(err.value) == "split: this split model keeps no ViT to cut again"


def test_a_cut_shares_the_prompts_and_draws_nothing_from_the_global_rng():
    vit = tiny_vit()
    split = split_vit(vit, 1, 1, prompt_length=P, local_classifier=True)
    split.vit = vit
    rng = torch.get_rng_state()
    cut = split.cut(0, 2)
    assert torch.equal(torch.get_rng_state(), rng)  # later draws are the run's own
    assert cut.head.prompts is split.head.prompts
    assert cut.tail.local_classifier is split.tail.local_classifier
    assert len(cut.head.blocks) == 0 and len(cut.tail.blocks) == 2
