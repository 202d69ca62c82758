"""The aggregation rules of fed/aggregation.py against values computed by hand, FedProx's
proximal gradient in every method's client steps, and the server optimizer's state
through checkpoints, resumes and overlapped evaluation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from platform_tests.test_checkpoint import TINY, _same_tables, cut_after_round_1
from platform_tests.test_methods import _worker_and_task

from sfprompt.platform.config.dotted import flatten
from sfprompt.platform.config.load import load_config
from sfprompt.platform.config.schema import FedConfig
from sfprompt.platform.fed.aggregation import AGGREGATIONS, fedavg
from sfprompt.platform.loop.backend import LocalBackend
from sfprompt.platform.loop.progress import Progress
from sfprompt.platform.loop.rounds import run_rounds
from sfprompt.platform.loop.world import World, build_world, initial_progress
from sfprompt.platform.method import steps
from sfprompt.platform.method.client import ClientResult
from sfprompt.platform.method.registry import METHODS
from sfprompt.platform.method.session import Session
from sfprompt.platform.sim.profiles import Profile, ServerProfile
from sfprompt.results.checkpoint import load_checkpoint
from sfprompt.results.experiment import resume_experiment, run_experiment
from sfprompt.results.tables import read_clients, read_rounds


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the rules by hand
#
# Two rounds of two clients with unequal weights, one 2-element parameter "w" and one
# running statistic. Global state before round 1: w = (1, 2).
#   round 1: a = (2, 2) weight 1, b = (3, 0) weight 3
#            average = ((2 + 9)/4, (2 + 0)/4) = (2.75, 0.5);  Δ1 = (1.75, -1.5)
#   round 2: a = (0, 4) weight 3, b = (4, 0) weight 1
#            average = ((0 + 4)/4, (12 + 0)/4) = (1, 3);  Δ2 = (1, 3) - x1
# The statistic is 2 and 1 (weights 1, 3), then 1 and 1: its average, (2 + 3)/4 = 1.25
# then 1, whatever the rule.

STAT = "tail.norm.running_var"
ROUNDS = [([{"w": [2.0, 2.0], STAT: [2.0]}, {"w": [3.0, 0.0], STAT: [1.0]}], [1, 3]),
          ([{"w": [0.0, 4.0], STAT: [1.0]}, {"w": [4.0, 0.0], STAT: [1.0]}], [3, 1])]
STAT_AVERAGES = [(2.0 * 1 + 1.0 * 3) / 4, 1.0]
AVERAGES = [(2.75, 0.5), (1.0, 3.0)]
X0 = (1.0, 2.0)
SERVER = FedConfig(server_lr=0.5, server_momentum=0.5, server_beta2=0.75, server_tau=0.5)


def _two_rounds(name: str, fed: FedConfig = SERVER):
    """The rule's global w and memory after each of the two rounds."""
    state = {"w": torch.tensor(X0), STAT: torch.tensor([5.0])}
    memory: dict = {}
    out = []
    for clients, weights in ROUNDS:
        states = [{k: torch.tensor(v) for k, v in c.items()} for c in clients]
        state, memory = AGGREGATIONS[name](states, weights, state, memory, fed)
        out.append((state, memory))
    return out


def _check(got, want_w, stat_round):
    assert got["w"].dtype == torch.float32
    torch.testing.assert_close(got["w"], torch.tensor(want_w, dtype=torch.float32),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[STAT], torch.tensor([STAT_AVERAGES[stat_round]]))


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_fedavg_and_fedprox_take_the_average_and_remember_nothing(name):
    for r, (state, memory) in enumerate(_two_rounds(name)):
        _check(state, AVERAGES[r], r)
        assert memory == {}


def test_fedavgm_by_hand():
    # lr 0.5, beta 0.5; v starts at 0.
    # round 1: v1 = Δ1 = (1.75, -1.5); x1 = (1, 2) + 0.5 v1 = (1.875, 1.25)
    # round 2: Δ2 = (1 - 1.875, 3 - 1.25) = (-0.875, 1.75)
    #          v2 = 0.5 (1.75, -1.5) + (-0.875, 1.75) = (0, 1); x2 = x1 + 0.5 v2 = (1.875, 1.75)
    (s1, m1), (s2, m2) = _two_rounds("fedavgm")
    _check(s1, (1.875, 1.25), 0)
    _check(s2, (1.875, 1.75), 1)
    assert set(m1) == set(m2) == {"v/w"}  # statistics get no momentum
    torch.testing.assert_close(m1["v/w"], torch.tensor([1.75, -1.5], dtype=torch.float64))
    torch.testing.assert_close(m2["v/w"], torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_fedavgm_without_momentum_at_lr_1_is_fedavg():
    g = torch.Generator().manual_seed(0)
    state = {"p": torch.randn(3, 4, generator=g), "q": torch.randn(5, generator=g)}
    memory: dict = {}
    fed = FedConfig(server_lr=1.0, server_momentum=0.0)
    for _ in range(2):
        states = [{k: torch.randn(v.shape, generator=g) for k, v in state.items()} for _ in "abc"]
        want = fedavg(states, [1, 4, 2])
        state, memory = AGGREGATIONS["fedavgm"](states, [1, 4, 2], state, memory, fed)
        for k in want:  # x + (average - x) rounds to the average in float64, then float32
            assert torch.equal(state[k], want[k]), k


def _adaptive_by_hand(second_moment):
    """Reddi et al.'s Algorithm 2 written out element by element, in Python floats:
    lr 0.5, beta1 0.5, beta2 0.75, tau 0.5; m starts at 0, v at tau² = 0.25."""
    lr, b1, b2, tau = 0.5, 0.5, 0.75, 0.5
    x, m, v = list(X0), [0.0, 0.0], [0.25, 0.25]
    rounds = []
    for average in AVERAGES:
        for i in range(2):
            d = average[i] - x[i]
            m[i] = b1 * m[i] + (1 - b1) * d
            v[i] = second_moment(v[i], d * d, b2)
            x[i] = x[i] + lr * m[i] / (math.sqrt(v[i]) + tau)
        rounds.append((list(x), list(m), list(v)))
    return rounds


def _sign(a: float) -> float:
    return (a > 0) - (a < 0)


HAND_SECOND_MOMENTS = {
    "fedadagrad": lambda v, d2, b2: v + d2,
    "fedadam": lambda v, d2, b2: b2 * v + (1 - b2) * d2,
    "fedyogi": lambda v, d2, b2: v - (1 - b2) * d2 * _sign(v - d2),
}


@pytest.mark.parametrize("name", sorted(HAND_SECOND_MOMENTS))
def test_adaptive_rules_by_hand(name):
    want = _adaptive_by_hand(HAND_SECOND_MOMENTS[name])
    for r, ((state, memory), (x, m, v)) in enumerate(zip(_two_rounds(name), want)):
        _check(state, x, r)
        assert set(memory) == {"m/w", "v/w"}
        torch.testing.assert_close(memory["m/w"], torch.tensor(m, dtype=torch.float64),
                                   rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(memory["v/w"], torch.tensor(v, dtype=torch.float64),
                                   rtol=1e-6, atol=1e-6)


def test_the_first_adaptive_round_by_hand_in_numbers():
    # Round 1 with the numbers written out: m1 = 0.5 Δ1 = (0.875, -0.75) for all three;
    #   adagrad v1 = 0.25 + Δ1² = (3.3125, 2.5)
    #   adam    v1 = 0.75 * 0.25 + 0.25 Δ1² = (0.953125, 0.75)
    #   yogi    v1 = 0.25 - 0.25 Δ1² sign(0.25 - Δ1²) = 0.25 + 0.25 Δ1² = (1.015625, 0.8125)
    #   x1 = (1, 2) + 0.5 m1 / (sqrt(v1) + 0.5)
    for name, v1 in (("fedadagrad", (3.3125, 2.5)), ("fedadam", (0.953125, 0.75)),
                     ("fedyogi", (1.015625, 0.8125))):
        (state, memory), _ = _two_rounds(name)
        assert memory["v/w"].tolist() == list(v1), name
        assert memory["m/w"].tolist() == [0.875, -0.75], name
        x1 = (1 + 0.5 * 0.875 / (math.sqrt(v1[0]) + 0.5),
              2 - 0.5 * 0.75 / (math.sqrt(v1[1]) + 0.5))
        _check(state, x1, 0)


def test_yogi_round_two_takes_both_signs():
    # The case that tells Yogi from Adam: in round 2 one coordinate's Δ² is below v
    # (v shrinks) and the other's above it (v grows), so both branches are checked above.
    (x1, _, v1), _ = _adaptive_by_hand(HAND_SECOND_MOMENTS["fedyogi"])
    d2 = [(AVERAGES[1][i] - x1[i]) ** 2 for i in range(2)]
    assert d2[0] < v1[0] and d2[1] > v1[1]


def test_yogi_leaves_v_where_the_squared_step_equals_it():
    # sign(v - Δ²) = 0 when Δ² = v exactly: v stays tau² = 0.25 for Δ = 0.5, and
    # x = 0 + lr m / (sqrt(v) + tau) with m = (1 - beta1) Δ = 0.25.
    state, memory = AGGREGATIONS["fedyogi"]([{"w": torch.tensor([0.5])}], [1],
                                            {"w": torch.tensor([0.0])}, {}, SERVER)
    assert memory["v/w"].tolist() == [0.25] and memory["m/w"].tolist() == [0.25]
    assert state["w"].tolist() == [0.5 * 0.25 / (0.5 + 0.5)]


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_rules_leave_their_inputs_alone(name):
    state = {"w": torch.tensor(X0), STAT: torch.tensor([5.0])}
    (s1, m1), _ = _two_rounds(name)
    before = ({k: v.clone() for k, v in s1.items()}, {k: v.clone() for k, v in m1.items()})
    clients, weights = ROUNDS[1]
    AGGREGATIONS[name]([{k: torch.tensor(v) for k, v in c.items()} for c in clients], weights,
                       s1, m1, SERVER)
    for got, want in zip((s1, m1), before):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert state["w"].tolist() == list(X0)


class _HandClients:
    """A backend whose clients upload ROUNDS' states with ROUNDS' weights as kept samples."""

    def __init__(self, overlaps: bool) -> None:
        self.overlaps_evaluation = overlaps

    def run_clients(self, tasks, global_state):
        clients, weights = ROUNDS[tasks[0].round - 1]
        return [ClientResult(t.client, {k: torch.tensor(v) for k, v in clients[t.client].items()},
                             num_samples=10, num_kept=weights[t.client], train_loss=0.5,
                             local_loss=0.5, client_flops=1)
                for t in tasks]

    def evaluate(self, global_state):
        return lambda: (0.0, 0.0)


class _NoSplit:
    def client(self):
        return torch.nn.Linear(2, 1)


@pytest.mark.parametrize("overlaps", [False, True])
def test_the_round_loop_carries_the_server_memory_from_round_to_round(overlaps):
    # fedavgm through run_rounds, the settings from the config: the numbers of
    # test_fedavgm_by_hand, x2 = (1.875, 1.75) and v2 = (0, 1), need round 1's v in round 2.
    cfg = load_config(None, ["fed.num_clients=2", "fed.clients_per_round=2", "fed.rounds=2",
                             "fed.aggregation=fedavgm", "fed.server_lr=0.5",
                             "fed.server_momentum=0.5"])
    profiles = [Profile("hand", 1e9, 1e6, 1e6, 0.0, 0.0, 1.0, 0)] * 2
    world = World(cfg, None, [np.arange(10)] * 2, _NoSplit(), {}, profiles,
                  ServerProfile("s", 1e12, 1))
    progress = Progress({"w": torch.tensor(X0), STAT: torch.tensor([5.0])})
    states = []
    for row, outcomes in run_rounds(world, _HandClients(overlaps), progress):
        assert [o.status for o in outcomes] == ["ok", "ok"]
        states.append((dict(progress.global_state), dict(progress.aggregator)))
    (s1, m1), (s2, m2) = states
    _check(s1, (1.875, 1.25), 0)
    _check(s2, (1.875, 1.75), 1)
    assert m1["v/w"].tolist() == [1.75, -1.5] and m2["v/w"].tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- FedProx on the clients

BASE = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
        "data.name=digits", "prompt.length=2", "run.backend=local", "train.batch_size=4",
        "train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0",
        "train.lr=0.1", "train.prompt_lr=0.1", "train.pretrained_lr=0.1"]


def _one_prox_step(mu: float, lr: float = 0.5):
    """A Session's optimizer stepping once from trainable parameters moved away from the
    downloaded global state: (global state, parameters before the step, after it)."""
    cfg = load_config(None, BASE + ["fed.aggregation=fedprox", f"fed.prox_mu={mu}",
                                    f"train.lr={lr}", f"train.prompt_lr={lr}",
                                    f"train.pretrained_lr={lr}"])
    _, worker, task, _ = _worker_and_task("sfprompt")
    global_state = {k: v.clone() for k, v in worker.state().items()}
    s = Session(cfg, worker, task, global_state)
    params = {n: p for n, p in worker.client_model.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as if earlier steps had moved them
        for p in params.values():
            p.add_(torch.randn(p.shape, generator=g))
    before = {n: p.detach().clone() for n, p in params.items()}
    images, labels = next(s.batches(task.indices))
    with worker.split.training():
        loss = F.cross_entropy(worker.split.local(images), labels)
    loss.backward()
    steps.apply_step(s.optimizer, loss)
    return global_state, before, {n: p.detach().clone() for n, p in params.items()}


def test_a_prox_step_moves_toward_the_global_state_by_lr_mu_times_the_distance():
    # Plain SGD: p <- p - lr (grad + mu (p - g)), so against mu = 0 the step differs by
    # exactly -lr mu (p - g): lr 0.5, mu 0.5 give a quarter of the way back to g.
    global_state, before, with_prox = _one_prox_step(mu=0.5)
    _, before_0, without = _one_prox_step(mu=0.0)
    assert before.keys() == with_prox.keys() and len(before) > 0
    for name in before:
        assert torch.equal(before[name], before_0[name])
        pull = 0.5 * 0.5 * (before[name] - global_state[name])
        assert pull.abs().max() > 0.01, name
        torch.testing.assert_close(without[name] - with_prox[name], pull, rtol=1e-5, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_client_step_of_every_method_adds_the_proximal_gradient(method, monkeypatch):
    # Every optimizer step of the client's round, seen from outside: with plain SGD the
    # new parameter is p - lr (loss gradient + mu (p - downloaded global)).
    mu = 0.5
    cfg = load_config(None, BASE + [f"train.method={method}", "train.split_epochs=2",
                                    "prune.keep=1", "fed.aggregation=fedprox",
                                    f"fed.prox_mu={mu}"])
    _, worker, task, server = _worker_and_task(method)
    global_state = {k: v.clone() for k, v in worker.state().items()}
    names = {id(p): n for n, p in worker.client_model.named_parameters()}
    real_step, checked = steps.apply_step, []

    def watched_step(optimizer, loss):
        seen = [(p, group["lr"], p.detach().clone(), p.grad.clone())
                for group in optimizer.param_groups for p in group["params"]
                if p.grad is not None]
        real_step(optimizer, loss)
        for p, lr, p0, grad in seen:
            anchor = global_state[names[id(p)]]
            torch.testing.assert_close(p.detach(), p0 - lr * (grad + mu * (p0 - anchor)),
                                       rtol=1e-5, atol=1e-7)
        checked.append(any(not torch.equal(p0, global_state[names[id(p)]])
                           for p, _, p0, _ in seen))

    monkeypatch.setattr(steps, "apply_step", watched_step)
    METHODS[method].client_round(cfg, worker, task, global_state, server)
    assert len(checked) >= 4 and sum(checked) >= 3  # all but the first step were away from g


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fedprox_with_mu_0_trains_exactly_as_fedavg(method):
    results = []
    for extra in (["fed.aggregation=fedavg"], ["fed.aggregation=fedprox", "fed.prox_mu=0"],
                  ["fed.aggregation=fedprox", "fed.prox_mu=0.5"]):
        cfg = load_config(None, BASE + [f"train.method={method}", "prune.keep=1", *extra])
        _, worker, task, server = _worker_and_task(method)
        results.append(METHODS[method].client_round(cfg, worker, task, worker.state(), server))
    fedavg_run, mu_0, mu_half = results
    assert all(torch.equal(mu_0.state[k], v) for k, v in fedavg_run.state.items())
    # The global state given is the worker's own parameters here (worker.state()), so the
    # pull must be toward a copy of it, not toward the parameters as they move.
    assert any(not torch.equal(mu_half.state[k], v) for k, v in fedavg_run.state.items())
    assert mu_0.train_loss == fedavg_run.train_loss
    assert mu_0.client_flops == mu_half.client_flops == fedavg_run.client_flops
    assert mu_0.bytes == mu_half.bytes == fedavg_run.bytes


# ---------------------------------------------------------------- whole runs

RUN = TINY + ["fed.rounds=2"]


def _run_columns(run_dir) -> dict[str, pd.DataFrame]:
    """The run's tables without wall-clock columns and without the config columns."""
    config = set(flatten(load_config(None, RUN)))
    out = {}
    for read in (read_rounds, read_clients):
        table = read(run_dir)
        out[read.__name__] = table[[c for c in table.columns
                                    if c not in config and c not in ("wall_seconds", "run_id")]]
    return out


def test_fedprox_runs_as_fedavg_at_mu_0_and_differently_above(tmp_path):
    runs = {name: run_experiment(load_config(None, RUN + [f"run.out_dir={tmp_path}",
                                                          f"run.run_id={name}", *extra]))
            for name, extra in (("fedavg", []),
                                ("mu0", ["fed.aggregation=fedprox", "fed.prox_mu=0"]),
                                ("mu1", ["fed.aggregation=fedprox", "fed.prox_mu=1"]))}
    tables = {name: _run_columns(d) for name, d in runs.items()}
    for table in tables["fedavg"]:
        pd.testing.assert_frame_equal(tables["mu0"][table], tables["fedavg"][table],
                                      check_exact=True)
    state = {name: load_checkpoint(d)[0].global_state for name, d in runs.items()}
    assert all(torch.equal(state["mu0"][k], v) for k, v in state["fedavg"].items())
    assert any(not torch.equal(state["mu1"][k], v) for k, v in state["fedavg"].items())
    # The proximal gradient is element-wise: the FLOP count (matrix products) is the same.
    pd.testing.assert_series_equal(tables["mu1"]["read_rounds"]["flops.client"],
                                   tables["fedavg"]["read_rounds"]["flops.client"])


def test_fedadam_interrupted_after_round_1_resumes_to_the_same_numbers(tmp_path):
    overrides = TINY + [f"run.out_dir={tmp_path}", "fed.aggregation=fedadam",
                        "fed.server_lr=0.01"]
    reference = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))

    run_dir = cut_after_round_1(overrides, tmp_path)
    progress, _, _ = load_checkpoint(run_dir)
    assert progress.round == 1 and progress.aggregator  # the moments were saved
    assert {k.partition("/")[0] for k in progress.aggregator} == {"m", "v"}
    resume_experiment(run_dir)
    _same_tables(run_dir, reference)
    final, whole = load_checkpoint(run_dir)[0], load_checkpoint(reference)[0]
    assert final.aggregator.keys() == whole.aggregator.keys()
    assert all(torch.equal(final.aggregator[k], v) for k, v in whole.aggregator.items())


class _Overlapping(LocalBackend):
    """The local backend, but the loop runs a round ahead of each evaluation, as the Ray
    backend's off-critical-path evaluation makes it."""

    overlaps_evaluation = True


def test_overlapped_evaluation_sees_each_rounds_state_and_server_memory():
    cfg = load_config(None, TINY + ["fed.aggregation=fedyogi", "fed.server_lr=0.01"])
    seen = {}
    for backend in (LocalBackend, _Overlapping):
        world = build_world(cfg)
        rows = []
        progress = initial_progress(world)
        for row, _ in run_rounds(world, backend(world), progress):
            rows.append((row["round"], row["loss"], progress.round,
                         {k: v.clone() for k, v in progress.global_state.items()},
                         {k: v.clone() for k, v in progress.aggregator.items()}))
        seen[backend] = rows
    plain, ahead = seen[LocalBackend], seen[_Overlapping]
    assert len(plain) == len(ahead) == 3
    for (r, loss, done, state, memory), (r2, loss2, done2, state2, memory2) in zip(plain, ahead):
        assert (r, loss, done) == (r2, loss2, done2) and done == r
        assert memory and memory.keys() == memory2.keys()
        assert all(torch.equal(memory[k], memory2[k]) for k in memory)
        assert all(torch.equal(state[k], state2[k]) for k in state)


def test_fedavg_of_one_state_is_it_and_weights_need_not_sum_to_one():
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    (only,) = fedavg([a], [0.5]).values()
    assert only.dtype == torch.float16 and torch.equal(only, a["w"])
    b = {"w": torch.tensor([3.0, 6.0], dtype=torch.float16)}
    assert torch.equal(fedavg([a, b], [0.25, 0.25])["w"], torch.tensor([2.0, 4.0]).half())


def test_aggregation_refuses_bad_input_in_one_line_naming_it():
    a, b = {"w": torch.ones(2)}, {"v": torch.ones(2)}
    for call, message in (
            (lambda: fedavg([], []), "fedavg needs at least one client state"),
            (lambda: fedavg([a], [1, 2]), "fedavg got 1 states but 2 weights"),
            (lambda: fedavg([a, a], [0, 0]), "fedavg weights must sum to a positive number"),
            (lambda: fedavg([a, b], [1, 1]), "fedavg states have different parameter names"),
            (lambda: AGGREGATIONS["fedadam"]([{**a, **b}], [1], a, {}, FedConfig()),
             "client states hold ['v'], which the global state lacks")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message
    with pytest.raises(Exception, match="unknown aggregation 'fedsgd'"):
        AGGREGATIONS["fedsgd"]
