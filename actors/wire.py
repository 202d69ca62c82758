"""Tensors between Ray processes as numpy arrays.

Ray pickles a torch tensor through torch's own serializer, which copies it on both
sides; a numpy array travels as an out-of-band buffer that the receiver reads straight
from the object store. Every tensor that crosses between actors (the cut's four
messages, the global state, an uploaded state) goes as numpy and comes back as a
tensor over the same memory. A dtype numpy lacks (bfloat16) travels as a tensor.
What crosses and its size are counted before this, by `Link` (platform/wire/link.py):
this is only how Ray carries it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from sfprompt.platform.method.client import State


def to_wire(t: torch.Tensor | None):
    """An array over the tensor's memory (CPU), or the tensor when numpy has no dtype."""
    if t is None or t.dtype == torch.bfloat16:
        return t
    return t.detach().cpu().numpy()


def from_wire(a) -> torch.Tensor | None:
    """A tensor over the received array's memory. Object-store arrays are read-only:
    the receivers copy (Link, ClientWorker.load) or only read (aggregation) what they get."""
    if not isinstance(a, np.ndarray):
        return a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable"
        return torch.from_numpy(a)


def state_to_wire(state: State) -> dict:
    return {name: to_wire(t) for name, t in state.items()}


def state_from_wire(state: dict) -> State:
    return {name: from_wire(a) for name, a in state.items()}
