"""Core behaviours checked against values computed by hand, not only between backends:
which samples EL2N keeps, what FedAvg in the round loop weights by, that evaluation
runs the full path, when the frozen head travels, how clients are sampled, and that
the random pruning score is a seeded control independent of the model."""

import copy
import math

import numpy as np
import pytest
import torch
from tinyvit import tiny_vit

from sfprompt.platform.config.load import load_config
from sfprompt.platform.fed.sampling import sample_clients
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.evaluation import Evaluator
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import World, build_world, initial_progress
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, client_state
from sfprompt.platform.method.pruning import SCORES, select_hardest
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.server import BodyServer
from sfprompt.platform.method.steps import evaluate
from sfprompt.platform.method.trainable import set_trainable
from sfprompt.platform.model.split import split_vit
from sfprompt.platform.sim.profiles import Profile, ServerProfile

TINY_CFG = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
            "data.name=digits", "prompt.length=2", "run.backend=local", "train.batch_size=4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> model input at the images' own size, mean = std = 0.5 per channel."""
    return (images.double() / 255.0 - 0.5).div(0.5).float()


# ---------------------------------------------------------------- EL2N keeps the hardest


def test_el2n_then_select_keeps_the_hardest_on_known_logits():
    # Probabilities given directly (logits = their logs).
    probs = torch.tensor([[0.90, 0.05, 0.05],   # 0: confident and right: easiest
                          [0.05, 0.05, 0.90],   # 1: confident and wrong (label 0): hardest
                          [0.50, 0.25, 0.25],   # 2: unsure, right
                          [0.10, 0.80, 0.10],   # 3: right, fairly sure
                          [0.20, 0.40, 0.40],   # 4: label 2, leaning right
                          [0.34, 0.33, 0.33]])  # 5: label 1, near uniform
    labels = torch.tensor([0, 0, 0, 1, 2, 1])
    p, y = probs.numpy().astype(np.float64), labels.numpy()
    err = p.copy()
    err[np.arange(6), y] -= 1.0
    by_hand = np.sqrt((err ** 2).sum(axis=1))
    # 0: |(-.1, .05, .05)| = .12   1: |(-.95, .05, .9)| = 1.31   2: |(-.5, .25, .25)| = .61
    # 3: |(.1, -.2, .1)| = .24      4: |(.2, .4, -.6)| = .75      5: |(.34, -.67, .33)| = .82
    np.testing.assert_allclose(by_hand, [0.1225, 1.3096, 0.6124, 0.2449, 0.7483, 0.8206],
                               atol=1e-4)
    scores = SCORES["el2n"](probs.log(), labels, torch.Generator())
    np.testing.assert_allclose(scores.numpy(), by_hand, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    assert select_hardest(scores, 0.5, g).tolist() == [1, 4, 5]  # the 3 hardest
    assert select_hardest(scores, 1 / 6, g).tolist() == [1]
    assert select_hardest(scores, 4 / 6, g).tolist() == [1, 2, 4, 5]


def _sfprompt_setup(model_seed=0, n_images=30, task_seed=3):
    split = split_vit(tiny_vit(seed=model_seed), 1, 1, prompt_length=2)
    set_trainable(split, METHODS["sfprompt"])
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 5, (n_images,), generator=gen)
    worker = ClientWorker(split, images, labels, img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    # A shard of 20 dataset positions in no particular order: kept positions must map
    # back to these dataset indices.
    indices = np.random.default_rng(1).permutation(n_images)[:20]
    task = ClientTask(client=0, round=1, indices=indices, seed=task_seed, first_visit=True)
    server = BodyServer(split.body, trains=False)
    calls = []  # the indices every batches() call was asked for, in order
    original = worker.batches

    def recording(indices, batch_size, generator=None):
        calls.append(np.array(indices))
        return original(indices, batch_size, generator)

    worker.batches = recording
    return split, worker, task, server, calls


def _el2n_kept_by_hand(split, worker, indices, keep):
    """The dataset indices of the `keep` hardest samples by EL2N on the local path."""
    with torch.no_grad():
        logits = split.local(_by_hand_input(worker.images[indices])).double().numpy()
    err = _softmax(logits)
    err[np.arange(len(indices)), worker.labels[indices].numpy()] -= 1.0
    scores = np.sqrt((err ** 2).sum(axis=1))
    assert len(np.unique(scores.round(6))) == len(indices)  # no ties: the choice is unique
    k = math.ceil(keep * len(indices))
    return sorted(indices[np.argsort(-scores)[:k]].tolist()), sorted(indices[np.argsort(scores)[:k]].tolist())


def _trained_on(cfg, split, worker, task, server, calls):
    result = METHODS["sfprompt"].client_round(cfg, worker, task, worker.state(), server)
    scored, *trained = calls
    assert sorted(scored.tolist()) == sorted(task.indices.tolist())  # every sample scored
    assert trained and all(np.array_equal(t, trained[0]) for t in trained)  # every epoch
    return result, sorted(trained[0].tolist())


def test_sfprompt_round_trains_on_the_hardest_by_el2n_computed_by_hand():
    cfg = load_config(None, TINY_CFG + ["prune.keep=0.4", "train.local_epochs=1",
                                        "train.split_epochs=1", "train.eval_batch_size=7"])
    split, worker, task, server, calls = _sfprompt_setup()
    hardest, easiest = _el2n_kept_by_hand(split, worker, task.indices, 0.4)  # before training
    assert hardest != easiest
    result, trained = _trained_on(cfg, split, worker, task, server, calls)
    assert trained == hardest
    assert result.num_kept == len(hardest) == 8 and result.num_samples == 20


# ---------------------------------------------------------------- prune.score=random


def test_random_score_is_a_seeded_control_independent_of_the_model():
    cfg = load_config(None, TINY_CFG + ["prune.keep=0.5", "prune.score=random"])
    kept, el2n_kept = {}, {}
    for model_seed, task_seed in ((0, 3), (0, 3), (1, 3), (0, 4)):
        split, worker, task, server, calls = _sfprompt_setup(model_seed, task_seed=task_seed)
        el2n_kept[model_seed], _ = _el2n_kept_by_hand(split, worker, task.indices, 0.5)
        result, trained = _trained_on(cfg, split, worker, task, server, calls)
        assert result.num_kept == len(trained) == 10 and len(set(trained)) == 10
        assert set(trained) <= set(task.indices.tolist())
        kept.setdefault((model_seed, task_seed), []).append(trained)
    [a, b] = kept[(0, 3)]
    assert a == b  # seeded: the same round's seed keeps the same subset
    # Another model, whose logits change EL2N's choice, changes nothing: it ignores them.
    assert el2n_kept[0] != el2n_kept[1] and kept[(1, 3)] == [a]
    assert kept[(0, 4)] != [a]  # another seed, another subset
    assert a != el2n_kept[0]  # not EL2N's choice (C(20, 10) = 184756 subsets)


# ---------------------------------------------------------------- FedAvg in the round loop


class WeightedStub:
    """Client c uploads a state filled with c, having trained on num_kept = c + 1 of
    num_samples = 10 - 4c samples: FedAvg by kept, by samples and unweighted all differ."""

    overlaps_evaluation = False

    def run_clients(self, tasks, global_state):
        return [ClientResult(t.client, {k: torch.full_like(v, float(t.client))
                                        for k, v in global_state.items()},
                             num_samples=10 - 4 * t.client, num_kept=t.client + 1,
                             train_loss=0.5, local_loss=0.5, client_flops=1)
                for t in tasks]

    def evaluate(self, global_state):
        return lambda: (0.0, 0.0)


class FakeSplit:
    def __init__(self):
        self.module = torch.nn.Linear(2, 1)

    def client(self):
        return self.module


def test_round_loop_fedavg_weights_each_client_by_its_kept_samples():
    cfg = load_config(None, ["fed.num_clients=3", "fed.clients_per_round=3", "fed.rounds=1"])
    profiles = [Profile("hand", 1e9, 1e6, 1e6, 0.0, 0.0, 1.0, 0)] * 3
    world = World(cfg, None, [np.arange(3)] * 3, FakeSplit(), {}, profiles,
                  ServerProfile("s", 1e12, 1))
    progress = initial_progress(world)
    [(_, outcomes)] = list(run_rounds(world, WeightedStub(), progress))
    assert [o.status for o in outcomes] == ["ok"] * 3
    by_kept = (0 * 1 + 1 * 2 + 2 * 3) / (1 + 2 + 3)  # 4/3
    by_samples = (0 * 10 + 1 * 6 + 2 * 2) / (10 + 6 + 2)  # 5/9
    assert len({by_kept, by_samples, 1.0}) == 3  # the three rules tell apart
    for name, value in progress.global_state.items():
        torch.testing.assert_close(value, torch.full_like(value, by_kept), rtol=0, atol=1e-6,
                                   msg=name)


# ---------------------------------------------------------------- evaluation: the full path


def _labelled(logits: torch.Tensor, right: int) -> torch.Tensor:
    """Labels the model gets right for the first `right` samples and wrong after."""
    top = logits.argmax(dim=1)
    return torch.cat([top[:right], (top[right:] + 1) % logits.shape[1]])


def _by_hand(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    logp = torch.log_softmax(logits.double(), dim=1)
    accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
    return accuracy, -logp[torch.arange(len(labels)), labels].mean().item()


def test_evaluate_is_the_full_path_computed_by_hand_from_timm():
    vit = tiny_vit()
    reference = copy.deepcopy(vit)  # the unsplit timm model
    split = split_vit(vit, 1, 1, prompt_length=0)
    images = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = reference(images)
        local = split.local(images)
    labels = _labelled(logits, 6)
    accuracy, loss = _by_hand(logits, labels)
    assert accuracy == 0.6
    assert abs(_by_hand(local, labels)[1] - loss) > 1e-3  # the local path would differ
    batches = [(images[i:i + 3], labels[i:i + 3]) for i in range(0, 10, 3)]  # 3+3+3+1
    got_accuracy, got_loss = evaluate(split, batches)
    assert got_accuracy == accuracy
    assert got_loss == pytest.approx(loss, rel=1e-5)


def test_evaluator_loads_the_global_state_and_runs_the_full_path():
    vit = tiny_vit()
    split = split_vit(vit, 1, 1, prompt_length=0)
    set_trainable(split, METHODS["sfprompt"])
    images = torch.randint(0, 256, (11, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    # The global state differs from the split's own classifier: the evaluator must load it.
    state = {k: v.clone() for k, v in client_state(split.client()).items()}
    gen = torch.Generator().manual_seed(6)
    state["tail.classifier.weight"] = torch.randn(state["tail.classifier.weight"].shape,
                                                  generator=gen)
    state["tail.classifier.bias"] = torch.randn(5, generator=gen)
    reference = copy.deepcopy(vit)
    with torch.no_grad():
        reference.head.weight.copy_(state["tail.classifier.weight"])
        reference.head.bias.copy_(state["tail.classifier.bias"])
        logits = reference(_by_hand_input(images))
    labels = _labelled(logits, 7)
    accuracy, loss = _by_hand(logits, labels)
    assert accuracy == 7 / 11
    cfg = load_config(None, ["train.eval_batch_size=4"])
    norm = {"img_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    evaluator = Evaluator(cfg, split, images, labels, norm)
    got_accuracy, got_loss = evaluator(state)
    assert got_accuracy == accuracy
    assert got_loss == pytest.approx(loss, rel=1e-5)


# ---------------------------------------------------------------- the frozen head, once


def test_frozen_head_is_downloaded_only_on_a_clients_first_visit():
    cfg = load_config(None, TINY_CFG + ["data.max_samples=30", "fed.num_clients=3",
                                        "fed.clients_per_round=2", "fed.rounds=3",
                                        "prune.keep=0.5", "train.eval_batch_size=16",
                                        "eval.max_samples=4"])
    world = build_world(cfg)
    world.profiles = [Profile(f"p{i}", 1e9, 1e6, 1e6, 0.0, 0.0, 1.0, 0) for i in range(3)]
    sampled = [sample_clients(cfg, r) for r in range(1, 4)]
    visits = [c for s in sampled for c in s]
    assert len(set(visits)) == 3 and len(visits) > 3  # everyone comes, some come back
    frozen = sum(p.numel() * p.element_size() for p in world.split.client().parameters()
                 if not p.requires_grad)
    assert frozen > 0
    seen = set()
    for (row, outcomes), clients in zip(run_rounds(world, LocalBackend(world)), sampled):
        assert [o.client for o in outcomes] == clients
        for o in outcomes:
            assert o.status == "ok"
            want = 0 if o.client in seen else frozen
            assert o.result.bytes.get("frozen_download", 0) == want, (row["round"], o.client)
            assert o.result.bytes["download"] > 0  # the trainable state comes every time
        seen.update(clients)
        assert row["bytes.frozen_download"] == sum(
            frozen for o in outcomes if o.result.bytes.get("frozen_download"))


# ---------------------------------------------------------------- client sampling


def _sampling_cfg(seed=0, num_clients=10, per_round=3):
    return load_config(None, [f"run.seed={seed}", f"fed.num_clients={num_clients}",
                              f"fed.clients_per_round={per_round}"])


def test_sampled_clients_are_distinct_registered_and_as_many_as_asked():
    cfg = _sampling_cfg()
    for r in range(1, 301):
        chosen = sample_clients(cfg, r)
        assert len(chosen) == len(set(chosen)) == 3
        assert chosen == sorted(chosen) and all(0 <= c < 10 for c in chosen)
    assert sample_clients(cfg, 1, count=10) == list(range(10))  # all of them, once each
    assert len(set(sample_clients(cfg, 7, count=6))) == 6


def test_sampling_is_seeded_by_run_seed_and_round():
    rounds = range(1, 51)
    first = [sample_clients(_sampling_cfg(0), r) for r in rounds]
    assert first == [sample_clients(_sampling_cfg(0), r) for r in rounds]  # same seed
    other = [sample_clients(_sampling_cfg(1), r) for r in rounds]
    assert sum(a != b for a, b in zip(first, other)) > 25  # another seed, other clients
    assert len({tuple(s) for s in first}) > 25  # and rounds do not repeat one choice


def test_sampling_is_uniform_over_clients_and_reaches_everyone():
    cfg = _sampling_cfg()
    counts = np.zeros(10, dtype=int)
    first_seen = {}
    for r in range(1, 2001):
        for c in sample_clients(cfg, r):
            counts[c] += 1
            first_seen.setdefault(c, r)
    assert counts.sum() == 2000 * 3
    # Expected 600 each (binomial sd ~ 20); a fixed seed makes this exact, and +-15%
    # (4 sd) would hold for any honest uniform stream.
    assert (np.abs(counts - 600) < 90).all(), counts.tolist()
    assert set(first_seen) == set(range(10)) and max(first_seen.values()) <= 30


# ---------------------------------------------------------------- training learns


def test_repeated_sfprompt_rounds_fit_a_small_shard():
    # One client, its 20 samples, round after round from its own upload, each round on a
    # freshly built worker (as a client actor serves it): prompts and tail must fit the
    # shard. A step that moves nothing, or the wrong way, or an upload or download that
    # loses the trained state, leaves the loss where it started.
    cfg = load_config(None, TINY_CFG + ["prune.keep=1.0", "train.lr=0.01",
                                        "train.prompt_lr=0.01"])
    _, worker, task, _, _ = _sfprompt_setup()
    state = copy.deepcopy(worker.state())
    losses = []
    for round_ in range(1, 17):
        _, worker, _, server, _ = _sfprompt_setup()
        task = ClientTask(client=0, round=round_, indices=task.indices, seed=round_,
                          first_visit=round_ == 1)
        result = METHODS["sfprompt"].client_round(cfg, worker, task, state, server)
        state = {k: v.clone() for k, v in result.state.items()}
        losses.append(result.local_loss)
    assert losses[-1] < 0.5 * losses[0], losses
