"""A client's round at the split its plan gives it (model/plans.py), on any backend.

Every worker holds the reference split (`ClientWorker.split`); a client whose task
names another split runs on that cut of the same model, with a `ClientWorker` of its
own (made once per cut: its FLOP cache is the cut's). Before the client's work the
whole global state is loaded into the shared model, so the blocks the cut leaves to
the server's body hold their aggregated values, and what trains is set for the cut.
The client downloads and uploads only what its cut trains, under its own names; the
result goes back under the reference's.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.registry import Method
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.plans import Split, holds, to_client_name, to_reference_name


class PlannedServer:
    """A server (BodyServer or a proxy to one) as one client's cut sees it: every
    forward runs the body between that cut's head and tail."""

    def __init__(self, server, split: Split) -> None:
        self.server, self.split = server, split

    def forward(self, key: Hashable, smashed: torch.Tensor, input_grad: bool) -> torch.Tensor:
        return self.server.forward(key, smashed, input_grad, split=self.split)

    def backward(self, key: Hashable, grad_out: torch.Tensor) -> torch.Tensor | None:
        return self.server.backward(key, grad_out)


class PlannedWorkers:
    """The reference worker and one worker per cut a task has named."""

    def __init__(self, worker: ClientWorker) -> None:
        self.worker = worker
        self._cuts: dict[Split, ClientWorker] = {}

    def client_round(self, method: Method, cfg: Config, task: ClientTask,
                     global_state: State, server) -> ClientResult:
        """`method.client_round` for `task` at its split (the reference's when none)."""
        if task.split is None:
            return method.client_round(cfg, self.worker, task, global_state, server)
        reference = self.worker.split
        tail, reference_tail = task.split[1], len(reference.tail.blocks)
        worker = self._cuts.get(task.split)
        if worker is None:
            worker = self._cuts[task.split] = ClientWorker(
                reference.cut(*task.split), self.worker.images, self.worker.labels,
                **self.worker.norm)
        self.worker.load(global_state)  # the body's share of it too (module doc)
        set_trainable(worker.split, method)
        try:
            own = {to_client_name(n, tail, reference_tail): v for n, v in global_state.items()
                   if holds(n, tail, reference_tail)}
            result = method.client_round(cfg, worker, task, own,
                                         PlannedServer(server, task.split))
        finally:
            set_trainable(reference, method)  # the reference's trainable set, as built
        result.state = {to_reference_name(n, tail, reference_tail): v
                        for n, v in result.state.items()}
        return result
