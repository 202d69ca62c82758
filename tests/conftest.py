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
