"""The server side of split training: the body, serving forward and backward requests.

One `BodyServer` serves many clients; each request carries the client's key, and the
server keeps that client's autograd graph between its forward and backward. In SFPrompt
the body is frozen, so backward only computes the gradient of its input; a method that
trains the body (SplitFed) passes `trains=True` and the server steps it after each
backward.
The in-process backend calls this object directly; the Ray server actor wraps it and
calls it from many threads at once. State is per client key and torch's FLOP counter
is per thread, so different clients' requests do not mix; one lock still runs one
request at a time, because a trained body must not step in the middle of another
client's backward, and on a CPU one request already uses every core (two at once only
oversubscribe them).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import torch
from torch import nn

from sfprompt.platform.model.precision import autocast
from sfprompt.platform.model.split import SplitModel
from sfprompt.platform.wire.flops import Flops, shape_of, trainable_signature


class BodyServer:
    def __init__(self, body: nn.Module, trains: bool = False, lr: float = 1e-3,
                 precision: str = "fp32", split: SplitModel | None = None) -> None:
        self.body = body
        # Under a split plan, the split `body` came from: a request naming a client's
        # split runs that cut's body (model/plans.py); the body never trains then.
        self._split = split
        self._bodies: dict[tuple[int, int], tuple[nn.Module, list]] = {}
        self.trains = trains
        self.precision = precision  # run.precision (precision.py)
        self._parameters = list(body.parameters())
        self.optimizer = torch.optim.Adam(body.parameters(), lr=lr) if trains else None
        self.flops = Flops(cache={})  # per client key, forward + backward
        self._pending: dict[Hashable, tuple] = {}  # key -> (input, output, split, parameters)
        self._lock = threading.Lock()  # one request at a time (module doc)

    def forward(self, key: Hashable, smashed: torch.Tensor, input_grad: bool,
                split: tuple[int, int] | None = None) -> torch.Tensor:
        """Body output for `smashed` (through the body of the client's `split`, under a
        split plan). The graph is kept for a backward call when the client wants the
        input gradient or the body itself trains."""
        keep = input_grad or self.trains
        # A leaf of our own: the caller's tensor may already be part of a graph (then
        # x.grad would stay None) and, in-process, must not be changed under it.
        x = smashed.detach().requires_grad_(input_grad)
        with self._lock:
            body, parameters = self._body(split)
            with torch.set_grad_enabled(keep), autocast(self.precision, x.device), \
                    self.flops.count(key, "body.forward", split, shape_of(x),
                                     trainable_signature(parameters)):
                out = body(x)
            if keep:
                self._pending[key] = (x, out, split, parameters)
        return out.detach()

    def backward(self, key: Hashable, grad_out: torch.Tensor) -> torch.Tensor | None:
        """Back-propagate `grad_out` through the body; returns d loss / d smashed (None
        when the forward did not ask for it) and steps the body when it trains."""
        with self._lock:
            x, out, split, parameters = self._pending.pop(key)
            with self.flops.count(key, "body.backward", split, shape_of(x),
                                  trainable_signature(parameters)):
                out.backward(grad_out)
            if self.optimizer is not None:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return x.grad

    def _body(self, split: tuple[int, int] | None) -> tuple[nn.Module, list]:
        if split is None:
            return self.body, self._parameters
        if split not in self._bodies:
            body = self._split.cut(*split).body
            self._bodies[split] = body, list(body.parameters())
        return self._bodies[split]

    @torch.no_grad()
    def load_global(self, state: dict[str, torch.Tensor]) -> None:
        """Under a split plan, the round's global state (reference names) into the model
        the bodies are cut from: blocks some clients train are body for others."""
        loadable = {**dict(self._split.client().named_parameters()),
                    **dict(self._split.client().named_buffers())}
        with self._lock:
            for name, value in state.items():
                loadable[name].copy_(value)

    def take_flops(self, key: Hashable) -> int:
        """FLOPs spent on `key` since the last call (the coordinator's per-client figure)."""
        with self._lock:
            return self.flops.pop(key, 0)

    def forget(self, key: Hashable) -> None:
        """Drop what a client that failed mid-round left behind: its graph and FLOPs."""
        with self._lock:
            self._pending.pop(key, None)
            self.flops.pop(key, 0)

    def state_dict(self) -> dict:
        """Body weights and optimizer state (copies on the CPU): what a checkpoint or a
        restarted server needs when the body trains."""
        with self._lock:
            optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
            return {"body": _on_cpu(self.body.state_dict()),
                    "optimizer": None if optimizer is None else
                    {"state": {i: _on_cpu(s) for i, s in optimizer["state"].items()},
                     "param_groups": optimizer["param_groups"]}}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.body.load_state_dict(state["body"])
            if self.optimizer is not None and state["optimizer"] is not None:
                self.optimizer.load_state_dict(state["optimizer"])


def _on_cpu(state: dict) -> dict:
    """Copies of a state dict's tensors on the CPU (other values as they are)."""
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in state.items()}
