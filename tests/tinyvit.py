"""Small random-init ViTs for tests."""

import timm
import torch

# Small random-init ViTs covering the layouts the split must handle: class token with
# position embedding over it (ViT), DINOv2-style layer scale, DeiT-3 (no_embed_class +
# layer scale), register tokens, average pooling without a class token, DeiT's
# distillation token and second classifier, and SigLIP's attention pool (MAP head).
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=5)
VARIANTS = {
    "vit": ("vit_tiny_patch16_224", {}),
    "dinov2": ("vit_small_patch14_dinov2", {"init_values": 0.5}),
    "deit3": ("deit3_small_patch16_224", {}),
    "reg4": ("vit_small_patch14_reg4_dinov2", {"init_values": 0.5}),
    "gap": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "distilled": ("deit_tiny_distilled_patch16_224", {}),  # a second prefix token, two heads
    "map": ("vit_base_patch16_siglip_224", {}),  # no class token, attention-pool readout
}


def tiny_vit(variant: str = "vit", seed: int = 0, **overrides):
    name, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **{**TINY, **extra, **overrides})
    return model.eval()
