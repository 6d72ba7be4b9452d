"""The Optuna outer loop: a two-objective study (maximise accuracy, minimise relative cost) over the cost target.

Each Optuna trial picks one value of the outer variable — the cost-target ratio ``target`` (log-uniform,
scale-free: every search lands near its target, so a log grid spreads the front evenly), or the penalty
weight ``weight`` — and runs one inner search. The study starts from log-spaced values enqueued once,
then the sampler (TPE by default) fills the gaps in the front.

Storage: an SQLite file by default. Trials keep a heartbeat (``RDBStorage``), so a trial whose process
was killed is marked failed and retried with the same value by the next worker that runs
(``RetryHeartbeatStaleTrialCallback``); finished trials are never run again. A trial whose process died on
this host is retried at once, heartbeat or not (:mod:`~nni_udc.pareto.owners`), and
:func:`run_until_complete` ends only when the study has its completed trials, waiting for the trials other
workers still run. PostgreSQL URLs let several workers on several machines share one study;
``journal:FILE`` uses Optuna's journal file (no heartbeat).

Example:
    >>> initial_values(0.01, 1.0, 3)
    [0.01, 0.1, 1.0]
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from nni_udc.pareto.owners import retry_dead
from nni_udc.registry import SAMPLERS

__all__ = ["DIRECTIONS", "OBJECTIVES", "enough", "finished", "initial_values", "make_sampler", "open_study", "requeue",
           "run_until_complete", "suggest"]

#: the objectives, in order, and their directions
OBJECTIVES = ("accuracy", "relative_cost")
DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")


def initial_values(low: float, high: float, n: int) -> list[float]:
    """``n`` log-spaced values from ``low`` to ``high`` (both included), rounded to 4 significant digits."""
    if n <= 0:
        return []
    if n == 1:
        return [float(f"{math.sqrt(low * high):.4g}")]
    step = (math.log(high) - math.log(low)) / (n - 1)
    return [float(f"{math.exp(math.log(low) + i * step):.4g}") for i in range(n)]


def suggest(trial: optuna.trial.BaseTrial, variable: str, low: float, high: float) -> float:
    """The outer variable of one trial (log-uniform in ``[low, high]``)."""
    return trial.suggest_float(variable, low, high, log=True)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by its registered name (:data:`nni_udc.registry.SAMPLERS`: ``tpe``, ``gp``, ``random``,
    ``qmc``, ``nsga2``); an unknown name raises ``ValueError`` listing the registered ones."""
    sampler: optuna.samplers.BaseSampler = SAMPLERS[name](seed)
    return sampler


def _storage(url: str, heartbeat_interval: int, grace_period: int) -> Any:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url[len("journal:"):]
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # Optuna calls the heartbeat "experimental" (since 2.8, still in 5.0)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (IntegrityError, OperationalError, ProgrammingError):
            # Workers that start together on an empty database race to create Optuna's tables; the loser
            # fails with a duplicate key (PostgreSQL: or "relation already exists"). The tables exist a moment later.
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def open_study(*, storage: str | None, name: str, sampler: str = "tpe", seed: int = 0, variable: str = "target",
               low: float, high: float, initial: int = 4, heartbeat_interval: int = 10,
               grace_period: int = 30) -> optuna.Study:
    """Create the study, or load it to resume, and enqueue the initial log-spaced values (once).

    ``storage=None`` keeps the study in memory.
    """
    backend = None if storage is None else _storage(storage, heartbeat_interval, grace_period)
    try:
        study = optuna.create_study(storage=backend, study_name=name, directions=list(DIRECTIONS),
                                    sampler=make_sampler(sampler, seed))
    except optuna.exceptions.DuplicatedStudyError:  # resuming, or another worker created it: it enqueued the grid
        # A worker of its own seed: workers with one seed would suggest the very same values at the same time.
        return optuna.load_study(study_name=name, storage=backend,  # type: ignore[arg-type]  # never in memory
                                 sampler=make_sampler(sampler, seed + os.getpid()))
    with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    for value in initial_values(low, high, initial):
        study.enqueue_trial({variable: value})
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def enough(study: optuna.Study, trial: optuna.trial.BaseTrial, trials: int) -> bool:
    """Whether the study's completed and running searches (other workers' included) already reach ``trials``."""
    states = (TrialState.COMPLETE, TrialState.RUNNING)
    others = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
    return len(others) >= trials


def requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a trial that came from the queue (an initial value, a retry) back into it, as it was.

    A worker that finds the study already has enough searches prunes the trial it just asked for; a queued
    value must not be lost with it. Trials the sampler proposed are not queued again.
    """
    frozen = study._storage.get_trial(trial._trial_id)  # a live Trial does not show its system attributes
    system = frozen.system_attrs
    if "fixed_params" not in system and "failed_trial" not in system:
        return
    kept = {k: v for k, v in system.items() if k in ("failed_trial", "retry_history")}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=frozen.params,
                                              distributions=frozen.distributions, system_attrs=kept))


@contextmanager
def _one_line_failures(catch: tuple[type[Exception], ...]) -> Iterator[None]:
    """Optuna logs a caught failure with its traceback, then "failed with value None"; for the failures the loop
    expects, the line with the message suffices."""
    expected: dict[str, str | None] = {"trial": None}

    def drop_traceback(record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], catch):
            record.exc_info, expected["trial"] = None, record.getMessage().split()[1]
            return True
        if expected["trial"] is not None and record.getMessage() == f"Trial {expected['trial']} failed with value None.":
            expected["trial"] = None
            return False
        return True

    logger = logging.getLogger("optuna.study._optimize")
    logger.addFilter(drop_traceback)
    try:
        yield
    finally:
        logger.removeFilter(drop_traceback)


def run_until_complete(study: optuna.Study, objective: Callable[[optuna.Trial], Any], trials: int, *,
                       catch: tuple[type[Exception], ...] = (),
                       callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
                       give_up: Callable[[], bool] = lambda: False, poll: float = 1.0) -> None:
    """Run ``objective`` until ``study`` has ``trials`` completed trials, whichever worker completes them.

    Before each round, trials whose process died on this host are failed and queued again
    (:func:`~nni_udc.pareto.owners.retry_dead`) and stale heartbeats are failed (and retried, by the storage's
    callback). While the trials other workers run would complete the study, this worker waits (``poll``
    seconds at a time) instead of searching more: should one of those workers die, its trial is retried here.
    Trials failing with an exception of ``catch`` are FAIL and the loop goes on; ``give_up`` ends it early
    (e.g. when too many searches failed).
    """
    while True:
        retry_dead(study)
        with warnings.catch_warnings():  # Optuna calls the heartbeat helpers "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))]
        complete, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)  # one snapshot
        if complete >= trials or give_up():
            return
        if complete + running >= trials:
            time.sleep(poll)
            continue
        with _one_line_failures(catch):
            study.optimize(objective, n_trials=trials - complete - running, catch=catch, gc_after_trial=True,
                           callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE,)), *callbacks])
