"""The Ray backend: the coordinator's round loop over a server actor and client actors.

    coordinator (this process)  run_rounds: sampling, profiles, clock, aggregation
    ServerActor x 0..1          the body (on a GPU when there is one); every split request
                                (none for methods that keep the whole model on the client,
                                nor when each client actor holds the frozen body: ray.body)
    ClientActor x N             any simulated client's round; N from the cluster's CPUs;
                                the first also evaluates, when it holds the whole model
    EvaluationActor x 0..1      round r's global model while round r+1 trains (eval.worker)

Evaluation runs the reference's own `Evaluator`, where `eval.worker` says: off the
round's critical path (run_rounds trains the next round meanwhile and yields a round
when its evaluation is back) on a thread of the coordinator ("thread": the coordinator
only waits on actors while a round trains, and it already holds the model) or on the
evaluation actor ("actor": a process of its own, which Ray restarts when it dies), or
between rounds ("inline"): on the first client actor when it holds the whole model
(the body in the client actors, or a method without a server) with the coordinator's
thread count, else in the coordinator. The first way, the coordinator drops its body,
which nothing then runs there (a model's worth of memory). When the method trains the
body, the server's body is copied back after every round's clients and goes with the
request.

Determinism: every process builds the model from the same seed, every client's work
depends only on its task (seeded) and the global state, and every process runs torch
with the coordinator's thread count (float results change with it), so the results
equal the local backend's bit for bit. A method whose body trains is order-dependent,
so its clients then run one at a time, in client order, as in the reference.

Faults. A client actor that dies takes only the client it was running with it (that
client is "failed"; clients.py replaces the actor). The server actor restarts (Ray's
`max_restarts`, up to SERVER_RESTARTS times) and the client work it took with it runs
again: only the clients that lost it when the server is stateless (sfprompt); every
client of the round, from the body and optimizer the round started with (the
coordinator's copy, fetched after every round for evaluation and checkpoints), when
the body trains (sfl), since the lost steps cannot be replayed in part. Every wait has
the `ray.timeout_s` limit, and a run that cannot go on (Ray unreachable, the server
beyond its restarts, every client actor dying) stops with a one-line error.

`make_backend(world)` is the factory `run_experiment` takes: it lives here, not in
`platform`, so that `platform` never imports Ray.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError

from sfprompt.actors.clients import ClientPool, PoolRun, get_within, release_body
from sfprompt.actors.cluster import body_placement, client_pool, connect, server_options
from sfprompt.actors.evaluator import EvaluationActor
from sfprompt.actors.server import ServerActor
from sfprompt.actors.wire import state_to_wire
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.loop.backend import Backend, LocalBackend
from sfprompt.platform.loop.evaluation import Evaluator, PendingEvaluation
from sfprompt.platform.loop.world import World
from sfprompt.platform.method.client import ClientResult, ClientTask, State
from sfprompt.platform.method.registry import METHODS

log = logging.getLogger(__name__)

# Client rounds out per client actor: one running, one queued behind it (ClientPool.run).
QUEUE_DEPTH = 2
# Restarts of the server actor per run (and server losses retried per round) before
# the run gives up: a server that keeps dying is a problem to report, not to hide.
SERVER_RESTARTS = 3


class RayBackend:
    """The `Backend` protocol over Ray actors; `close()` releases them."""

    def __init__(self, world: World) -> None:
        cfg = world.cfg
        self.cfg, self.world = cfg, world
        self.method = METHODS[cfg.train.method]
        self._evaluate = self._evaluations = None
        self._evaluates_on_pool = False  # eval.worker = inline on the first client actor
        self.seconds: Counter[str] = Counter()  # wall time by where it went, summed over rounds
        self.server = self.pool = self.evaluator = None
        self._owns_ray = connect(cfg.ray)
        self.server_placement = self.evaluator_placement = None
        # When the body trains: the server's state at the start of the round (None: as
        # built), what a restarted server is given back (module doc), and the server
        # incarnation known to hold it.
        self._server_copy: dict | None = None
        self._server_id: str | None = None
        self._crash_armed = False
        try:
            # Methods that do not split (fl, ...) never call a server, and with the body in
            # the client actors (ray.body) nothing does: then no server actor is started.
            body = None if self.method.client_body else body_placement(cfg, self.method)
            options = server_options(cfg.ray) if body == "server" else {"num_cpus": 0}
            # The same pool wherever the body is (client_pool), so ray.body changes no number.
            size, cpus, threads = client_pool(cfg, self.method,
                                              ray.available_resources().get("CPU", 0.0),
                                              torch.get_num_threads())
            # eval.worker = inline: on a client actor when it holds the whole model and
            # computes with this process's threads (the same floats); it waits between
            # rounds anyway, and the coordinator then needs no model of its own.
            on_pool = self._evaluates_on_pool = (
                cfg.eval.worker == "inline" and threads == torch.get_num_threads()
                and (body == "clients" or self.method.client_body))
            if not on_pool and cfg.eval.worker != "actor":
                # The coordinator's model, untouched by the round (the actors train), one
                # evaluation at a time.
                self._evaluate = Evaluator(cfg, world.split, world.data.test_images,
                                           world.data.test_labels, world.norm)
            if cfg.eval.worker == "thread":
                self._evaluations = ThreadPoolExecutor(1, thread_name_prefix="sfprompt-eval")
            if body == "server":
                self.server = (ray.remote(ServerActor)
                               .options(max_concurrency=size + 2, max_restarts=SERVER_RESTARTS,
                                        **options)
                               .remote(cfg, world.data.num_classes, threads))
            elif body == "clients":
                self.server_placement = {"body": "clients", "device": "cpu"}
            self.pool = ClientPool(cfg, world.data.train_images.numpy(),
                                   world.data.train_labels.numpy(), world.data.num_classes,
                                   world.norm, self.server, size, cpus, threads,
                                   body_in_clients=body == "clients",
                                   test=(world.data.test_images.numpy(),
                                         world.data.test_labels.numpy()) if on_pool else None)
            if on_pool and not self.method.client_body:
                release_body(world.split)  # nothing runs it here now
            if self.server is not None:
                self.server_placement = get_within(self.server.placement.remote(),
                                                   cfg.ray.timeout_s, "starting the server actor")
            if cfg.eval.worker == "actor":
                # No CPU of its own: it computes in the gaps the clients leave (evaluator.py).
                self.evaluator = (ray.remote(EvaluationActor)
                                  .options(num_cpus=0, max_restarts=SERVER_RESTARTS,
                                           max_task_retries=SERVER_RESTARTS)
                                  .remote(cfg, world.data.num_classes, world.norm,
                                          world.data.test_images.numpy(),
                                          world.data.test_labels.numpy(), threads))
            self.client_placements = self.pool.placements()
            self.evaluator_placement = None if self.evaluator is None else get_within(
                self.evaluator.placement.remote(), cfg.ray.timeout_s,
                "starting the evaluation actor")
            if self.method.server_trains:
                self._sync_server()
        except BaseException:
            self.close()
            raise
        log.info("ray backend: body %s (%s) at %s; %d client actors of %.2f CPU at %s",
                 body or "none", options, self.server_placement, size, cpus,
                 self.client_placements)

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]:
        trains = self.method.server_trains
        in_flight = 1 if trains else QUEUE_DEPTH * len(self.pool.actors)
        # Order-dependent methods (body trains) run in client order, as in the reference.
        todo = sorted(tasks, key=lambda t: t.client) if trains else list(tasks)
        results: dict[int, ClientResult] = {}
        failed: list[int] = []
        # Under a split plan the server's bodies need the round's global state (plans.py).
        planned = self.server is not None and self.cfg.split.plan != "fixed"
        for _ in range(SERVER_RESTARTS + 1):
            if trains:
                self._sync_server()
            loaded = (self._ask_server("loading the global state", "load_global",
                                       state_to_wire(global_state)) if planned else None)
            run = self.pool.run(todo, self.world.profiles, global_state, in_flight)
            self._settle(run, results, failed)
            # A trained body also loses its steps to a restart no request noticed, and a
            # restarted server has lost the plan's global state.
            over = ((trains and self._server_id != self._incarnation())
                    or (planned and loaded != self._incarnation()))
            if not run.server_lost and not over:
                break
            log.warning("round %d: the server actor was lost; after its restart, %s",
                        todo[0].round, "the round starts over" if trains or over else
                        f"{len(run.server_lost)} client(s) run again")
            self._crash_armed = False  # a restarted server is built unarmed
            if trains or over:  # the body lost this round's steps: start the round over
                self._server_id = None  # restore it, whatever happened
                results.clear()
                todo = [t for t in todo if t.client not in failed]
            else:
                self._incarnation()  # waits for the restart
                todo = run.server_lost
        else:
            raise SfpromptError(f"the server actor was lost {SERVER_RESTARTS + 1} times in "
                                f"round {tasks[0].round}; giving up")
        if self._crash_armed:  # the injected crash found no request this round
            self._ask_server("disarming the server crash", "crash_on_next_request", False)
            self._crash_armed = False
        if failed and not results and len(failed) > sum(t.crash for t in tasks):
            raise SfpromptError(f"round {tasks[0].round}: every client actor died "
                                f"({len(failed)} clients); the run cannot make progress")
        if self.server is not None:
            self.seconds["server_busy"] += self._ask_server("the server's timing",
                                                            "take_busy_seconds")
        if trains:
            self._fetch_server()
        return list(results.values())

    def _fetch_server(self) -> None:
        """After a round's clients, when the body trains: the coordinator's copy of the
        server's state (for checkpoints, a restarted server and evaluation), whether or
        not the round is evaluated."""
        state, now = self._ask_server("fetching the server's body", "state_dict")
        if now != self._server_id:  # the round's steps are gone; the checkpoint is not
            raise SfpromptError("the server actor was lost after the round's work; "
                                "continue with `sfprompt resume RUN_DIR`")
        self._server_copy = state

    def _settle(self, run: PoolRun, results: dict[int, ClientResult], failed: list[int]) -> None:
        """Take in one pass of the pool: results, and failed clients made forgotten."""
        for result, seconds in run.done:
            results[result.client] = result
            self.seconds.update(seconds)
        lost = [t.client for t in run.failed]
        if lost:
            failed.extend(lost)
            log.warning("round %d: client actor(s) died running client(s) %s; replaced",
                        run.failed[0].round, lost)
            if self.server is not None:  # their half-done requests must not count later
                self._ask_server("clearing failed clients on the server", "forget", lost)

    def _ask_server(self, what: str, method: str, *args):
        """A control call to the server (all may run twice), waiting through a restart."""
        deadline = time.monotonic() + self.cfg.ray.timeout_s
        while True:
            try:
                return get_within(getattr(self.server, method).remote(*args),
                                  max(deadline - time.monotonic(), 0.001), what)
            except ActorUnavailableError:  # it just died or restarted: ask the new one
                if time.monotonic() > deadline:
                    raise SfpromptError(f"ray.timeout_s: {what} took longer than "
                                        f"{self.cfg.ray.timeout_s:g} s") from None
                time.sleep(0.2)
            except RayActorError:
                raise SfpromptError(f"the server actor died and was not restarted (it "
                                    f"restarts at most {SERVER_RESTARTS} times)") from None

    def _incarnation(self) -> str:
        """The server's current incarnation; waits while Ray restarts it."""
        return self._ask_server("reaching the server actor", "incarnation")

    def _sync_server(self) -> None:
        """Make sure the server holds the round's starting state: a server restarted
        since (between rounds too) gets the coordinator's copy."""
        now = self._incarnation()
        if now == self._server_id:
            return
        if self._server_id is not None or self._server_copy is not None:
            log.warning("server actor restarted: restoring its body from the coordinator")
        if self._server_copy is not None:
            self._ask_server("restoring the server's body", "load_state_dict", self._server_copy)
        self._server_id = now

    @property
    def overlaps_evaluation(self) -> bool:
        return self.cfg.eval.worker != "inline"

    def evaluate(self, global_state: State) -> PendingEvaluation:
        """Started where `eval.worker` says, with the body fetched by run_clients when it
        trains (none yet: the body as built, as on the server)."""
        trained = self.method.server_trains and self._server_copy is not None
        body = self._server_copy["body"] if trained else None
        if self.evaluator is not None:
            ref = self.evaluator.evaluate.remote(state_to_wire(global_state),
                                                 None if body is None else state_to_wire(body))
            return lambda: self._evaluation(ref)
        if self._evaluates_on_pool:  # on the first client actor, in turn with its clients
            result = self._evaluation(self.pool.actors[0].evaluate.remote(
                state_to_wire(global_state)))
            return lambda: result
        if self._evaluations is not None:
            return self._evaluations.submit(self._evaluate, global_state, body).result
        result = self._evaluate(global_state, body)
        return lambda: result

    def _evaluation(self, ref: ray.ObjectRef) -> tuple[float, float]:
        try:
            return get_within(ref, self.cfg.ray.timeout_s, "evaluating the global model")
        except RayActorError:
            if self.evaluator is None:
                raise SfpromptError("the client actor evaluating the global model died") from None
            raise SfpromptError(f"the evaluation actor died and was not restarted (it "
                                f"restarts at most {SERVER_RESTARTS} times)") from None

    def server_state(self) -> dict:
        """The server's state after the last round (fetched by `run_clients`)."""
        return self._server_copy

    def restore_server(self, state: dict) -> None:
        self._server_copy, self._server_id = state, None
        self._sync_server()

    def crash_server(self) -> None:
        """Arm an injected crash: the server's process exits on its next request."""
        if self.server is None:  # a method without a server: nothing to crash
            return
        self._ask_server("arming the server crash", "crash_on_next_request", True)
        self._crash_armed = True

    def describe(self) -> dict:
        """For run.json: the Ray instance and namespace this run's actors live in, and where
        the server (node, device: "cuda" when it got a GPU), client and evaluation
        actors run."""
        context = ray.get_runtime_context()
        session_dir = os.path.join(context.get_temp_dir(), context.get_session_name())
        return {"ray": {"namespace": context.namespace, "session_dir": session_dir,
                        "gcs_address": context.gcs_address, "owns_instance": self._owns_ray,
                        "server": self.server_placement, "clients": self.client_placements,
                        "evaluator": self.evaluator_placement}}

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this backend started it. Idempotent."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None
        if self._evaluations is not None:  # an evaluation left running is not waited for
            self._evaluations.shutdown(wait=False, cancel_futures=True)
        for actor in (self.server, self.evaluator):
            if actor is not None:
                ray.kill(actor)
        self.server = self.evaluator = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def make_backend(world: World) -> Backend:
    """The backend `run.backend` names, for `run_experiment(..., make_backend=...)`."""
    if world.cfg.run.backend == "ray":
        return RayBackend(world)
    return LocalBackend(world)
