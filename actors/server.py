"""The server actor: the body, on a GPU when it has one, serving every client's requests.

It builds the split model from the config itself (`build_split`: same seed, same
weights as every other process, and nothing large crosses the network) and keeps only
the body. Client actors call `forward` and `backward` concurrently: it is a threaded
actor, and `BodyServer` runs one request at a time (platform/method/server.py says
why) while the other threads receive and deserialize theirs. Tensors arrive and leave on the CPU;
the body runs on `cuda` when the actor was given a GPU.

Faults: the backend starts it with `max_restarts`, so Ray rebuilds it (from the config,
like the first time) when its process dies; what it held then is gone, and the backend
retries the lost client work and, when the body trains, restores the body and its
optimizer from the coordinator's copy (`load_state_dict`). `crash_on_next_request`
arms an injected crash (`faults.server_crash_round`): the process exits on the next
forward, in the middle of a client's work, as a real crash would.

Batching concurrent requests into one body call is not done: on a CPU it does not pay,
since one request already keeps every core busy, and requests only coincide with two or
more client actors. On a GPU serving many client actors small requests leave it idle
between kernel launches, so batching would pay there; that is where to add it (gather
requests for a few ms, one body call, split the outputs and the FLOP count by rows; a
batched graph's backward needs every client's gradient at once). The measurements,
CPU and GPU, are in the README's Benchmarks (benchmarks/server_batching.py).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Hashable

import ray
import torch

from sfprompt.actors.wire import from_wire, state_from_wire, to_wire
from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.build import build_split


class ServerActor:
    """Wraps `BodyServer` for remote use; create with `ray.remote(ServerActor).options(...)`."""

    def __init__(self, cfg: Config, num_classes: int, threads: int) -> None:
        torch.set_num_threads(threads)  # the count cluster.actor_threads chose
        split, _ = build_split(cfg, num_classes)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # As LocalBackend builds it: the body is pretrained, so it steps at pretrained_lr.
        # A split plan's cuts take their bodies from the whole model (model/plans.py),
        # where some clients' tail blocks are others' body: here nothing trains.
        if split.vit is not None:
            split.vit.requires_grad_(False).to(self.device)
        split.body.to(self.device)
        self.server = BodyServer(split.body, trains=METHODS[cfg.train.method].server_trains,
                                 lr=cfg.train.pretrained_lr, precision=cfg.run.precision,
                                 split=split)
        self._busy = 0.0  # wall seconds inside the body, for "where the time goes"
        self._busy_lock = threading.Lock()
        self._crash = False  # an armed injected crash (module doc)
        # Which life of the actor this is: a restart builds a new one, so a caller that
        # sees it change knows the server lost what it held.
        self._incarnation = uuid.uuid4().hex

    def forward(self, key: Hashable, smashed, input_grad: bool,
                split: tuple[int, int] | None = None) -> tuple:
        """(body output, FLOPs of the request, incarnation): the reply clients.ServerProxy
        reads, every tensor as numpy (wire.py); `split`: the client's, under a plan."""
        if self._crash:
            os._exit(1)  # no clean-up, no reply: the process is simply gone
        start = time.perf_counter()
        out = self.server.forward(key, from_wire(smashed).to(self.device), input_grad, split)
        self._add_busy(time.perf_counter() - start)
        return to_wire(out.cpu()), self.server.take_flops(key), self._incarnation

    def backward(self, key: Hashable, grad_out) -> tuple:
        """(gradient of the smashed input or None, FLOPs of the request, incarnation)."""
        start = time.perf_counter()
        grad = self.server.backward(key, from_wire(grad_out).to(self.device))
        self._add_busy(time.perf_counter() - start)
        return (None if grad is None else to_wire(grad.cpu()), self.server.take_flops(key),
                self._incarnation)

    def load_global(self, state) -> str:
        """A split plan's global state (BodyServer.load_global); returns the incarnation
        that holds it."""
        self.server.load_global({k: v.to(self.device) for k, v in state_from_wire(state).items()})
        return self._incarnation

    def incarnation(self) -> str:
        return self._incarnation

    def take_busy_seconds(self) -> float:
        """Wall seconds spent in forward/backward since the last call."""
        with self._busy_lock:
            busy, self._busy = self._busy, 0.0
        return busy

    def state_dict(self) -> tuple[dict, str]:
        """Body weights and optimizer state on the CPU (BodyServer.state_dict), and the
        incarnation they belong to."""
        return self.server.state_dict(), self._incarnation

    def load_state_dict(self, state: dict) -> None:
        self.server.load_state_dict(state)

    def forget(self, keys: list[Hashable]) -> None:
        """Drop what clients that failed mid-round left here (BodyServer.forget)."""
        for key in keys:
            self.server.forget(key)

    def crash_on_next_request(self, armed: bool) -> None:
        self._crash = armed

    def pid(self) -> int:
        return os.getpid()

    def placement(self) -> dict:
        """Node, torch threads and device of a request; also the readiness probe."""
        return {"node": ray.get_runtime_context().get_node_id(),
                "threads": torch.get_num_threads(), "device": str(self.device)}

    def _add_busy(self, seconds: float) -> None:
        with self._busy_lock:
            self._busy += seconds
