"""One record of an outer-loop trial, and the only place that names its keys in storage and in NNI metrics.

A :class:`TrialRecord` is one finished search of the accuracy-vs-cost study: the value of the outer variable it
ran with, the architecture it found, its validation and test accuracy, every exact cost with the uncompressed
reference's, and where its files are. ``nni-udc pareto`` (:func:`nni_udc.experiment.run_pareto`) and the nnictl
tuner (:class:`~nni_udc.pareto.tuner.OptunaTuner`) store it in the same Optuna user attributes
(:meth:`~TrialRecord.to_user_attrs`), so :meth:`~TrialRecord.from_trial` reads either study back;
:meth:`~TrialRecord.to_nni_metric` is the final result an NNI trial reports (``nni-udc nnictl-trial``) and
:meth:`~TrialRecord.from_nni_metric` what the tuner makes of it. :meth:`~TrialRecord.point` is the record as the
front functions of :mod:`nni_udc.pareto.front` take it, and :meth:`~TrialRecord.points` adds the cheaper models a
search exported beside its own (its ``ladder``, UDC's ``exports``).

Neither torch nor NNI is imported here.

Example:
    >>> record = TrialRecord(number=3, variable="target", value=0.1, accuracy=0.9, relative_cost=0.08,
    ...                      test_accuracy=0.88, costs={"memory_bits": 800.0}, reference_costs={"memory_bits": 1e4},
    ...                      cost="memory_bits", architecture={"bits": 4}, output="runs/trials/0003", seconds=12.0)
    >>> sorted(record.to_user_attrs())
    ['architecture', 'cost', 'costs', 'ladder', 'output', 'reference_costs', 'seconds', 'test_accuracy']
    >>> metric = record.to_nni_metric()
    >>> metric["default"], metric["memory_bits"], metric["arch"], metric["target"]
    (0.9, 800.0, '{"bits": 4}', 0.1)
    >>> TrialRecord.from_nni_metric(metric, variable="target", number=3) == record
    True
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nni_udc.pareto.front import Point
from nni_udc.registry import VARIABLES

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["METRIC_KEYS", "USER_ATTRS", "TrialRecord"]

#: the Optuna user attributes of a record (number, outer variable and objectives are the trial's own)
USER_ATTRS = ("architecture", "test_accuracy", "costs", "reference_costs", "cost", "seconds", "output", "ladder")

#: the keys of one cheaper export of a search (an entry of the ``ladder`` attribute and metric key)
LADDER_KEYS = ("accuracy", "relative_cost", "test_accuracy", "costs", "architecture", "output")

#: keys of an NNI final metric that are not costs (every other number of the metric is a cost; also the variables)
METRIC_KEYS = frozenset({"default", "relative_cost", "test_accuracy", "arch", "reference_costs", "cost", "seconds",
                         "output", "ladder"})


def _finite(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, but got {value!r}")
    return float(value)


def _optional(where: str, value: Any) -> float | None:
    return None if value is None else _finite(f"{where} (when given)", value)


def _object(where: str, value: Any) -> dict[str, Any]:
    """A mapping, or the JSON text of one (how an NNI metric carries it)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{where} must be a JSON object, but got {value[:80]!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping (or its JSON text), but got {str(value)[:80]!r}")
    return dict(value)


def _costs(where: str, value: Any) -> dict[str, float]:
    return {str(k): _finite(f"{where}[{k!r}]", v) for k, v in _object(where, value).items()}


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One finished search of the outer loop (frozen: build another with :func:`dataclasses.replace`).

    ``number`` is the Optuna trial's (``None`` before the study numbers it); ``variable`` names the outer variable
    (``target`` or ``weight``) whose ``value`` the search ran with; ``cost`` names the optimised cost, and
    ``relative_cost`` is it as a fraction of ``reference_costs[cost]``; ``output`` is the search's directory.
    ``ladder`` holds the cheaper models the search exported beside its own (UDC's ``exports``), each a record of
    its own with the search's number, variable and value.
    """

    accuracy: float
    relative_cost: float
    number: int | None = None
    variable: str | None = None
    value: float | None = None
    test_accuracy: float | None = None
    costs: dict[str, float] = field(default_factory=dict)
    reference_costs: dict[str, float] = field(default_factory=dict)
    cost: str = ""
    architecture: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    seconds: float | None = None
    ladder: tuple[TrialRecord, ...] = ()

    # ----- Optuna ---------------------------------------------------------------------------------------------

    def to_user_attrs(self) -> dict[str, Any]:
        """The Optuna user attributes of the record (the keys :data:`USER_ATTRS`; values JSON-serialisable)."""
        return {"architecture": self.architecture, "test_accuracy": self.test_accuracy, "costs": self.costs,
                "reference_costs": self.reference_costs, "cost": self.cost, "seconds": self.seconds,
                "output": self.output, "ladder": [r._ladder_entry() for r in self.ladder]}

    def _ladder_entry(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in LADDER_KEYS}

    def _with_ladder(self, entries: Any, where: str) -> TrialRecord:
        """This record with the cheaper exports ``entries`` (a list of :data:`LADDER_KEYS` objects) as its ladder."""
        if entries is None:
            return self
        if not isinstance(entries, list):
            raise ValueError(f"{where} must be a list of exports, but got {entries!r}")
        ladder = []
        for i, entry in enumerate(entries):
            at = f"{where}[{i}]"
            entry = _object(at, entry)
            ladder.append(TrialRecord(
                number=self.number, variable=self.variable, value=self.value,
                accuracy=_finite(f"{at}['accuracy']", entry.get("accuracy")),
                relative_cost=_finite(f"{at}['relative_cost']", entry.get("relative_cost")),
                test_accuracy=_optional(f"{at}['test_accuracy']", entry.get("test_accuracy")),
                costs=_costs(f"{at}['costs']", entry.get("costs", {})), reference_costs=dict(self.reference_costs),
                cost=self.cost, architecture=_object(f"{at}['architecture']", entry.get("architecture", {})),
                output=str(entry.get("output") or "")))
        return replace(self, ladder=tuple(ladder))

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        """The record of a completed trial: its number, outer variable, objectives and user attributes.

        Reads every study this package wrote: ``nni-udc pareto``'s and the tuner's, before and after this record
        (the tuner's trials had only ``architecture``, ``costs`` and, when reported, ``test_accuracy``).
        Bookkeeping attributes (``worker``, ``owner``, ``nni_parameter_id``, ...) are not part of the record.
        """
        if trial.values is None or len(trial.values) != 2:
            raise ValueError(f"trial {trial.number} must have the two objective values (accuracy, relative cost), "
                             f"but got {trial.values!r} (state {trial.state.name})")
        attrs = trial.user_attrs
        variable, value = next(iter(trial.params.items()), (None, None))
        record = cls(number=trial.number, variable=variable, value=value, accuracy=trial.values[0],
                     relative_cost=trial.values[1], test_accuracy=attrs.get("test_accuracy"),
                     costs=dict(attrs.get("costs") or {}), reference_costs=dict(attrs.get("reference_costs") or {}),
                     cost=attrs.get("cost") or "", architecture=dict(attrs.get("architecture") or {}),
                     output=attrs.get("output") or "", seconds=attrs.get("seconds"))
        return record._with_ladder(attrs.get("ladder"), f"trial {trial.number}'s user attribute 'ladder'")

    # ----- NNI ------------------------------------------------------------------------------------------------

    def to_nni_metric(self) -> dict[str, Any]:
        """The final result an NNI trial reports: ``default`` (validation accuracy, which NNI's WebUI plots),
        ``relative_cost``, ``test_accuracy``, every cost under its own name, ``arch`` and ``reference_costs`` as
        JSON text, ``cost``, ``seconds``, ``output`` and ``{variable: value}``. Missing values are left out."""
        clash = sorted(set(self.costs) & (METRIC_KEYS | set(VARIABLES)))
        if clash:
            raise ValueError(f"a cost's name must not be one of the metric's own keys {sorted(METRIC_KEYS)} or a "
                             f"variable, but got {clash}")
        metric: dict[str, Any] = {"default": float(self.accuracy), "relative_cost": float(self.relative_cost)}
        if self.test_accuracy is not None:
            metric["test_accuracy"] = float(self.test_accuracy)
        metric.update({name: float(v) for name, v in self.costs.items()})
        metric["arch"] = json.dumps(self.architecture, sort_keys=True)
        if self.reference_costs:
            metric["reference_costs"] = json.dumps(self.reference_costs, sort_keys=True)
        if self.cost:
            metric["cost"] = self.cost
        if self.seconds is not None:
            metric["seconds"] = float(self.seconds)
        if self.output:
            metric["output"] = self.output
        if self.variable is not None and self.value is not None:
            metric[self.variable] = float(self.value)
        if self.ladder:
            metric["ladder"] = json.dumps([r._ladder_entry() for r in self.ladder], sort_keys=True)
        return metric

    @classmethod
    def from_nni_metric(cls, metric: Any, *, variable: str | None = None, number: int | None = None) -> TrialRecord:
        """The record of an NNI final result (:meth:`to_nni_metric`, or the shorter dict reported before it);
        ``variable`` names the outer variable whose value the metric may carry.

        Raises ``ValueError`` (naming the key) for a metric without finite ``default`` and ``relative_cost``, or
        with an ``arch`` that is not a JSON object.
        """
        if not isinstance(metric, Mapping):
            raise ValueError(f"the metric must be a dict with 'default' and 'relative_cost', but got {metric!r}")
        not_costs = METRIC_KEYS | set(VARIABLES)
        output = metric.get("output", "")
        cost = metric.get("cost", "")
        value = metric.get(variable) if variable is not None else None
        ladder = metric.get("ladder")
        if isinstance(ladder, str):
            try:
                ladder = json.loads(ladder)
            except json.JSONDecodeError:
                raise ValueError(f"the metric's 'ladder' must be a JSON list, but got {ladder[:80]!r}") from None
        record = cls(number=number, variable=variable if value is not None else None,
                     value=_optional(f"the metric's {variable!r}", value),
                     accuracy=_finite("the metric's 'default'", metric.get("default")),
                     relative_cost=_finite("the metric's 'relative_cost'", metric.get("relative_cost")),
                     test_accuracy=_optional("the metric's 'test_accuracy'", metric.get("test_accuracy")),
                     costs={k: float(v) for k, v in metric.items() if k not in not_costs
                            and isinstance(v, (int, float)) and not isinstance(v, bool)},
                     reference_costs=_costs("the metric's 'reference_costs'", metric.get("reference_costs", {})),
                     cost=cost if isinstance(cost, str) else "",
                     architecture=_object("the metric's 'arch'", metric.get("arch", {})),
                     output=output if isinstance(output, str) else "",
                     seconds=_optional("the metric's 'seconds'", metric.get("seconds")))
        return record._with_ladder(ladder, "the metric's 'ladder'")

    # ----- the front ------------------------------------------------------------------------------------------

    def point(self) -> Point:
        """The record as a front :class:`~nni_udc.pareto.front.Point` (what ``non_dominated``, ``hypervolume``,
        ``compare`` and the front files take)."""
        if self.number is None:
            raise ValueError("a record becomes a front point once the study numbered it, but number is None")
        return Point(number=self.number, accuracy=self.accuracy, relative_cost=self.relative_cost, value=self.value,
                     test_accuracy=self.test_accuracy, costs=dict(self.costs), architecture=dict(self.architecture),
                     output=self.output, seconds=self.seconds)

    def points(self) -> list[Point]:
        """The record's :meth:`point`, then one per model of its ladder (``export`` 1, 2, ...: same number)."""
        return [self.point()] + [replace(r.point(), export=k) for k, r in enumerate(self.ladder, 1)]
