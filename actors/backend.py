"""The Ray backend: the coordinator's round loop over a server actor and client actors.

    coordinator (this process)  run_rounds: sampling, profiles, clock, aggregation, evaluation
    ServerActor x 1             the body (on a GPU when there is one); every split request
                                (none for methods that keep the whole model on the client)
    ClientActor x N             any simulated client's round; N from the cluster's CPUs

Evaluation runs in the coordinator, as the reference's own `evaluate`: between rounds
nothing else runs, the coordinator already holds the split model (`build_world`), and
the numbers are then the reference's by construction. When the method trains the body,
the server's body is copied back first.

Determinism: every process builds the model from the same seed, every client's work
depends only on its task (seeded) and the global state, and every process runs torch
with the coordinator's thread count (float results change with it), so the results
equal the local backend's bit for bit. A method whose body trains is order-dependent,
so its clients then run one at a time, in client order, as in the reference.

`make_backend(world)` is the factory `run_experiment` takes: it lives here, not in
`platform`, so that `platform` never imports Ray.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter

import ray
import torch

from sfprompt.actors.clients import ClientPool, get_within
from sfprompt.actors.server import ServerActor
from sfprompt.platform.client import ClientResult, ClientTask, State
from sfprompt.platform.config import RayConfig
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.methods import METHODS
from sfprompt.platform.rounds import Backend, LocalBackend, World

log = logging.getLogger(__name__)

# Client rounds out per client actor: one running, one queued behind it (ClientPool.run).
QUEUE_DEPTH = 2


def connect(cfg: RayConfig) -> bool:
    """Start or join Ray as `ray.address` says; True when this call started it (and the
    backend should shut it down). An existing connection (a notebook, tests) is used as is."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token files for a local run
    common = dict(namespace=f"sfprompt-{uuid.uuid4().hex[:12]}", logging_level=logging.WARNING)
    if cfg.address:
        ray.init(address=cfg.address, **common)
    else:  # "local" starts a new instance even when another runs on this machine
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **common)
    return True


def server_options(cfg: RayConfig) -> dict:
    """Resources of the server actor: the configured custom resource, else a GPU when the
    cluster has one, else a CPU. It always takes one CPU for its own thread."""
    total = ray.cluster_resources()
    if cfg.server_resource:
        if total.get(cfg.server_resource, 0) < 1:
            have = ", ".join(sorted(k for k in total if not k.startswith("node:"))) or "none"
            raise ConfigError(f"ray.server_resource: no node has resource "
                              f"{cfg.server_resource!r} (the cluster has: {have})")
        return {"num_cpus": 1, "resources": {cfg.server_resource: 1}}
    if total.get("GPU", 0) >= 1:
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": 1}


def pool_shape(cfg: RayConfig, server_cpus: float) -> tuple[int, float]:
    """(client actors, CPUs each): one actor per CPU the server leaves free (at least 1),
    or `ray.num_client_actors` sharing those CPUs when it asks for more than there are."""
    free = ray.available_resources().get("CPU", 0.0) - server_cpus
    size = cfg.num_client_actors or max(1, int(free))
    return size, (min(1.0, free / size) if free > 0 else 1.0)


class RayBackend:
    """The `Backend` protocol over Ray actors; `close()` releases them."""

    def __init__(self, world: World) -> None:
        cfg = world.cfg
        self.cfg, self.world = cfg, world
        self.method = METHODS[cfg.train.method]
        self._reference = LocalBackend(world)  # evaluation, in this process (module doc)
        self.seconds: Counter[str] = Counter()  # wall time by where it went, summed over rounds
        self.server = self.pool = None
        self._owns_ray = connect(cfg.ray)
        self.server_placement = None
        try:
            threads = torch.get_num_threads()
            # Methods that do not split (fl, ...) never call a server: none is started.
            options = {"num_cpus": 0} if self.method.client_body else server_options(cfg.ray)
            size, cpus = pool_shape(cfg.ray, options["num_cpus"])
            if not self.method.client_body:
                self.server = (ray.remote(ServerActor)
                               .options(max_concurrency=size + 2, **options)
                               .remote(cfg, world.data.num_classes, threads))
            self.pool = ClientPool(cfg, world.data.train_images.numpy(),
                                   world.data.train_labels.numpy(), world.data.num_classes,
                                   world.norm, self.server, size, cpus, threads)
            if self.server is not None:
                self.server_placement = get_within(self.server.placement.remote(),
                                                   cfg.ray.timeout_s, "starting the server actor")
            self.client_placements = self.pool.placements()
        except BaseException:
            self.close()
            raise
        log.info("ray backend: server actor %s at %s; %d client actors of %.2f CPU at %s",
                 options, self.server_placement, size, cpus, self.client_placements)

    def run_clients(self, tasks: list[ClientTask], global_state: State) -> list[ClientResult]:
        in_flight = 1 if self.method.server_trains else QUEUE_DEPTH * len(self.pool.actors)
        # Order-dependent methods (body trains) run in client order, as in the reference.
        ordered = sorted(tasks, key=lambda t: t.client) if in_flight == 1 else tasks
        done = self.pool.run(ordered, self.world.profiles, global_state, in_flight)
        results = [result for result, _ in done]
        for _, seconds in done:
            self.seconds.update(seconds)
        if self.server is None:
            return results
        flops = get_within(self.server.take_flops.remote([r.client for r in results]),
                           self.cfg.ray.timeout_s, "fetching the server's FLOP counts")
        for result, server_flops in zip(results, flops):
            result.server_flops = server_flops
        self.seconds["server_busy"] += get_within(self.server.take_busy_seconds.remote(),
                                                  self.cfg.ray.timeout_s, "the server's timing")
        return results

    def evaluate(self, global_state: State) -> tuple[float, float]:
        if self.method.server_trains:
            body = get_within(self.server.body_state.remote(), self.cfg.ray.timeout_s,
                              "fetching the server's body")
            self.world.split.body.load_state_dict(body)
        return self._reference.evaluate(global_state)

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this backend started it. Idempotent."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None
        if self.server is not None:
            ray.kill(self.server)
            self.server = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def make_backend(world: World) -> Backend:
    """The backend `run.backend` names, for `run_experiment(..., make_backend=...)`."""
    if world.cfg.run.backend == "ray":
        return RayBackend(world)
    return LocalBackend(world)
