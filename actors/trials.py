"""Parallel trials of a study on Ray: N trials at once, each in a reserved bundle of CPUs.

`RayExecutor` is the executor `studies.runner.run_study(..., make_executor=...)` takes
for `parallel.trials > 1` (the CLI passes it): it lives here, not in `studies`, so that
Ray stays in `actors/`.

One placement group holds N bundles of `cpus_per_trial` CPUs. A trial is a Ray task
pinned to a free bundle, so N trials never ask for more than the group reserved: no
oversubscription, and since a trial starts no actors of its own (trial.py), nothing
inside a trial can wait on resources held by another. The group is reserved before the
first trial and released at the end; if the cluster cannot hold it, the study stops
with a one-line error instead of waiting forever.

On a cluster nothing changes: `ray.init()` joins the cluster named by `RAY_ADDRESS`
(or a Ray session the caller already started with `ray.init(address=...)` is used
as it is), and the bundles spread over its nodes. The study directory must then be
on a file system every node sees (trials write their run directories there), and a
trial pruner needs a storage every node can reach: a shared journal file, or
`storage.url` naming a database server.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import optuna

from sfprompt.platform.errors import SfpromptError, first_line
from sfprompt.studies.strategies import make_trial_pruner
from sfprompt.studies.runner import Pruning
from sfprompt.studies.trial import TrialOutcome, TrialRequest, execute_trial, optuna_reporter

log = logging.getLogger(__name__)
_READY_TIMEOUT_S = 120  # a cluster may need to start nodes for the group

def run_in_worker(request: TrialRequest, trial_id: int, pruning: Pruning | None) -> TrialOutcome:
    """The Ray task body: one trial, reporting to the shared storage if a pruner watches."""
    report = None
    if pruning is not None:
        ref, name, pruner, options = pruning
        study = optuna.load_study(study_name=name, storage=ref.open(),
                                  pruner=make_trial_pruner(pruner, options))
        report = optuna_reporter(optuna.trial.Trial(study, trial_id))
    return execute_trial(request, report)


class RayExecutor:
    def __init__(self, parallel: int, cpus_per_trial: float, pruning: Pruning | None) -> None:
        self.parallel, self.cpus, self.pruning = parallel, cpus_per_trial, pruning
        self._pending: dict[Any, tuple[optuna.Trial, int]] = {}  # ObjectRef -> (trial, bundle)
        self._free = list(range(parallel))

    @property
    def running(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return bool(self._free)

    def __enter__(self) -> "RayExecutor":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file for a local run
        import ray
        from ray.util.placement_group import placement_group

        self._started = not ray.is_initialized()
        if self._started:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        need, have = self.parallel * self.cpus, ray.cluster_resources().get("CPU", 0)
        if need > have:
            self._close()
            raise SfpromptError(f"parallel.trials: {self.parallel} trials x {self.cpus:g} CPUs "
                                f"need {need:g} CPUs, the Ray cluster has {have:g}")
        self._group = placement_group([{"CPU": self.cpus}] * self.parallel, strategy="SPREAD")
        try:
            ray.get(self._group.ready(), timeout=_READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self._close()
            raise SfpromptError(f"parallel.trials: Ray could not reserve {self.parallel} x "
                                f"{self.cpus:g} CPUs within {_READY_TIMEOUT_S} s") from None
        self._task = ray.remote(num_cpus=self.cpus, max_retries=0)(run_in_worker)
        log.info("Ray: %d trial slots of %g CPUs reserved", self.parallel, self.cpus)
        return self

    def __exit__(self, *exc) -> None:
        import ray

        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()
        self._close()

    def _close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        if getattr(self, "_group", None) is not None:
            remove_placement_group(self._group)
            self._group = None
        if self._started:
            ray.shutdown()

    def submit(self, trial: optuna.Trial, request: TrialRequest) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = self._free.pop()
        strategy = PlacementGroupSchedulingStrategy(self._group, placement_group_bundle_index=bundle)
        # The storage id, not the number: the worker attaches to this very trial.
        ref = self._task.options(scheduling_strategy=strategy).remote(
            request, trial._trial_id, self.pruning)
        self._pending[ref] = (trial, bundle)

    def next_done(self) -> tuple[optuna.Trial, TrialOutcome]:
        import ray

        [ref], _ = ray.wait(list(self._pending), num_returns=1)
        trial, bundle = self._pending.pop(ref)
        self._free.append(bundle)
        try:
            return trial, ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker died (e.g. out of memory)
            return trial, TrialOutcome("fail", attrs={"fail_reason": f"Ray: {first_line(err)}"})
