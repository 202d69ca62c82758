"""Shared test set-up: offline, deterministic, small models, Ray without auth files."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tinyvit import VARIANTS  # noqa: E402


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    """Each small ViT layout in turn."""
    return request.param


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and least at the mercy of a busy machine, on one thread."""
    import torch  # here, not at the top: most tests that need no torch stay light

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
