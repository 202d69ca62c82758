"""log.tensorboard: a run's rounds as TensorBoard scalars, read back with TensorBoard's
own event reader and compared with rounds.parquet."""

import pytest

pytest.importorskip("tensorboard")  # the optional extra; the test extra installs it
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import sfprompt  # noqa: E402
from sfprompt.results.scalars import TENSORBOARD_DIR, Scalars  # noqa: E402

TINY = {"model.weights": "random", "model.name": "vit_tiny_patch16_224", "model.img_size": 32,
        "data.name": "digits", "data.max_samples": 40, "fed.num_clients": 2,
        "fed.clients_per_round": 2, "fed.rounds": 2, "fed.partition": "iid",
        "train.batch_size": 8, "prompt.length": 2, "run.backend": "local"}


def _read(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return events


def test_every_round_column_is_a_scalar_with_the_tables_value(tmp_path):
    run = sfprompt.run(**TINY, **{"log.tensorboard": True, "run.out_dir": str(tmp_path)})
    events = _read(run.dir)
    rounds = run.rounds
    tags = set(events.Tags()["scalars"])
    assert {"accuracy", "loss", "bytes.up", "flops.client", "sim.elapsed_seconds"} <= tags
    assert not tags & {"round", "fed.rounds", "train.lr"}  # the step, and config columns
    for tag in ("accuracy", "bytes.up", "sim.elapsed_seconds"):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r, pytest.approx(v, rel=1e-6)) for r, v in
                          zip(rounds["round"], rounds[tag])], tag  # float32 in the event


def test_off_by_default_and_a_resume_logs_each_round_once(tmp_path):
    run = sfprompt.run(**{**TINY, "fed.rounds": 1}, **{"run.out_dir": str(tmp_path)})
    assert not (run.dir / TENSORBOARD_DIR).exists()
    # A killed process logged round 3 past its checkpoint; the resumed one logs it again.
    first = Scalars(tmp_path, True, next_round=1)
    for r in (1, 2, 3):
        first.write({"round": r, "accuracy": 0.1 * r})
    first.close()
    again = Scalars(tmp_path, True, next_round=3)
    again.write({"round": 3, "accuracy": 0.5})
    again.close()
    logged = [(e.step, e.value) for e in _read(tmp_path).Scalars("accuracy")]
    assert logged == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, 0.5)]
