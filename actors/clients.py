"""Client actors: a few processes that run the round of any of many simulated clients.

A simulated client is data that travels with its work (`ClientTask`: shard indices and
seed; its profile) and a result that comes back; an actor is one `Device`, the
client-side model parts, reloaded with the global state for every client it serves.
So 10,000 registered clients cost 10,000 small index arrays in the coordinator and a
pool of actors sized to the machine, not 10,000 processes.

The training set goes into the object store once (as numpy, which Ray maps without a
copy) and every actor on a node reads the same shared memory. The server is reached
through `ServerProxy`, which gives `split_update` `BodyServer`'s interface over the
server actor's handle. The pool hands each task to the next free actor as actors
finish (`ray.wait`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import ray
import torch
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError

from sfprompt.platform.client import ClientResult, ClientTask, Device, State
from sfprompt.platform.config import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.methods import METHODS
from sfprompt.platform.network import emulate_network
from sfprompt.platform.profiles import Profile
from sfprompt.platform.rounds import build_split

Seconds = dict[str, float]  # where a client's wall time went: client_round, server_wait


def get_within(refs: ray.ObjectRef | list[ray.ObjectRef], timeout_s: float, what: str):
    """`ray.get` that fails with a one-line error naming the `ray.timeout_s` setting."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        raise SfpromptError(f"ray.timeout_s: {what} took longer than {timeout_s:g} s") from None


class ServerProxy:
    """The server actor as `split_update` sees a `BodyServer`: forward and backward."""

    def __init__(self, server: ActorHandle, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.wait_seconds = 0.0  # time spent waiting on the server since the last reset

    def forward(self, key: Hashable, smashed: torch.Tensor, input_grad: bool) -> torch.Tensor:
        return self._call("forward", key, smashed, input_grad)

    def backward(self, key: Hashable, grad_out: torch.Tensor) -> torch.Tensor | None:
        return self._call("backward", key, grad_out)

    def _call(self, method: str, key: Hashable, *args):
        start = time.perf_counter()  # from the request's serialization to the reply's
        try:
            ref = getattr(self.server, method).remote(key, *args)
            return get_within(ref, self.timeout_s, f"the server's {method} for client {key}")
        finally:
            self.wait_seconds += time.perf_counter() - start


class ClientActor:
    """One Device serving any client; create with `ray.remote(ClientActor).options(...)`."""

    def __init__(self, cfg: Config, num_classes: int, norm: dict, images: np.ndarray,
                 labels: np.ndarray, server: ActorHandle | None, threads: int) -> None:
        torch.set_num_threads(threads)  # the coordinator's count: same floats as local
        self.cfg = cfg
        self.method = METHODS[cfg.train.method]
        split, _ = build_split(cfg, num_classes)
        if not self.method.client_body:
            split.body = None  # it lives on the server; dropping it frees its weights here
        with warnings.catch_warnings():
            # Object-store arrays are read-only; batches are copies, nothing writes them.
            warnings.simplefilter("ignore", UserWarning)
            images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
        self.device = Device(split, images_t, labels_t, **norm)
        # Methods that do not split get no server (and never call one).
        self.server = ServerProxy(server, cfg.ray.timeout_s) if server is not None else None

    def run(self, task: ClientTask, profile: Profile,
            global_state: State) -> tuple[ClientResult, Seconds]:
        """One client's round, as the local backend runs it, and where its time went."""
        if self.server is not None:
            self.server.wait_seconds = 0.0
        start = time.perf_counter()
        with emulate_network(self.cfg.network, profile, task.seed):
            result = self.method.client_round(self.cfg, self.device, task, global_state,
                                              self.server)
        return result, {"client_round": time.perf_counter() - start,
                        "server_wait": self.server.wait_seconds if self.server else 0.0}

    def placement(self) -> dict:
        """Node and torch threads of this actor; also the readiness probe."""
        return {"node": ray.get_runtime_context().get_node_id(),
                "threads": torch.get_num_threads(), "device": "cpu"}


class ClientPool:
    """`size` client actors of `cpus` CPUs each, spread over the cluster's nodes."""

    def __init__(self, cfg: Config, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 norm: dict, server: ActorHandle | None, size: int, cpus: float,
                 threads: int) -> None:
        self.timeout_s = cfg.ray.timeout_s
        images_ref, labels_ref = ray.put(images), ray.put(labels)  # once, shared by all
        remote = ray.remote(ClientActor).options(num_cpus=cpus, scheduling_strategy="SPREAD")
        self.actors = [remote.remote(cfg, num_classes, norm, images_ref, labels_ref, server,
                                     threads) for _ in range(size)]

    def placements(self) -> list[dict]:
        """Each actor's `placement()`; waits for every actor to be up."""
        return get_within([a.placement.remote() for a in self.actors], self.timeout_s,
                          "starting the client actors")

    def run(self, tasks: Sequence[ClientTask], profiles: Sequence[Profile], global_state: State,
            in_flight: int) -> list[tuple[ClientResult, Seconds]]:
        """Every task's result, in order of completion; at most `in_flight` tasks are
        out at once, each to the actor with the fewest. Two per actor keep the next
        client queued at the actor while it runs one, so it never idles waiting for the
        coordinator to hear back and hand out more work."""
        state_ref = ray.put(global_state)  # once per round, whatever the number of clients
        pending: dict[ray.ObjectRef, int] = {}  # task -> index of its actor
        loads = [0] * len(self.actors)  # tasks out per actor
        done: list[tuple[ClientResult, Seconds]] = []
        for task in tasks:
            if len(pending) >= in_flight:
                done.append(self._next(pending, loads))
            i = loads.index(min(loads))
            pending[self.actors[i].run.remote(task, profiles[task.client], state_ref)] = i
            loads[i] += 1
        while pending:
            done.append(self._next(pending, loads))
        return done

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def _next(self, pending: dict[ray.ObjectRef, int],
              loads: list[int]) -> tuple[ClientResult, Seconds]:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.timeout_s)
        if not ready:
            raise SfpromptError(f"ray.timeout_s: no client round finished within "
                                f"{self.timeout_s:g} s")
        loads[pending.pop(ready[0])] -= 1
        return ray.get(ready[0])
