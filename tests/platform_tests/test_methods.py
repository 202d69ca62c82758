"""Every registered method: what trains and where, what crosses the network in a round,
and the equivalences that follow from the maths (SplitFed = FedAvg for one client;
centralized = federated VPT for one client holding everything, minus the traffic)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from tinyvit import tiny_vit

from sfprompt.platform.config.load import load_config
from sfprompt.platform.loop.world import build_world, world_config
from sfprompt.platform.method.client import ClientTask, ClientWorker
from sfprompt.platform.method.pruning import keep_count
from sfprompt.platform.method.registry import METHODS, prompt_length
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.method.sfprompt import sfprompt_round
from sfprompt.platform.method.trainable import make_optimizer, scaled_lr, set_trainable
from sfprompt.platform.model.build import build_split
from sfprompt.platform.model.split import split_vit
from sfprompt.platform.wire.link import nbytes

CUT = {"smashed_up", "activations_down", "gradients_up", "gradients_down"}
# Written out by hand from docs/design.md, The method (Baselines), not derived from the registry:
# which client parameters train, where the body is and whether it trains, prompts or
# not, and the traffic kinds of a client's first round.
EXPECTED = {
    "sfprompt": dict(trains=lambda n: n == "head.prompts" or n.startswith("tail."),
                     body="server", body_trains=False, prompts=True,
                     kinds={"frozen_download", "download", "upload"} | CUT),
    "sfl": dict(trains=lambda n: n.startswith(("head.", "tail.")),
                body="server", body_trains=True, prompts=False,
                kinds={"download", "upload"} | CUT),
    "fl": dict(trains=lambda n: True, body="client", body_trains=True, prompts=False,
               kinds={"download", "upload"}),
    "fl_prompt": dict(trains=lambda n: n in ("head.prompts", "tail.classifier.linear.weight", "tail.classifier.linear.bias"),
                      body="client", body_trains=False, prompts=True,
                      kinds={"frozen_download", "download", "upload"}),
    "centralized": dict(trains=lambda n: n in ("head.prompts", "tail.classifier.linear.weight", "tail.classifier.linear.bias"),
                        body="client", body_trains=False, prompts=True, kinds=set()),
}
TINY_CFG = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
            "data.name=digits", "data.max_samples=60", "prompt.length=2", "fed.num_clients=3",
            "fed.clients_per_round=3", "run.backend=local", "train.batch_size=4"]


def _cfg(method, *extra):
    return load_config(None, TINY_CFG + [f"train.method={method}", *extra])


def test_every_method_has_expectations():
    assert set(METHODS) == set(EXPECTED)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_trainable_set_and_placement(method):
    want = EXPECTED[method]
    split, _ = build_split(_cfg(method), num_classes=10)
    client = dict(split.client().named_parameters())
    assert any(n.startswith("body.") for n in client) == (want["body"] == "client")
    assert ("head.prompts" in client) == want["prompts"]
    assert {n for n, p in client.items() if p.requires_grad} == {n for n in client if want["trains"](n)}
    assert all(p.requires_grad == want["body_trains"] for p in split.body.parameters())
    assert prompt_length(_cfg(method)) == (2 if want["prompts"] else 0)
    # The default local classifier is separate; a method without a local path has none.
    assert _cfg(method).train.local_classifier == "separate"
    assert any(".local_classifier." in n for n in client) == METHODS[method].local_path


def _worker_and_task(method, seed=0, n=10):
    split = split_vit(tiny_vit(seed=seed), 1, 1, prompt_length=2 if METHODS[method].prompts else 0)
    set_trainable(split, METHODS[method])
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 5, (n,), generator=gen)
    worker = ClientWorker(split, images, labels, img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    task = ClientTask(client=0, round=1, indices=np.arange(n), seed=3, first_visit=True)
    # The server steps the body at the rate the backends give it: the pretrained one.
    server = BodyServer(split.body, trains=METHODS[method].server_trains,
                        lr=_cfg(method).train.pretrained_lr)
    return split, worker, task, server


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_round_sends_the_expected_traffic_and_trains_only_its_set(method):
    want = EXPECTED[method]
    cfg = _cfg(method, "prune.keep=0.5")
    split, worker, task, server = _worker_and_task(method)
    global_state = {k: v.clone() for k, v in worker.state().items()}
    frozen = worker.frozen_state()
    client_before = {n: p.clone() for n, p in split.client().named_parameters()}
    body_before = [p.clone() for p in split.body.parameters()]

    result = METHODS[method].client_round(cfg, worker, task, global_state, server)

    assert {k for k, v in result.bytes.items() if v} == want["kinds"]
    if "download" in want["kinds"]:
        assert result.bytes["download"] == result.bytes["upload"] == nbytes(global_state)
    if "frozen_download" in want["kinds"]:
        assert result.bytes["frozen_download"] == nbytes(frozen) > 0
    if method == "fl":  # the whole model travels both ways
        whole = sum(p.numel() * 4 for p in tiny_vit().parameters())
        assert result.bytes["download"] == whole
    assert result.state.keys() == global_state.keys()
    for n, p in split.client().named_parameters():
        assert (not torch.equal(client_before[n], p)) == p.requires_grad, n
    body_changed = any(not torch.equal(a, b) for a, b in zip(body_before, split.body.parameters()))
    assert body_changed == want["body_trains"]
    assert result.client_flops > 0
    assert (server.take_flops(task.client) > 0) == (want["body"] == "server")
    assert result.num_kept == (5 if method == "sfprompt" else 10)
    assert np.isfinite(result.train_loss)


def test_splitfed_with_one_client_equals_fedavg_full_finetuning():
    # Split training is the same computation cut in two, and Adam is per parameter, so
    # head and tail stepped on the client and the body stepped on the server end where
    # one optimizer over the whole model ends.
    cfg_sfl, cfg_fl = _cfg("sfl", "train.split_epochs=2"), _cfg("fl", "train.split_epochs=2")
    split_s, worker_s, task, server = _worker_and_task("sfl")
    split_f, worker_f, _, _ = _worker_and_task("fl")
    sfl = METHODS["sfl"].client_round(cfg_sfl, worker_s, task, worker_s.state(), server)
    fl = METHODS["fl"].client_round(cfg_fl, worker_f, task, worker_f.state(), None)
    assert set(fl.state) == set(sfl.state) | {f"body.{n}" for n, _ in split_s.body.named_parameters()}
    for name, value in sfl.state.items():
        torch.testing.assert_close(value, fl.state[name], rtol=1e-4, atol=1e-5)
    for name, value in split_s.body.named_parameters():
        torch.testing.assert_close(value, fl.state[f"body.{name}"], rtol=1e-4, atol=1e-5)
    assert sfl.bytes["smashed_up"] > 0 and set(fl.bytes) == {"download", "upload"}


def test_centralized_trains_like_federated_vpt_and_sends_nothing():
    cfg_c, cfg_p = _cfg("centralized"), _cfg("fl_prompt")
    _, worker_c, task, _ = _worker_and_task("centralized")
    _, worker_p, _, _ = _worker_and_task("fl_prompt")
    central = METHODS["centralized"].client_round(cfg_c, worker_c, task, worker_c.state(), None)
    vpt = METHODS["fl_prompt"].client_round(cfg_p, worker_p, task, worker_p.state(), None)
    assert central.bytes == {} and central.messages == {}
    assert vpt.bytes["upload"] > 0
    for name, value in central.state.items():
        torch.testing.assert_close(value, vpt.state[name])
    # What it returns is a copy: training the worker further must not change it.
    before = {k: v.clone() for k, v in central.state.items()}
    with torch.no_grad():
        worker_c.split.head.prompts.add_(1.0)
    assert all(torch.equal(before[k], central.state[k]) for k in before)


def test_centralized_world_is_one_client_holding_all_training_data():
    cfg = _cfg("centralized", "fed.partition=dirichlet", "fed.protocol=deadline")
    assert world_config(_cfg("fl")) == _cfg("fl")
    world = build_world(cfg)
    assert (world.cfg.fed.num_clients, world.cfg.fed.clients_per_round) == (1, 1)
    assert world.cfg.fed.protocol == "wait_all" and len(world.profiles) == 1
    assert len(world.shards) == 1
    assert sorted(world.shards[0]) == list(range(len(world.data.train_labels)))


def test_the_body_moves_to_the_client_only_for_unsplit_methods():
    split = split_vit(tiny_vit(), 1, 1, prompt_length=2)
    names = {}
    for method in ("fl_prompt", "sfprompt"):
        set_trainable(split, METHODS[method])
        names[method] = {n for n, _ in split.client().named_parameters()}
    body = {f"body.{n}" for n, _ in split.body.named_parameters()}
    assert names["fl_prompt"] - names["sfprompt"] == body
    assert names["sfprompt"] <= names["fl_prompt"]


@pytest.mark.parametrize("name,kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizer_has_one_learning_rate_per_kind_of_parameter(name, kind):
    cfg = _cfg("sfprompt", f"train.optimizer={name}", "train.prompt_lr=0.3", "train.lr=0.2",
               "train.pretrained_lr=0.1", "train.momentum=0.5")
    split, _ = build_split(cfg, num_classes=10)
    worker = ClientWorker(split, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                    img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    optimizer = make_optimizer(cfg, worker)
    assert isinstance(optimizer, kind)
    names = {id(p): n for n, p in split.client().named_parameters()}
    groups = {g["lr"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert groups[0.3] == {"head.prompts"}
    # The local path's own classifier (the default, separate) learns at the classifier's rate.
    assert groups[0.2] == {f"tail.{c}.linear.{p}" for c in ("classifier", "local_classifier")
                           for p in ("weight", "bias")}
    assert groups[0.1] and all(n.startswith("tail.") and "classifier." not in n
                               for n in groups[0.1])
    if name == "sgd":
        assert all(g["momentum"] == 0.5 for g in optimizer.param_groups)


def test_sfprompt_takes_its_pruning_and_local_loss_options_from_the_config():
    _, worker, task, server = _worker_and_task("sfprompt", n=12)
    labels = worker.labels[task.indices]
    state = {k: v.clone() for k, v in worker.state().items()}
    per_class = sum(keep_count(int((labels == c).sum()), 0.3) for c in labels.unique())
    assert per_class != keep_count(12, 0.3)  # the test tells the two apart
    result = sfprompt_round(_cfg("sfprompt", "prune.keep=0.3", "prune.per_class=true"),
                            worker, task, state, server)
    assert result.num_kept == per_class
    # Only the local-loss epoch, its classifier frozen: the uploaded classifier is the
    # downloaded one, and the prompts moved.
    result = sfprompt_round(_cfg("sfprompt", "train.split_epochs=0",
                                 "train.local_classifier=frozen"), worker, task, state, server)
    assert torch.equal(result.state["tail.classifier.weight"], state["tail.classifier.weight"])
    assert not torch.equal(result.state["head.prompts"], state["head.prompts"])


def test_no_local_loss_epoch_reports_nan_and_no_pruning_keeps_no_subset():
    # mutation survivors of sfprompt.py: a local loss of None, a kept subset stored
    # (and checkpointed) when nothing is pruned, or a stored subset used then.
    _, worker, task, server = _worker_and_task("sfprompt", n=12)
    state = {k: v.clone() for k, v in worker.state().items()}
    result = sfprompt_round(_cfg("sfprompt", "train.local_epochs=0", "prune.once=true",
                                 "prune.keep=1"), worker, task, state, server)
    assert math.isnan(result.local_loss) and math.isfinite(result.train_loss)
    assert result.kept is None and result.num_kept == 12
    stored = dataclasses.replace(task, kept=task.indices[:3])  # unused at keep 1
    assert sfprompt_round(_cfg("sfprompt", "prune.keep=1"), worker, stored, state,
                          server).num_kept == 12


def test_a_separate_local_classifier_reads_out_the_local_path_only():
    x = torch.randn(3, 3, 32, 32)
    reference = tiny_vit(seed=1)
    want_full = reference(x)
    separate = split_vit(tiny_vit(seed=1), 1, 1, prompt_length=0, local_classifier=True)
    shared = split_vit(tiny_vit(seed=1), 1, 1, prompt_length=0)
    new = torch.randn_like(separate.tail.local_classifier.weight)
    with torch.no_grad():
        separate.tail.local_classifier.weight.copy_(new)
        shared.tail.classifier.weight.copy_(new)
    assert separate.tail.local_classifier is not separate.tail.classifier
    torch.testing.assert_close(separate.forward(x), want_full, rtol=0, atol=1e-5)
    assert torch.equal(separate.local(x), shared.local(x))  # through the copy, as if it were the classifier
    assert not torch.allclose(separate.local(x), reference.forward_head(
        reference.forward_features(x)))


def test_sfprompt_trains_a_separate_local_classifier_in_the_local_loss_epoch_only():
    cfg = _cfg("sfprompt", "train.local_classifier=separate")
    split, _ = build_split(cfg, num_classes=5)
    client = dict(split.client().named_parameters())
    local = {n for n in client if n.startswith("tail.local_classifier.")}
    assert local == {"tail.local_classifier.linear.weight", "tail.local_classifier.linear.bias"}
    assert all(client[n].requires_grad for n in local)
    worker = ClientWorker(split, torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8,
                                               generator=torch.Generator().manual_seed(2)),
                          torch.arange(12) % 5, img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    groups = {g["lr"]: {n for n, p in client.items() if any(p is q for q in g["params"])}
              for g in make_optimizer(cfg, worker).param_groups}
    assert groups[cfg.train.lr] >= local  # it starts from scratch, as the classifier does
    task = ClientTask(client=0, round=1, indices=np.arange(12), seed=3, first_visit=True)
    server = BodyServer(split.body)
    state = {k: v.clone() for k, v in worker.state().items()}
    assert local <= set(state)  # it travels and is averaged with the tail
    unchanged = lambda result, prefix: all(  # noqa: E731
        torch.equal(result.state[n], state[n]) for n in state if n.startswith(prefix))
    only_local = sfprompt_round(_cfg("sfprompt", "train.local_classifier=separate",
                                     "train.split_epochs=0"), worker, task, state, server)
    assert unchanged(only_local, "tail.classifier.")
    assert not unchanged(only_local, "tail.local_classifier.")
    only_split = sfprompt_round(_cfg("sfprompt", "train.local_classifier=separate",
                                     "train.local_epochs=0", "prune.keep=1"),
                                worker, task, state, server)
    assert unchanged(only_split, "tail.local_classifier.")
    assert not unchanged(only_split, "tail.classifier.")


def test_the_local_loss_epoch_steps_at_its_own_multiple_of_the_learning_rates():
    _, worker, task, server = _worker_and_task("sfprompt", n=12)
    state = {k: v.clone() for k, v in worker.state().items()}
    only_local = ["train.split_epochs=0", "prune.keep=1", "train.optimizer=sgd",
                  "train.momentum=0"]

    def uploaded(*extra):
        return sfprompt_round(_cfg("sfprompt", *only_local, *extra), worker, task, state,
                              server).state

    # Scale 0: the epoch runs and changes nothing; scale 2 equals every rate doubled
    # (a power of two: the same floats) and differs from scale 1.
    assert all(torch.equal(v, state[k]) for k, v in uploaded("train.local_lr_scale=0").items())
    base = _cfg("sfprompt").train
    doubled = uploaded(f"train.lr={2 * base.lr}", f"train.prompt_lr={2 * base.prompt_lr}",
                       f"train.pretrained_lr={2 * base.pretrained_lr}")
    scaled = uploaded("train.local_lr_scale=2")
    assert all(torch.equal(scaled[k], doubled[k]) for k in state)
    assert not all(torch.equal(scaled[k], v) for k, v in uploaded().items())
    # The split epochs after it step at the rates as configured: the rates come back.
    optimizer = make_optimizer(_cfg("sfprompt"), worker)
    rates = [g["lr"] for g in optimizer.param_groups]
    with pytest.raises(RuntimeError), scaled_lr(optimizer, 0.3):
        assert [g["lr"] for g in optimizer.param_groups] == [r * 0.3 for r in rates]
        raise RuntimeError
    assert [g["lr"] for g in optimizer.param_groups] == rates


@pytest.mark.parametrize("method", ["sfl", "fl", "centralized"])
def test_a_round_without_a_training_epoch_reports_nan_loss(method):
    # mutation survivors of baselines.py: a train loss of None where no epoch ran.
    _, worker, task, server = _worker_and_task(method)
    state = {k: v.clone() for k, v in worker.state().items()}
    result = METHODS[method].client_round(_cfg(method, "train.split_epochs=0"), worker, task,
                                          state, server)
    assert math.isnan(result.train_loss) and result.num_kept == len(task.indices)
