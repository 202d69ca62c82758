"""The privacy boundary: the server receives smashed activations and gradients, nothing else.

Every call that reaches the server during a real SFPrompt run is recorded at the
server's own entry points: a recording subclass of the Ray server actor (all its public
methods, in the actor's process) and of the in-process `BodyServer` the local backend
calls. The records are then checked against what split learning may send, without
trusting the client code that sends it: each entry point's arguments, one by one, are
token matrices (B <= batch, 1 + prompts + patches, embed dim) of float32 whose values
are not pixel values, flags, and keys of clients that ran, each key sending exactly
its client's kept samples. So no image, label or sample index can have reached the
server. The checks themselves are shown to fail on planted leaks (last test).
"""

from __future__ import annotations

import inspect
import json

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
from sfprompt.platform.model.plans import plan_splits_of
from sfprompt.platform.model.build import build_split
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients, write_clients

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
    # The classifier starts at zero, so the first split step's gradients are exactly 0,
    # which no check can tell from black pixels; a shared classifier has been trained by
    # the local-loss epoch before any gradient reaches the server.
    return tiny + [f"train.batch_size={BATCH}", f"prompt.length={PROMPTS}",
                   "train.method=sfprompt", "train.local_classifier=shared", "run.threads=1",
                   f"run.out_dir={tmp_path}"]


# What each server entry point may receive, parameter by parameter: a client's key (who
# asks), a token matrix (smashed activations or their gradients), a flag, or a round's
# keys. Anything else, or an extra argument, fails: a new entry point is added here on
# purpose. The actor's forget takes a round's keys, the in-process BodyServer's one key.
COMMON = {"forward": (("key", "key"), ("smashed", "tokens"), ("input_grad", "flag"),
                      ("split", "split")),
          "backward": (("key", "key"), ("grad_out", "tokens")),
          "state_dict": (), "load_state_dict": None}  # None: may not be called at all
# load_global (a split plan's global state: weights, never data) is not called here.
ACTOR = {**COMMON, "forget": (("keys", "keys"),), "incarnation": (), "take_busy_seconds": (),
         "load_global": None,
         "crash_on_next_request": (("armed", "flag"),), "pid": (), "placement": ()}
LOCAL = {**COMMON, "forget": (("key", "key"),), "take_flops": (("key", "key"),)}
PIXEL_SHARE = 0.01  # of a token matrix's values that may equal some pixel value by chance


def pixel_values(cfg: Config) -> torch.Tensor:
    """Every distinct float32 value of a training pixel, raw and as model input (8x8
    digits have 17 grey levels, so a few dozen values)."""
    data = load_dataset(cfg.data.name, root=None, test_fraction=cfg.data.test_fraction,
                        seed=cfg.run.seed, max_samples=cfg.data.max_samples)
    _, norm = build_split(cfg, data.num_classes)
    model_input = to_model_input(data.train_images, **norm)  # (N, 3, 32, 32)
    return torch.cat([data.train_images.float().flatten(), model_input.flatten()]).unique()


def check_tokens(value, cfg: Config, pixels: torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):  # how tensors travel between actors (actors/wire.py)
        value = torch.from_numpy(value)
    assert isinstance(value, torch.Tensor), (where, type(value))
    tokens = 1 + PROMPTS + PATCHES
    assert value.dtype == torch.float32, (where, value.dtype)
    assert value.ndim == 3 and value.shape[1:] == (tokens, EMBED_DIM), (where, value.shape)
    assert 1 <= value.shape[0] <= cfg.train.batch_size, (where, value.shape)
    assert torch.isfinite(value).all(), where
    # Pixels moved into a token matrix keep their exact values; activations and their
    # gradients almost never equal one of the few pixel values.
    share = torch.isin(value.detach(), pixels).float().mean().item()
    assert share < PIXEL_SHARE, f"{where}: {share:.0%} of the values are pixel values"
    return value


def check_call(name: str, args: tuple, kwargs: dict, signatures: dict, cfg: Config,
               pixels: torch.Tensor, ran: set[int]) -> dict:
    """Fail unless the call is one the server may receive; returns its arguments by name."""
    assert signatures.get(name) is not None, f"the server's {name} was called"
    params = signatures[name]
    assert len(args) <= len(params) and set(kwargs) <= {p for p, _ in params[len(args):]}, \
        (name, len(args), sorted(kwargs))
    named = {**{p: a for (p, _), a in zip(params, args)}, **kwargs}
    if any(kind == "split" for _, kind in params):
        named.setdefault("split", None)  # a call may leave it at its default
    assert set(named) == {p for p, _ in params}, (name, sorted(named))
    for param, kind in params:
        value, where = named[param], f"{name}({param})"
        if kind == "tokens":
            named[param] = check_tokens(value, cfg, pixels, where)
        elif kind == "flag":
            assert isinstance(value, bool), (where, value)
        elif kind == "split":  # the client's split under a plan; none under a fixed one
            assert value is None if cfg.split.plan == "fixed" else (
                isinstance(value, tuple) and value in plan_splits_of(cfg.split)), (where, value)
        else:
            keys = value if kind == "keys" else [value]
            assert isinstance(keys, (list, tuple)) and len(keys) <= cfg.fed.clients_per_round
            for key in keys:  # a client that ran, never a label or a sample's index
                assert isinstance(key, int) and not isinstance(key, bool), (where, key)
                assert key in ran, (where, key)
    return named


def check_received(calls: list, signatures: dict, cfg: Config, run_dir) -> list[tuple]:
    """Check every recorded call; returns (method, key, shape) of the body requests."""
    pixels = pixel_values(cfg)
    clients = read_clients(run_dir)
    ran = set(clients.loc[clients["status"] == "ok", "client"].astype(int))
    name, args, kwargs = calls[0]
    if name == "__init__":  # the actor is built from the config, never from data
        assert not any(isinstance(a, (torch.Tensor, np.ndarray)) for a in (*args, *kwargs.values()))
        calls = calls[1:]
    requests, rows = [], {}
    for name, args, kwargs in calls:
        named = check_call(name, args, kwargs, signatures, cfg, pixels, ran)
        if name in ("forward", "backward"):
            tensor = named["smashed" if name == "forward" else "grad_out"]
            requests.append((name, named["key"], tuple(tensor.shape)))
            if name == "forward":
                rows[named["key"]] = rows.get(named["key"], 0) + tensor.shape[0]
    # Conservation, client by client: each key sent exactly its kept samples' rows, once
    # per split epoch, so a key is that client (a label or index would not add up).
    kept = clients.groupby("client")["kept_samples"].sum() * cfg.train.split_epochs
    assert rows == {int(c): int(n) for c, n in kept.items() if n > 0}
    assert {n for n, *_ in requests} == {"forward", "backward"}
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
    ray_requests = check_received(received, ACTOR, cfg, run_dir)
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
    assert check_received(servers[0].received_log, LOCAL, local_cfg, run_dir) == ray_requests



def test_the_checks_fail_on_planted_leaks(overrides, tmp_path):
    """The checker against hand-made records: a clean round passes, and each leak a
    client could plant (pixels in a token matrix, a label as an extra argument or as the
    key, a sample index as the key) fails it."""
    cfg = load_config(None, overrides)
    write_clients(tmp_path, [{"round": 1, "client": c, "status": "ok", "kept_samples": 8}
                             for c in (0, 1)])
    shape = (8, 1 + PROMPTS + PATCHES, EMBED_DIM)
    torch.manual_seed(0)
    smashed, grad = torch.randn(shape), torch.randn(shape)

    def calls(*changed):
        clean = [("forward", (0, smashed), {"input_grad": True}), ("backward", (0, grad), {}),
                 ("forward", (1, smashed), {"input_grad": True}), ("backward", (1, grad), {})]
        return [changed[0] if i == 0 and changed else c for i, c in enumerate(clean)]

    assert len(check_received(calls(), LOCAL, cfg, tmp_path)) == 4
    pixels = pixel_values(cfg)
    images = pixels[torch.randint(len(pixels), (smashed.numel(),))].reshape(shape)
    planted = {
        "pixels in the smashed data": ("forward", (0, images), {"input_grad": True}),
        "a label as an extra argument": ("forward", (0, smashed, True, 3), {}),
        "a label after the split": ("forward", (0, smashed, True, None, 3), {}),
        "labels as a keyword": ("forward", (0, smashed, True), {"labels": torch.zeros(8)}),
        "a label as the key": ("forward", (7, smashed), {"input_grad": True}),
        "a sample's index as the key": ("forward", (1, smashed), {"input_grad": True}),
        "a call the server does not have": ("fit", (0,), {}),
    }
    for what, call in planted.items():
        with pytest.raises(AssertionError):
            check_received(calls(call), LOCAL, cfg, tmp_path)
            pytest.fail(f"not caught: {what}")
