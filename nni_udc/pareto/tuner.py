"""An NNI tuner with the two-objective Optuna study of the outer loop inside (for ``nnictl``).

:class:`OptunaTuner` drives the same study as ``nni-udc pareto`` — maximise accuracy, minimise relative
cost — but NNI's manager runs the trials: the tuner asks Optuna for one value of the outer variable (the
cost target ``target``, or the penalty weight ``weight``), NNI starts a trial with it, and the trial's
final result is told back to the study. Register it once (``nni-udc nnictl-register``, or
``python -m nni_udc.pareto.nnictl register``) and name it in an NNI v2 experiment file::

    searchSpace: {}                    # ignored: the tuner owns its one variable (see below)
    trialCommand: python -m nni_udc.pareto.nnictl trial search.yaml
    trialCodeDirectory: .
    trialConcurrency: 1
    maxTrialNumber: 8
    tuner:
      name: nni_udc_optuna
      classArgs: {low: 0.03, high: 0.3, variable: target, sampler: tpe, seed: 0, initial: 4}
    trainingService: {platform: local}

The tuner owns its search space: one log-uniform float named ``variable`` in ``[low, high]``. The
experiment's ``searchSpace`` is ignored, so ``{}`` (or any placeholder, for tools that want one) will do.

Each trial must report a dict (``nni.report_final_result``) with ``'default'`` (the validation accuracy,
which NNI's WebUI plots) and ``'relative_cost'``; the rest (``'arch'``, the architecture as a JSON string,
``'test_accuracy'``, every other number as a cost, ...) is read as a
:class:`~nni_udc.pareto.record.TrialRecord` (:meth:`~nni_udc.pareto.record.TrialRecord.from_nni_metric`) and
stored as the Optuna trial's user attributes exactly as ``nni-udc pareto`` stores them. The trial command
:func:`nni_udc.cli.nnictl.trial` reports a whole record (:meth:`~nni_udc.pareto.record.TrialRecord.to_nni_metric`).

With ``storage`` (an Optuna storage URL: ``sqlite:///study.db``, ``postgresql+psycopg2://…``,
``journal:FILE``) the study outlives the experiment and other tools (``optuna-dashboard``, the front
files of :mod:`nni_udc.pareto.front`) can read it; without, it lives in the tuner's memory, and a
resumed experiment rebuilds it from the results NNI hands back (:meth:`OptunaTuner.import_data`).

Example:
    >>> tuner = OptunaTuner(low=0.05, high=0.2, initial=2)
    >>> tuner.generate_parameters(0), tuner.generate_parameters(1)
    ({'target': 0.05}, {'target': 0.2})
    >>> tuner.receive_trial_result(0, {'target': 0.05}, {'default': 0.9, 'relative_cost': 0.04, 'arch': '{}'})
    >>> tuner.trial_end(1, success=False)
    >>> [(t.state.name, t.values) for t in tuner.study.trials]
    [('COMPLETE', [0.9, 0.04]), ('FAIL', None)]
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import optuna
from nni.tuner import Tuner
from optuna.trial import TrialState

from nni_udc.pareto.record import TrialRecord
from nni_udc.pareto.study import initial_values, open_study, suggest
from nni_udc.registry import VARIABLES

__all__ = ["VARIABLES", "OptunaTuner"]

_logger = logging.getLogger(__name__)

def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"OptunaTuner: classArgs.{name} must be a finite number, but got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"OptunaTuner: classArgs.{name} must be an integer >= 0, but got {value!r}")
    return value


class OptunaTuner(Tuner):
    """NNI tuner: a two-objective Optuna study (accuracy ↑, relative cost ↓) over one outer variable.

    Args:
        low, high: bounds of the variable (log-uniform; ``0 < low < high``, and ``high <= 1`` for ``target``).
        variable: ``'target'`` (the cost-target ratio) or ``'weight'`` (the penalty weight λ).
        sampler: Optuna sampler: ``tpe``, ``gp``, ``random``, ``qmc`` or ``nsga2``.
        seed: the sampler's seed.
        initial: how many log-spaced values (``low`` … ``high``) the study tries first.
        storage: Optuna storage URL; ``None`` keeps the study in memory.
        study_name: the study's name in ``storage`` (an existing study is resumed).
    """

    def __init__(self, low: float, high: float, variable: str = "target", sampler: str = "tpe", seed: int = 0,
                 initial: int = 4, storage: str | None = None, study_name: str = "nni-udc") -> None:
        super().__init__()  # Recoverable: NNI's resume bookkeeping
        low, high = _number("low", low), _number("high", high)
        if variable not in VARIABLES:  # the outer variables of nni_udc.registry, as in pareto.variable
            raise ValueError(f"OptunaTuner: classArgs.variable must be one of {', '.join(VARIABLES)}, "
                             f"but got {variable!r}")
        if low <= 0:
            raise ValueError(f"OptunaTuner: classArgs.low must be > 0 (the variable is log-uniform), but got {low:g}")
        if low >= high:
            raise ValueError(f"OptunaTuner: classArgs.low must be smaller than classArgs.high, but got "
                             f"low={low:g}, high={high:g}")
        if variable == "target" and high > 1:
            raise ValueError(f"OptunaTuner: classArgs.high must be <= 1 for variable 'target' (a fraction of the "
                             f"float model's cost), but got {high:g}")
        seed, initial = _integer("seed", seed), _integer("initial", initial)
        if storage is not None and (not isinstance(storage, str) or not storage):
            raise ValueError(f"OptunaTuner: classArgs.storage must be an Optuna storage URL (sqlite:///FILE, "
                             f"postgresql+psycopg2://USER@HOST/DB, journal:FILE) or null, but got {storage!r}")
        if not isinstance(study_name, str) or not study_name:
            raise ValueError(f"OptunaTuner: classArgs.study_name must be a non-empty string, but got {study_name!r}")
        self.low, self.high, self.variable, self.initial = low, high, variable, initial
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # Optuna calls the heartbeat storage "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                # initial=0: the initial values are enqueued on the first request, after a resume's import_data
                self.study = open_study(storage=storage, name=study_name, sampler=sampler, seed=seed,
                                        variable=variable, low=low, high=high, initial=0)
            except ValueError as error:  # an unknown sampler
                raise ValueError(f"OptunaTuner: classArgs.sampler: {error}") from None
        self._enqueued = False
        self._open: dict[int, optuna.Trial] = {}  # NNI parameter id -> the Optuna trial it runs

    # ----- NNI's calls --------------------------------------------------------------------------------

    def update_search_space(self, search_space: Any) -> None:
        """Accept any search space: the tuner owns its one variable (the experiment's ``searchSpace`` may be ``{}``)."""
        if search_space:
            _logger.info("OptunaTuner ignores the experiment's searchSpace %s; it tunes %r in [%g, %g] itself",
                         search_space, self.variable, self.low, self.high)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, float]:
        """Ask the study for a trial (the ``initial`` log-spaced values first); return ``{variable: value}``."""
        if not self._enqueued:
            # Enqueued here, not in __init__, so that values a resumed experiment imported are not run again.
            for value in initial_values(self.low, self.high, self.initial):
                self.study.enqueue_trial({self.variable: value}, skip_if_exists=True)
            self._enqueued = True
        trial = self.study.ask()
        value = float(suggest(trial, self.variable, self.low, self.high))
        trial.set_user_attr("nni_parameter_id", parameter_id)
        self._open[parameter_id] = trial
        return {self.variable: value}

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Tell the study the trial's ``(value['default'], value['relative_cost'])``; keep its record as attrs.

        A result without both numbers fails the Optuna trial (with a logged error) instead of stopping the tuner.
        """
        trial = self._open.pop(parameter_id, None)
        if trial is None:
            _logger.warning("OptunaTuner: a result for unknown or finished parameter id %s is ignored: %s",
                            parameter_id, value)
            return
        try:
            record = TrialRecord.from_nni_metric(value, variable=self.variable)
        except ValueError as error:
            _logger.error("OptunaTuner: trial of parameter id %s reported a result it cannot use (%s); "
                          "marking it failed", parameter_id, error)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        if record.value is not None and not math.isclose(record.value, trial.params[self.variable]):
            _logger.warning("OptunaTuner: parameter id %s ran %s=%s, but the tuner gave %s", parameter_id,
                            self.variable, record.value, trial.params[self.variable])
        for key, val in record.to_user_attrs().items():
            trial.set_user_attr(key, val)
        if kwargs.get("trial_job_id"):
            trial.set_user_attr("nni_trial_job_id", kwargs["trial_job_id"])
        objectives = [record.accuracy, record.relative_cost]
        self.study.tell(trial, objectives)
        _logger.info("OptunaTuner: trial %d (%s=%.4g): accuracy %.4f, relative cost %.4g; %d on the front",
                     trial.number, self.variable, trial.params[self.variable], *objectives,
                     len(self.study.best_trials))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """Fail the Optuna trial of a NNI trial that ended unsuccessfully without a final result."""
        if not success and parameter_id in self._open:
            self.study.tell(self._open.pop(parameter_id), state=TrialState.FAIL)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Add finished trials of a resumed experiment (``[{'parameter': {...}, 'value': {...}}]``) to the study.

        The variable's value is read from the reported dict when it is there (NNI's stored ``hyperParameters``
        can belong to another trial, microsoft/nni#5726); trials the study already holds (a persistent
        ``storage``) are skipped.
        """
        distribution = optuna.distributions.FloatDistribution(self.low, self.high, log=True)
        for entry in data:
            parameter = entry.get("parameter") or {}
            try:
                record = TrialRecord.from_nni_metric(entry.get("value"), variable=self.variable)
            except ValueError as error:
                _logger.warning("OptunaTuner: not importing %s: %s", entry, error)
                continue
            x = record.value if record.value is not None else parameter.get(self.variable)
            if not isinstance(x, (int, float)) or not self.low <= x <= self.high:
                _logger.warning("OptunaTuner: not importing %s: %s is not in [%g, %g]", entry, self.variable,
                                self.low, self.high)
                continue
            objectives = [record.accuracy, record.relative_cost]
            if self._holds(float(x), objectives):
                continue
            self.study.add_trial(optuna.trial.create_trial(params={self.variable: float(x)},
                                                           distributions={self.variable: distribution},
                                                           values=objectives, user_attrs=record.to_user_attrs()))

    # ----- helpers --------------------------------------------------------------------------------------

    def _holds(self, x: float, objectives: list[float]) -> bool:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if math.isclose(t.params.get(self.variable, math.nan), x) and t.values == objectives:
                return True
        return False
