"""The privacy boundary: the server receives smashed activations and gradients, nothing else.

Every call that reaches the server during a real SFPrompt run is recorded at the
server's own entry points: a recording subclass of the Ray server actor (all its public
methods, in the actor's process) and of the in-process `BodyServer` the local backend
calls. The records are then checked against what split learning may send, without
trusting the client code that sends it: tensors are (B <= batch, 1 + prompts + patches,
embed dim) float32, finite, not pixels and equal to no training image; the rest are
client keys, flags and lists of client keys. So no image, label or sample index can
have reached the server.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import ray
import torch

from sfprompt.actors import backend as ray_backend
from sfprompt.actors.server import ServerActor
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import Config
from sfprompt.platform.data.datasets import load_dataset, to_model_input
from sfprompt.platform.loop import backend as local_backend
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.model.build import build_split
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients

# vit_tiny: embed dim 192, 16 px patches, so 32 px = 4 patches; 2 prompts.
EMBED_DIM, PATCHES, PROMPTS, BATCH = 192, 4, 2, 8


def recording(cls: type) -> type:
    """A subclass of `cls` whose public methods log (method, args, kwargs), then run.
    Built at run time, so Ray ships it by value to the actor's process."""

    def logged(name):
        def method(self, *args, **kwargs):
            self.received_log.append((name, args, kwargs))
            return getattr(super(sub, self), name)(*args, **kwargs)
        method.__name__ = name
        return method

    def __init__(self, *args, **kwargs):
        self.received_log = [("__init__", args, kwargs)]
        super(sub, self).__init__(*args, **kwargs)

    def received(self):
        return self.received_log

    methods = {name: logged(name) for name, _ in inspect.getmembers(cls, inspect.isfunction)
               if not name.startswith("_")}
    sub = type(f"Recording{cls.__name__}", (cls,), {**methods, "__init__": __init__,
                                                    "received": received})
    return sub


@pytest.fixture
def overrides(tiny, tmp_path) -> list[str]:
    return tiny + [f"train.batch_size={BATCH}", f"prompt.length={PROMPTS}",
                   "train.method=sfprompt", "run.threads=1", f"run.out_dir={tmp_path}"]


def images_as_bytes(cfg: Config) -> set[bytes]:
    """Every training image as the bytes of float32 pixels, raw and as model input."""
    data = load_dataset(cfg.data.name, root=None, test_fraction=cfg.data.test_fraction,
                        seed=cfg.run.seed, max_samples=cfg.data.max_samples)
    raw = data.train_images.float()  # (N, 1, 8, 8)
    _, norm = build_split(cfg, data.num_classes)
    model_input = to_model_input(data.train_images, **norm)  # (N, 3, 32, 32)
    return {x.numpy().tobytes() for x in (*raw, *model_input)}


def check_payload(value, cfg: Config, images: set[bytes], where: str) -> list[torch.Tensor]:
    """Fail unless `value` is a payload the server may see; returns its tensors."""
    if isinstance(value, np.ndarray):  # how tensors travel between actors (actors/wire.py)
        value = torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        tokens = 1 + PROMPTS + PATCHES
        assert value.dtype == torch.float32, (where, value.dtype)
        assert value.ndim == 3 and value.shape[1:] == (tokens, EMBED_DIM), (where, value.shape)
        assert 1 <= value.shape[0] <= cfg.train.batch_size, (where, value.shape)
        assert torch.isfinite(value).all(), where
        # Pixels would be whole numbers in [0, 255] (raw) or one affine map of them.
        assert not ((value >= 0) & (value <= 255) & (value == value.round())).all(), where
        for sample in value:
            assert sample.detach().contiguous().numpy().tobytes() not in images, f"{where}: an image"
        return [value]
    if isinstance(value, bool):
        return []
    if isinstance(value, int):  # a client key: who asks, never which sample
        assert 0 <= value < cfg.fed.num_clients, (where, value)
        return []
    if isinstance(value, (list, tuple)):  # keys of the clients of a round
        assert len(value) <= cfg.fed.clients_per_round, (where, value)
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in value), (where, value)
        return [t for v in value for t in check_payload(v, cfg, images, where)]
    raise AssertionError(f"{where}: the server received a {type(value).__name__}: {value!r:.200}")


def check_received(calls: list, cfg: Config, run_dir) -> list[tuple]:
    """Check every recorded call; returns (method, key, shape) of the body requests."""
    images = images_as_bytes(cfg)
    name, args, kwargs = calls[0]
    if name == "__init__":  # the actor is built from the config, never from data
        assert not any(isinstance(a, (torch.Tensor, np.ndarray)) for a in (*args, *kwargs.values()))
        calls = calls[1:]
    requests, rows = [], 0
    for i, (name, args, kwargs) in enumerate(calls):
        for j, value in enumerate((*args, *kwargs.values())):
            check_payload(value, cfg, images, f"call {i} {name} argument {j}")
        if name in ("forward", "backward"):
            key, tensor = args[0], args[1]
            requests.append((name, key, tuple(tensor.shape)))
            rows += tensor.shape[0] if name == "forward" else 0
    clients = read_clients(run_dir)
    # Conservation: the server saw exactly the kept samples' rows, once per split epoch.
    assert rows == clients["kept_samples"].sum() * cfg.train.split_epochs > 0
    assert {n for n, *_ in requests} == {"forward", "backward"}
    assert math.ceil(rows / cfg.train.batch_size) <= len([r for r in requests if r[0] == "forward"])
    return sorted(requests)


def test_server_receives_only_smashed_data_and_gradients(ray_instance, overrides, monkeypatch):
    monkeypatch.setattr(ray_backend, "ServerActor", recording(ServerActor))
    received = []

    def factory(world):
        backend = ray_backend.RayBackend(world)
        close = backend.close

        def read_then_close():  # the actor dies with close(): read its log first
            if backend.server is not None:
                received.extend(ray.get(backend.server.received.remote(), timeout=60))
            close()
        backend.close = read_then_close
        return backend

    # The body on its own process, so that what reaches it crossed a process boundary.
    cfg = load_config(None, overrides + ["run.backend=ray", "run.run_id=ray", "ray.body=server"])
    run_dir = run_experiment(cfg, make_backend=factory)
    ray_requests = check_received(received, cfg, run_dir)
    info = json.loads((run_dir / "run.json").read_text())  # where the actors lived
    assert info["ray"]["namespace"] == ray.get_runtime_context().namespace

    # The in-process reference's BodyServer gets the very same requests.
    servers = []

    class Recorded(recording(BodyServer)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            servers.append(self)

    monkeypatch.setattr(local_backend, "BodyServer", Recorded)
    local_cfg = load_config(None, overrides + ["run.backend=local", "run.run_id=local"])
    run_dir = run_experiment(local_cfg)
    assert len(servers) == 1
    assert check_received(servers[0].received_log, local_cfg, run_dir) == ray_requests

