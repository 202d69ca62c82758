"""Ray itself for a run: joining or starting an instance, and sizing the actors on it.

`connect` starts a local instance or joins `ray.address` (failing fast, in one line,
on an address nobody answers at); `body_placement` and `server_options` decide where the
body is computed and what the server actor asks for, and `client_pool` (pure: from the
config and the CPUs and threads there are; `pool_shape`, `actor_threads`) how many
client actors there are, of how many CPUs, and how many torch threads every actor runs.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import NamedTuple

import ray

from sfprompt.platform.config.schema import Config, RayConfig
from sfprompt.platform.config.validate import server_actor_reasons
from sfprompt.platform.errors import ConfigError, first_line
from sfprompt.platform.method.registry import Method

# Seconds to wait for a TCP connection to `ray.address` before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0


def connect(cfg: RayConfig) -> bool:
    """Start or join Ray as `ray.address` says; True when this call started it (and the
    backend should shut it down). An existing connection (a notebook, tests) is used as is."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token files for a local run
    common = dict(namespace=f"sfprompt-{uuid.uuid4().hex[:12]}", logging_level=logging.WARNING)
    if not cfg.address:  # "local" starts a new instance even when another runs here
        # No idle workers started ahead: each actor starts its own, and a spare one would
        # only hold memory (Ray prestarts one per CPU).
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 _system_config={"enable_worker_prestart": False,
                                 "prestart_worker_first_driver": False}, **common)
        return True
    check_reachable(cfg.address)
    try:
        ray.init(address=cfg.address, **common)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"ray.address: cannot join {cfg.address!r}: {first_line(err)}") from None
    return True


def check_reachable(address: str) -> None:
    """Fail fast on a "host:port" nobody answers at: `ray.init` would retry for minutes.
    ("auto" and "ray://" addresses are left to Ray, which fails quickly on them.)"""
    host, sep, port = address.rpartition(":")
    if address == "auto" or address.startswith("ray://") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(f"ray.address: cannot reach {address} "
                          f"({err.strerror or type(err).__name__})") from None


def body_placement(cfg: Config, method: Method) -> str:
    """`ray.body` resolved: "server" or "clients". Auto keeps the server actor where it is
    needed (validate.server_actor_reasons: a body that trains, a server resource or crash
    asked for) or pays (a GPU to run the body on); else every client actor computes its
    own clients' body steps with a copy of the frozen body, since a shared server process
    on the same CPUs only adds messages, copies and clients waiting on it."""
    if cfg.ray.body != "auto":
        return cfg.ray.body
    needs_server = (bool(server_actor_reasons(cfg, method))
                    or ray.cluster_resources().get("GPU", 0) >= 1)
    return "server" if needs_server else "clients"


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


class PoolShape(NamedTuple):
    """What `client_pool` decides."""

    actors: int  # client actors
    cpus: float  # CPUs each asks for
    threads: int  # torch threads of every actor (server and evaluation actors too)


def client_pool(cfg: Config, method: Method, cpus: float, threads: int) -> PoolShape:
    """The client actors of a run on a cluster with `cpus` CPUs available, from a
    coordinator with `threads` torch threads. A split method's pool is sized as if the
    server actor held its CPU wherever the body is (`ray.body`, which this does not
    read): each actor then runs as many threads either way, and so (thread counts decide
    float results) ray.body changes no number."""
    size, each = pool_shape(cfg.ray, cpus, 0 if method.client_body else 1)
    return PoolShape(size, each, actor_threads(cfg.run.threads, size, threads))


def pool_shape(cfg: RayConfig, cpus: float, server_cpus: float) -> tuple[int, float]:
    """(client actors, CPUs each) on `cpus` available CPUs: one actor per CPU the server
    leaves free (at least 1), or `ray.num_client_actors` sharing those CPUs when it asks
    for more than there are."""
    free = cpus - server_cpus
    size = cfg.num_client_actors or max(1, int(free))
    return size, (min(1.0, free / size) if free > 0 else 1.0)


def actor_threads(run_threads: int, pool_size: int, available: int) -> int:
    """torch threads of every actor: `run.threads` when set (then every float equals the
    local backend's); else this process's `available` threads shared among the client
    actors, at least 1 each. They compute at the same time, and one torch pool per actor
    as wide as the node oversubscribes it (the README's GPU section has the figures)."""
    return run_threads or max(1, available // pool_size)
