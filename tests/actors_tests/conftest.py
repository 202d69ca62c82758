"""A tiny run configuration for the Ray tests: a small random ViT on 8x8 digits."""

import pytest

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=160", "data.test_fraction=0.05", "fed.num_clients=6",
        "fed.clients_per_round=4", "fed.rounds=2", "fed.partition=iid", "train.batch_size=16",
        "prompt.length=2", "prune.keep=0.5", "profiles.sigma=0.3"]


@pytest.fixture
def tiny() -> list[str]:
    """Dotted overrides of the tiny run (a fresh list: tests may extend it)."""
    return list(TINY)
