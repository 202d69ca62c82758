"""Two Ray nodes on this machine: the server actor goes where the server resource is,
client actors where CPUs are, and every actor runs torch with the coordinator's threads."""

import json

import pytest
import ray
from ray.cluster_utils import Cluster

from sfprompt.actors.backend import make_backend
from sfprompt.actors.cluster import client_pool
from sfprompt.platform.config.load import load_config
from sfprompt.platform.method.registry import METHODS
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_rounds


@pytest.fixture(scope="module")
def cluster():
    """A head node with 2 CPUs and a second node with 1 CPU and the resource
    "server_gpu", standing for a GPU machine. The backend joins it: no other Ray may be
    connected (conftest's shared instance is shut down; the next test starts it again)."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_node = cluster.add_node(num_cpus=1, resources={"server_gpu": 1})
    cluster.wait_for_nodes()
    yield cluster, gpu_node
    cluster.shutdown()


def test_server_lands_on_the_resource_node_and_clients_on_cpu_nodes(cluster, tmp_path, tiny):
    cluster, gpu_node = cluster
    backends = []

    def factory(world):
        backends.append(make_backend(world))
        return backends[-1]

    # Two torch threads: Ray workers default to one, and float results depend on the
    # count, so every actor must take the coordinator's (run.threads here).
    cfg = load_config(None, tiny + ["fed.rounds=1", "run.threads=2", f"run.out_dir={tmp_path}",
                                    f"ray.address={cluster.address}",
                                    "ray.server_resource=server_gpu"])
    run_dir = run_experiment(cfg, make_backend=factory)
    backend = backends[0]
    assert backend.server_placement == {"node": gpu_node.node_id, "threads": 2, "device": "cpu"}
    # 3 CPUs, 1 taken by the server: two client actors, both on the head, the only node
    # with CPUs left.
    head = {"node": cluster.head_node.node_id, "threads": 2, "device": "cpu"}
    assert backend.client_placements == [head, head]
    # That pool is client_pool's on the cluster's 3 CPUs (the sizing the placement-shape
    # test in test_backend.py checks without Ray).
    shape = client_pool(cfg, METHODS[cfg.train.method], 3.0, 2)
    assert shape == (2, 1.0, 2)
    assert [p["threads"] for p in backend.client_placements] == [shape.threads] * shape.actors
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["ray"]["server"] == backend.server_placement  # where the body ran, on record
    assert run["ray"]["clients"] == [head, head]
    assert len(read_rounds(run_dir)) == 1 and read_rounds(run_dir)["flops.server"][0] > 0
    assert not ray.is_initialized()  # the backend joined the cluster, so it left it
