"""Client actors: a few processes that run the round of any of many simulated clients.

A simulated client is data that travels with its work (`ClientTask`: shard indices and
seed; its profile) and a result that comes back; an actor is one `ClientWorker`, the
client-side model parts, reloaded with the global state for every client it serves.
So 10,000 registered clients cost 10,000 small index arrays in the coordinator and a
pool of actors sized to the machine, not 10,000 processes.

The training set goes into the object store once (as numpy, which Ray maps without a
copy) and every actor on a node reads the same shared memory. The server is reached
through `ServerProxy`, which gives `split_update` `BodyServer`'s interface over the
server actor's handle, or, with the frozen body in the client actors (`ray.body`), is a
`BodyServer` of the actor's own, as in the local backend. The pool hands the tasks out
in calls of several clients (`next_call`: one trip through Ray then serves them all),
each to the actor with the fewest out as actors finish (`ray.wait`).

Faults. A client actor whose process dies (killed, out of memory, or an injected
`faults.client_crash`, which exits it on receiving the task) is replaced by a fresh
one; the client it was running is failed (the first of its call's: an injected crash
travels alone), and the other clients of its calls run elsewhere. A task that loses the
server (its actor died under the request) is reported as such, and the pool stops
handing out work until the backend has the server back (backend.py retries it). Every
wait has the `ray.timeout_s` limit, per client-round of the call waited for.
"""

from __future__ import annotations

import ctypes
import gc
import os
import time
import warnings
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from sfprompt.actors.wire import from_wire, state_from_wire, state_to_wire, to_wire
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.loop.backend import client_done
from sfprompt.platform.loop.evaluation import Evaluator
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.method.planned import PlannedWorkers
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.build import build_split
from sfprompt.platform.model.precision import autocast
from sfprompt.platform.model.split import SplitModel
from sfprompt.platform.sim.profiles import Profile
from sfprompt.platform.sim.realtime import emulate_network

Seconds = dict[str, float]  # where a client's wall time went: client_round, server_wait


def get_within(refs: ray.ObjectRef | list[ray.ObjectRef], timeout_s: float, what: str):
    """`ray.get` that fails with a one-line error naming the `ray.timeout_s` setting."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        raise SfpromptError(f"ray.timeout_s: {what} took longer than {timeout_s:g} s") from None


def release_body(split: SplitModel) -> None:
    """Drop `split`'s body and hand its memory back to the system: glibc keeps freed
    heap memory for reuse, and a model's weights freed late sit below live data."""
    split.body = None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, not returned
        pass


class ServerLost(Exception):
    """The server actor died under a request: the client's work must be retried."""


class ServerProxy:
    """The server actor as `split_update` sees a `BodyServer`: forward and backward.

    Each reply carries the FLOPs the request cost and the server's incarnation, so a
    client's server FLOPs arrive with its own work (a server lost after the client
    finished takes nothing of it along), and a reply from another incarnation than the
    client's first (the server restarted in between, losing what it held) loses the
    client's work: `ServerLost`."""

    def __init__(self, server: ActorHandle, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.start()

    def start(self) -> None:
        """Begin a client's work: no FLOPs, no incarnation, no wait seen yet."""
        self.flops = 0
        self.incarnation: str | None = None
        self.wait_seconds = 0.0  # time spent waiting on the server

    def forward(self, key: Hashable, smashed: torch.Tensor, input_grad: bool,
                split: tuple[int, int] | None = None) -> torch.Tensor:
        return from_wire(self._call("forward", key, to_wire(smashed), input_grad, split))

    def backward(self, key: Hashable, grad_out: torch.Tensor) -> torch.Tensor | None:
        return from_wire(self._call("backward", key, to_wire(grad_out)))

    def _call(self, method: str, key: Hashable, *args):
        start = time.perf_counter()  # from the request's serialization to the reply's
        try:
            ref = getattr(self.server, method).remote(key, *args)
            out, flops, incarnation = get_within(ref, self.timeout_s,
                                                 f"the server's {method} for client {key}")
        except RayActorError as err:
            raise ServerLost(f"server actor lost during {method}: {type(err).__name__}") from None
        finally:
            self.wait_seconds += time.perf_counter() - start
        if self.incarnation is None:
            self.incarnation = incarnation
        elif incarnation != self.incarnation:  # what the old one held is gone
            raise ServerLost("the server actor restarted during the client's work")
        self.flops += flops
        return out


class ClientActor:
    """One ClientWorker serving any client; create with `ray.remote(ClientActor).options(...)`."""

    def __init__(self, cfg: Config, num_classes: int, norm: dict, images: np.ndarray,
                 labels: np.ndarray, server: ActorHandle | None, threads: int,
                 body_in_clients: bool = False,
                 test: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        torch.set_num_threads(threads)  # the count cluster.actor_threads chose
        self.cfg = cfg
        self.method = METHODS[cfg.train.method]
        split, _ = build_split(cfg, num_classes)
        # ray.body = "clients": this process serves its own clients' body steps, with the
        # frozen body built as the server actor would build it (server.py).
        self.body = (BodyServer(split.body, precision=cfg.run.precision, split=split)
                     if body_in_clients else None)
        if self.body is None and not self.method.client_body and split.vit is None:
            # It lives on the server; dropping it frees its weights here (a split plan
            # keeps them: every cut is made from the whole model, model/plans.py).
            release_body(split)
        with warnings.catch_warnings():
            # Object-store arrays are read-only; batches are copies, nothing writes them.
            warnings.simplefilter("ignore", UserWarning)
            images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
            test_t = None if test is None else [torch.from_numpy(a) for a in test]
        self.workers = PlannedWorkers(ClientWorker(split, images_t, labels_t, **norm))
        # With the test set (backend.py: eval.worker = inline), this actor also evaluates
        # the global model between rounds, on the same model parts as its clients: every
        # client round loads its global state first, so evaluation changes none.
        self.evaluator = None if test_t is None else Evaluator(cfg, split, *test_t, norm)
        # Methods that do not split get no server (and never call one).
        self.server = ServerProxy(server, cfg.ray.timeout_s) if server is not None else None

    def run(self, tasks: Sequence[ClientTask], profiles: Sequence[Profile],
            global_state: State) -> list[tuple[ClientResult, Seconds] | None]:
        """The rounds of one call's clients in turn, as the local backend runs them, each
        with where its time went; None for those a lost server left undone (it stops
        there: the pool retries them when the server is back)."""
        global_state = state_from_wire(global_state)
        out: list[tuple[ClientResult, Seconds] | None] = []
        for task, profile in zip(tasks, profiles):
            try:
                out.append(self._client_round(task, profile, global_state))
            except ServerLost:
                return out + [None] * (len(tasks) - len(out))
        return out

    def _client_round(self, task: ClientTask, profile: Profile,
                      global_state: State) -> tuple[ClientResult, Seconds]:
        if task.crash:
            os._exit(1)  # an injected crash: the process is gone, no reply, no clean-up
        if self.server is not None:
            self.server.start()
        start = time.perf_counter()
        with emulate_network(self.cfg.network, profile, task.seed), \
                autocast(self.cfg.run.precision):
            result = self.workers.client_round(self.method, self.cfg, task, global_state,
                                               self.body or self.server)
        seconds = {"client_round": time.perf_counter() - start,
                   "server_wait": self.server.wait_seconds if self.server else 0.0}
        if self.server is not None:
            result.server_flops = self.server.flops
        elif self.body is not None:
            result.server_flops = self.body.take_flops(task.client)
        result.state = state_to_wire(result.state)
        return result, seconds

    def evaluate(self, global_state: State) -> tuple[float, float]:
        return self.evaluator(state_from_wire(global_state))

    def pid(self) -> int:
        return os.getpid()

    def placement(self) -> dict:
        """Node and torch threads of this actor; also the readiness probe."""
        return {"node": ray.get_runtime_context().get_node_id(),
                "threads": torch.get_num_threads(), "device": "cpu"}


@dataclass
class PoolRun:
    """What became of a round's tasks (ClientPool.run)."""

    done: list[tuple[ClientResult, Seconds]] = field(default_factory=list)
    failed: list[ClientTask] = field(default_factory=list)  # their actor died running them
    server_lost: list[ClientTask] = field(default_factory=list)  # to retry, server back


class ClientPool:
    """`size` client actors of `cpus` CPUs each, spread over the cluster's nodes."""

    def __init__(self, cfg: Config, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 norm: dict, server: ActorHandle | None, size: int, cpus: float,
                 threads: int, body_in_clients: bool = False,
                 test: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.timeout_s = cfg.ray.timeout_s
        self.clients_per_call = cfg.ray.clients_per_call
        images_ref, labels_ref = ray.put(images), ray.put(labels)  # once, shared by all
        self._remote = ray.remote(ClientActor).options(num_cpus=cpus,
                                                       scheduling_strategy="SPREAD")
        self._args = (cfg, num_classes, norm, images_ref, labels_ref, server, threads,
                      body_in_clients, None if test is None else ray.put(tuple(test)))
        self.actors = [self._remote.remote(*self._args) for _ in range(size)]
        self.replaced = 0  # actors replaced after their process died

    def placements(self) -> list[dict]:
        """Each actor's `placement()`; waits for every actor to be up."""
        return get_within([a.placement.remote() for a in self.actors], self.timeout_s,
                          "starting the client actors")

    def run(self, tasks: Sequence[ClientTask], profiles: Sequence[Profile], global_state: State,
            in_flight: int) -> PoolRun:
        """Every task's fate; results in order of completion. Tasks go out in calls of
        several clients (`next_call`), at most `in_flight` calls at once, each to the
        actor with the fewest. Two per actor keep the next call queued at the actor while
        it runs one, so it never idles waiting for the coordinator to hear back and hand
        out more work."""
        state_ref = ray.put(state_to_wire(global_state))  # once per round, for every client
        queue = deque(tasks)
        # call ref -> (index of its actor, its tasks), in submission order: an actor runs
        # its calls in that order, which tells the one it was running when it died.
        pending: dict[ray.ObjectRef, tuple[int, list[ClientTask]]] = {}
        loads = [0] * len(self.actors)  # calls out per actor
        out = PoolRun()
        while queue or pending:
            while queue and len(pending) < in_flight:
                call = next_call(queue, in_flight, self.clients_per_call)
                i = loads.index(min(loads))
                ref = self.actors[i].run.remote(call, [profiles[t.client] for t in call],
                                                state_ref)
                pending[ref] = (i, call)
                loads[i] += 1
            # ray.timeout_s bounds a client's round, so a call of n clients gets n times it.
            limit = self.timeout_s * max(len(c) for _, c in pending.values())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=limit)
            if not ready:
                raise SfpromptError(f"ray.timeout_s: no client round finished within "
                                    f"{self.timeout_s:g} s")
            i, call = pending[ready[0]]
            settled = len(out.done) + len(out.failed)
            try:
                lost = _settle(_get(ready[0], self.timeout_s), call, out)
            except RayActorError:
                queue.extendleft(reversed(self._lost_actor(i, pending, out)))
                loads[i] = 0
                lost = False
            else:
                del pending[ready[0]]
                loads[i] -= 1
            if lost:
                out.server_lost.extend(queue)  # no new work until the server is back
                queue.clear()
            for n in range(settled + 1, len(out.done) + len(out.failed) + 1):
                client_done(n, len(tasks))  # one by one, as the local backend reports
        return out

    def _lost_actor(self, i: int, pending: dict[ray.ObjectRef, tuple[int, list[ClientTask]]],
                    out: PoolRun) -> list[ClientTask]:
        """Actor `i` died: settle its calls, replace it, and return the tasks to run
        elsewhere. Of the call it was running (its first unsettled one) the first client
        fails: its work is lost with the process (an injected crash travels alone, so it
        is that client), and so is any other client's that the call had finished, whose
        reply never came; those and the calls only queued there run again elsewhere."""
        mine = [ref for ref, (j, _) in pending.items() if j == i]  # submission order
        ray.wait(mine, num_returns=len(mine), timeout=self.timeout_s)  # all settle at once
        requeue: list[ClientTask] = []
        running = True  # the first call lost with the actor is the one it was running
        for ref in mine:
            call = pending.pop(ref)[1]
            try:
                _settle(_get(ref, self.timeout_s), call, out)
            except (RayActorError, GetTimeoutError):
                if running:
                    out.failed.append(call[0])
                requeue.extend(call[1:] if running else call)
                running = False
        ray.kill(self.actors[i])  # a no-op if it is gone; ends it if it only hung
        self.actors[i] = self._remote.remote(*self._args)
        self.replaced += 1
        return requeue

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def next_call(queue: deque[ClientTask], in_flight: int, most: int) -> list[ClientTask]:
    """The tasks of the next call to a client actor, taken from the front of `queue`.

    Guided self-scheduling: a call takes its share of what is left, ceil(left /
    in_flight) clients, at most `most` (`ray.clients_per_call`): a long round travels in
    few large calls (a trip through Ray costs the same for one client or eight), and its
    last calls shrink to one client, so the actors finish together. A client that is to
    crash (`faults.client_crash`) travels alone: its actor's death loses only its work."""
    size = max(1, min(most, -(-len(queue) // in_flight)))
    call = [queue.popleft()]
    while not call[0].crash and queue and len(call) < size and not queue[0].crash:
        call.append(queue.popleft())
    return call


def _settle(replies: list[tuple[ClientResult, Seconds] | None], call: list[ClientTask],
            out: PoolRun) -> bool:
    """File a call's replies: done, or (None) left undone by a lost server. True if any
    was lost to the server."""
    for task, reply in zip(call, replies):
        if reply is None:
            out.server_lost.append(task)
        else:
            out.done.append(reply)
    return any(reply is None for reply in replies)


def _get(ref: ray.ObjectRef, timeout_s: float) -> list[tuple[ClientResult, Seconds] | None]:
    """`ray.get` of a settled call; a one-line error raised in the actor (e.g. a server
    request's timeout) comes back as itself, not as a remote traceback."""
    try:
        replies = ray.get(ref, timeout=timeout_s)
    except RayTaskError as err:
        if isinstance(err.cause, SfpromptError):
            raise err.cause from None
        raise
    for reply in replies:
        if reply is not None:
            reply[0].state = state_from_wire(reply[0].state)
    return replies
