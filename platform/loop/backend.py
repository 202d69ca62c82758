"""Backends: who executes client work, the server and evaluation.

The coordinator owns the global trainable state, client sampling, profiles, the
virtual clock and seeds; a backend only executes client work and evaluation.
`LocalBackend` does that in this process, in order, and is the reference any other
backend (`sfprompt.actors.backend.RayBackend`) must reproduce number for number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol

from sfprompt.platform.loop.evaluation import Evaluator, PendingEvaluation
from sfprompt.platform.loop.world import World
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.planned import PlannedWorkers
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.precision import autocast
from sfprompt.platform.sim.realtime import emulate_network


class Backend(Protocol):
    """Runs client work and evaluation. `run_clients` returns a result for every task
    but those whose work was lost (failed clients). The server methods are called only
    when the method trains the body (`server_state`, `restore_server`: for checkpoints)
    or when `faults.server_crash_round` injects a crash (`crash_server`). `describe`
    says for run.json where the work runs; `close` releases what the backend holds.

    `evaluate` may return before the evaluation is done; a backend that says
    `overlaps_evaluation` lets the loop train the next round while it runs."""

    overlaps_evaluation: bool

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]: ...
    def evaluate(self, global_state: State) -> PendingEvaluation: ...
    def server_state(self) -> dict: ...
    def restore_server(self, state: dict) -> None: ...
    def crash_server(self) -> None: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


# Called with (clients settled, clients handed out) each time a client's work in a round
# ends, done or failed, inside `on_client_done`: progress within a long round.
_client_hook: ContextVar[Callable[[int, int], None] | None] = ContextVar("client_hook",
                                                                         default=None)


@contextlib.contextmanager
def on_client_done(hook: Callable[[int, int], None]) -> Iterator[None]:
    """Call `hook(settled, total)` as every backend in this context settles a client."""
    token = _client_hook.set(hook)
    try:
        yield
    finally:
        _client_hook.reset(token)


def client_done(settled: int, total: int) -> None:
    """What a backend calls as each client of its `run_clients` call settles."""
    hook = _client_hook.get()
    if hook is not None:
        hook(settled, total)


class LocalBackend:
    """Runs every client's work, the server and evaluation in this process, in order."""

    overlaps_evaluation = False

    def __init__(self, world: World) -> None:
        cfg = world.cfg
        self.cfg = cfg
        self.method = METHODS[cfg.train.method]
        self.workers = PlannedWorkers(ClientWorker(world.split, world.data.train_images,
                                                   world.data.train_labels, **world.norm))
        self.server = BodyServer(world.split.body, trains=self.method.server_trains,
                                 lr=cfg.train.pretrained_lr, precision=cfg.run.precision,
                                 split=world.split)
        self.evaluator = Evaluator(cfg, world.split, world.data.test_images,
                                   world.data.test_labels, world.norm)
        self.profiles = world.profiles

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]:
        results = []
        for i, task in enumerate(tasks):
            if not task.crash:  # a crash: the process running this client dies, work lost
                with emulate_network(self.cfg.network, self.profiles[task.client],
                                     task.seed), autocast(self.cfg.run.precision):
                    result = self.workers.client_round(self.method, self.cfg, task,
                                                       global_state, self.server)
                result.server_flops = self.server.take_flops(task.client)
                results.append(result)
            client_done(i + 1, len(tasks))
        return results

    def evaluate(self, global_state: State) -> PendingEvaluation:
        """Evaluates now (the body, when it trains, is the server's own module)."""
        result = self.evaluator(global_state)
        return lambda: result

    def server_state(self) -> dict:
        return self.server.state_dict()

    def restore_server(self, state: dict) -> None:
        self.server.load_state_dict(state)

    def crash_server(self) -> None:
        """Here the server lives in the coordinator's process: the crash takes nothing
        with it, so there is nothing to recover (the ray backend really kills it)."""

    def describe(self) -> dict:
        return {}  # this process: nothing to add to run.json

    def close(self) -> None:
        """Nothing to release: the model and data belong to the world."""
