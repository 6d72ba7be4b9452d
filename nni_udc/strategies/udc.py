"""The UDC one-shot strategy: NNI's DARTS machinery plus a hardware-cost penalty that steers.

``UDC`` is a :class:`nni.nas.strategy.DARTS` (or, with ``temperature``, a GumbelDARTS) whose mutation hooks
turn nni-udc's modules into weight-shared mixed ops (:mod:`nni_udc.strategies.supernet`) and whose penalty
is the *expected* hardware cost computed from the live architecture probabilities, with gradient
(NNI 3.0's own penalty receives floats and has none: research/nni_api.md B.3). After the search the argmax
architecture is exported with its trained weights, fine-tuned with its compression applied
(quantisation-aware), and measured with the exact cost.

Example:
    >>> from nni.nas.experiment import NasExperiment
    >>> from nni_udc.evaluators.lightning import classification_evaluator
    >>> from nni_udc.spaces import DigitsSpace
    >>> strategy = UDC(weight=1.0, finetune_epochs=1)
    >>> experiment = NasExperiment(DigitsSpace(), classification_evaluator("digits", epochs=1), strategy)
    >>> experiment.run()                                          # doctest: +SKIP
    >>> model = experiment.export_top_models(formatter="instance")[0]   # doctest: +SKIP
    >>> strategy.result.costs["memory_bits"] < strategy.result.reference_costs["memory_bits"]  # doctest: +SKIP
    True
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.oneshot.pytorch.strategy import DARTS
from nni.nas.oneshot.pytorch.differentiable import GumbelDartsLightningModule, LinearTemperatureScheduler
from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax
from nni.nas.space import RawFormatModelSpace
from torch import nn

from nni_udc.evaluators.costs import COSTS, CostFn, total
from nni_udc.evaluators.exact import model_specs
from nni_udc.evaluators.nni_profiler import CostProfiler
from nni_udc.evaluators.spec import LayerSpec
from nni_udc.evaluators.targets import HardwareTarget, load_target
from nni_udc.strategies.expected_cost import ExpectedCost
from nni_udc.strategies.finetune import finetune
from nni_udc.strategies.penalty import LinearPenalty, TargetPenalty
from nni_udc.strategies.supernet import MIXED_OPERATION_HOOKS, MixedCompressedOp

__all__ = ["SearchResult", "UDC", "reference_sample"]

_logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What a one-shot search found: the architecture, its fine-tuned accuracy and its exact costs."""

    sample: dict[str, Any]
    accuracy: float | None
    costs: dict[str, float]
    reference_costs: dict[str, float]
    model: nn.Module = field(repr=False)

    def ratio(self, cost: str) -> float:
        """How many times cheaper than the uncompressed reference (``reference / found``)."""
        return self.reference_costs[cost] / max(self.costs[cost], 1e-12)


def _uncompressed(cost: CostFn) -> CostFn:
    """The same cost with every layer float, dense and with all its output channels."""
    def fn(spec: LayerSpec) -> Any:
        return cost(dataclasses.replace(spec, weight_bits=32, act_bits=32, density=1.0))
    return fn


def reference_sample(space: ModelSpace) -> dict[str, Any]:
    """The largest architecture of a space: the largest value of every numeric choice, the first of others."""
    out = {}
    for label, choice in space.simplify().items():
        values = choice.values
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out[label] = max(values) if numeric else values[0]
    return out


def _example_batch(evaluator: Any) -> torch.Tensor:
    loader = getattr(evaluator, "train_dataloaders", None)
    if loader is None:
        raise ValueError("UDC needs example_input= (an input batch) when the evaluator has no train_dataloaders")
    with torch.random.fork_rng():  # a shuffling loader draws from the global RNG: leave the user's stream alone
        batch = next(iter(loader))
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return x[:1]


class _LivePenalty(ExpectationProfilerPenalty):
    """The cost penalty on live architecture probabilities.

    NNI's DARTS module calls ``penalty(loss, export_probs())`` in every architecture step; ``export_probs``
    holds floats, so this penalty ignores it and reads the tensors from the strategy instead. Subclassing
    ``ExpectationProfilerPenalty`` is what NNI's DARTS module accepts (it asserts the type).
    """

    def __init__(self, strategy: UDC, profiler: CostProfiler, expected: ExpectedCost, rule: LinearPenalty | TargetPenalty):
        super().__init__(profiler, baseline=rule.reference, scale=1.0)
        self._strategy = [strategy]  # a list: not an nn.Module attribute, no cycle in module traversal
        self.expected = expected
        self.rule = rule

    def forward(self, loss: torch.Tensor, sample: Any = None) -> tuple[torch.Tensor, dict]:
        cost = self.expected(self._strategy[0].probabilities())
        penalty = self.rule(cost)
        self.rule.update(cost)
        total = loss + penalty
        details = {"task_loss": loss.detach(), "expected_cost": cost.detach(),
                   "relative_cost": cost.detach() / self.rule.reference,
                   "lambda": torch.tensor(float(self.rule.weight)), "loss": total.detach()}
        return total, details


class UDC(DARTS):
    """Differentiable search over architecture *and* compression with an expected hardware-cost penalty.

    Args:
        cost: the cost to optimise: a name (of :data:`~nni_udc.evaluators.costs.COSTS` or of the hardware
            target's costs) or a function of a :class:`~nni_udc.evaluators.LayerSpec`. Default: the hardware
            target's ``optimise`` cost, else ``memory_bits``.
        hardware: a hardware target name (``'mpic'``), YAML path or :class:`~nni_udc.evaluators.targets.HardwareTarget`;
            its costs are optimised and reported next to the generic ones.
        weight: λ of the linear penalty ``λ · cost / reference`` (used when ``target`` is ``None``).
        target: search for ``cost ≈ target · reference`` instead, adapting λ by dual ascent (``step_size``);
            the exported architecture is then the most probable one found with ``cost <= target · reference``.
        step_size: dual-ascent rate of λ for ``target``.
        reference: the cost that counts as 1; default: the space's largest architecture, uncompressed
            (float weights and activations, dense), under ``cost``.
        example_input: an input batch for shape inference; default: one sample of the evaluator's train loader.
        arc_learning_rate: learning rate of the architecture parameters (Adam, as NNI's DARTS). NNI's 3e-4
            suits searches of tens of thousands of steps; the default 1e-2 suits a few thousand, and a few
            hundred steps (the demo) need about 5e-2 for the probabilities to become decisive.
        warmup_epochs: epochs that train weights only.
        temperature: ``None`` for softmax relaxation (DARTS); a float or ``(start, end)`` for Gumbel-softmax
            with linear annealing (GumbelDARTS).
        finetune_epochs: epochs of quantisation-aware fine-tuning of the exported model.
        finetune_learning_rate: learning rate of the fine-tuning (default: the evaluator's).
        report_costs: names of the costs measured exactly on the final model (default: all generic costs
            and all of the hardware target's).
        seed: seeds architecture parameters and training, so two searches give the same architecture.
        mutation_hooks: extra hooks, run before nni-udc's and NNI's.

    After ``NasExperiment(...).run()``, ``export_top_models(formatter='instance')`` returns the fine-tuned
    compressed model and :attr:`result` holds its architecture, accuracy and exact costs. The penalty logs
    ``penalty/task_loss``, ``penalty/expected_cost``, ``penalty/relative_cost`` and ``penalty/lambda``
    through Lightning.
    """

    def __init__(self, *, cost: str | CostFn | None = None, hardware: str | HardwareTarget | None = None, weight: float = 1.0, target: float | None = None,
                 step_size: float = 1.0, reference: float | None = None, example_input: Any = None,
                 arc_learning_rate: float = 1e-2, warmup_epochs: int = 0,
                 temperature: float | tuple[float, float] | None = None, finetune_epochs: int = 0,
                 finetune_learning_rate: float | None = None,
                 report_costs: Sequence[str] | None = None,
                 seed: int | None = None, mutation_hooks: list | None = None, **kwargs: Any) -> None:
        hooks = list(mutation_hooks or []) + list(MIXED_OPERATION_HOOKS)
        super().__init__(arc_learning_rate=arc_learning_rate, warmup_epochs=warmup_epochs,
                         mutation_hooks=hooks, **kwargs)
        self.hardware = load_target(hardware) if isinstance(hardware, str) else hardware
        self.cost_table: dict[str, CostFn] = {**COSTS, **(self.hardware.costs if self.hardware else {})}
        if cost is None:
            cost = self.hardware.optimise if self.hardware else "memory_bits"
        if isinstance(cost, str) and cost not in self.cost_table:
            raise ValueError(f"unknown cost {cost!r}; known costs are {sorted(self.cost_table)}")
        self.cost = self.cost_table[cost] if isinstance(cost, str) else cost
        self.cost_name = cost if isinstance(cost, str) else getattr(cost, "__name__", "cost")
        report_costs = list(self.cost_table) if report_costs is None else list(report_costs)
        if target is not None and not (isinstance(target, (int, float)) and target > 0):
            raise ValueError(f"target must be a positive fraction of the reference cost, but got {target!r}")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"weight must be a number >= 0, but got {weight!r}")
        for name in report_costs:
            if name not in self.cost_table:
                raise ValueError(f"report_costs: unknown cost {name!r}; known costs are {sorted(self.cost_table)}")
        self.weight, self.target, self.step_size, self.reference = weight, target, step_size, reference
        self.example_input = example_input
        self.temperature = temperature
        self.finetune_epochs = finetune_epochs
        self.finetune_learning_rate = finetune_learning_rate
        self.report_costs = tuple(report_costs)
        self.seed = seed
        self.result: SearchResult | None = None
        self._example: Any = None
        self._logits: dict[str, Any] = {}
        self._choices: dict[str, Any] = {}
        self._final: RawFormatModelSpace | None = None

    # ----- set-up ------------------------------------------------------------------------------------
    def _initialize(self, model_space: RawFormatModelSpace, engine: Any) -> RawFormatModelSpace:
        if self.seed is not None:
            pl.seed_everything(self.seed, workers=True, verbose=False)
        example = self.example_input if self.example_input is not None else _example_batch(model_space.evaluator)
        self.prepare_cost(model_space.model_space, example)
        return super()._initialize(model_space, engine)

    def prepare_cost(self, space: ModelSpace, example_input: Any) -> None:
        """Build the cost expression, the reference and the penalty; call before :meth:`mutate_model`.

        ``NasExperiment`` does this for you; call it yourself to inspect a supernet without an experiment.
        """
        self.check_space(space)
        self._example = example_input
        profiler = CostProfiler(space, example_input, self.cost)
        ref_sample = reference_sample(space)
        reference = self.reference
        if reference is None:
            reference = float(CostProfiler(space, example_input, _uncompressed(self.cost)).profile(ref_sample))
        self._reference_costs = {name: float(CostProfiler(space, example_input, _uncompressed(self.cost_table[name])).profile(ref_sample))
                                 for name in self.report_costs}
        rule: LinearPenalty | TargetPenalty
        if self.target is not None:
            rule = TargetPenalty(target=self.target, reference=reference, step_size=self.step_size, weight=self.weight,
                                 spend_budget=True)
        else:
            rule = LinearPenalty(weight=self.weight, reference=reference)
        self.penalty = _LivePenalty(self, profiler, ExpectedCost(profiler.expression), rule)

    @property
    def reference_costs(self) -> dict[str, float]:
        """Every reported cost of the reference (largest, uncompressed) architecture; set by :meth:`prepare_cost`."""
        return dict(self._reference_costs)

    def check_space(self, space: ModelSpace) -> None:
        """Raise ``ValueError`` if ``space`` lacks what this strategy searches (the presets override it)."""
        if not space.simplify():
            raise ValueError(f"{type(space).__name__} has no choices: nothing to search")

    def configure_softmax(self) -> nn.Module:
        return nn.Softmax(dim=-1) if self.temperature is None else GumbelSoftmax()

    def configure_oneshot_module(self, training_module: Any) -> Any:
        if self.temperature is None:
            return super().configure_oneshot_module(training_module)
        start, end = (self.temperature, self.temperature) if isinstance(self.temperature, (int, float)) else self.temperature
        return GumbelDartsLightningModule(
            training_module=training_module, temperature_scheduler=LinearTemperatureScheduler(float(start), float(end)),
            arc_learning_rate=self.arc_learning_rate, gradient_clip_val=self.gradient_clip_val,
            log_prob_every_n_step=self.log_prob_every_n_step, warmup_epochs=self.warmup_epochs, penalty=self.penalty)

    def mutate_model(self, model: Any) -> Any:
        self._choices = model.simplify()
        model = super().mutate_model(model)
        # Where each label's live probabilities come from: our mixed ops own per-channel (bits × channels)
        # parameters; every other label uses the alpha NNI's DARTS made for it (shared through the memo).
        self._logits: dict[str, Any] = {label: (lambda a=alpha: a) for label, alpha in self._arch_parameters.items()}
        for module in model.modules():
            if isinstance(module, MixedCompressedOp):
                for label in module.label_probabilities():
                    self._logits[label] = (lambda m=module, lb=label: m.alpha_of(lb))
        return model

    def logits(self, label: str) -> torch.Tensor:
        """The live architecture parameters of ``label`` (a view into the optimised tensor)."""
        return self._logits[label]()

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``{label: softmax of its live architecture parameters}`` (with gradient), for every label.

        Plain softmax also under Gumbel-softmax: the penalty is the expected cost of the distribution the
        search learns, not of one noisy sample.
        """
        return {label: torch.softmax(self.logits(label), dim=-1) for label in self._logits}

    @torch.no_grad()
    def set_architecture(self, sample: Mapping[str, Any], *, confidence: float = 1e4) -> None:
        """Set the architecture parameters so that their softmax selects ``sample`` (checks, warm starts)."""
        choices = self._choices
        for label, value in sample.items():
            logits = self.logits(label)
            logits.fill_(-confidence)
            logits[choices[label].values.index(value)] = 0.0

    def _fit_budget(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The most probable architecture near the argmax whose exact cost is within the target budget.

        The search keeps the *expected* cost at the target, but the argmax of each label alone can land
        well above or below it. Greedy single-label moves fix that: while over budget, take the move that
        saves the most cost per unit of log-probability lost; then, while under budget, spend what is left
        the same way (cost gained per log-probability lost) without crossing the budget.
        """
        profiler = self.penalty.profiler
        budget = self.target * self.penalty.rule.reference
        log_p = {label: torch.log(p.detach().double().clamp_min(1e-12)) for label, p in self.probabilities().items()}
        choices = {label: c for label, c in self._choices.items() if label in log_p}

        def moves(current: dict[str, Any], cost: float) -> Iterator[tuple[float, float, str, Any]]:
            for label, choice in choices.items():
                here = float(log_p[label][choice.values.index(current[label])])
                for i, value in enumerate(choice.values):
                    if value != current[label]:
                        new_cost = float(profiler.profile({**current, label: value}))
                        yield new_cost, float(log_p[label][i]) - here, label, value

        current, cost = dict(sample), float(profiler.profile(sample))
        while cost > budget:
            options = [((cost - c) / max(-d, 1e-9), lb, v, c) for c, d, lb, v in moves(current, cost) if c < cost]
            if not options:
                _logger.warning("no architecture of the space fits the budget %.4g (cheapest found: %.4g)", budget, cost)
                break
            _, label, value, cost = max(options, key=lambda o: o[0])
            current[label] = value
        while True:
            options = [((c - cost) / max(-d, 1e-9), lb, v, c) for c, d, lb, v in moves(current, cost) if cost < c <= budget]
            if not options:
                break
            _, label, value, cost = max(options, key=lambda o: o[0])
            current[label] = value
        return current

    # ----- result ------------------------------------------------------------------------------------
    def list_models(self, sort: bool = True, limit: int | None = 1) -> Iterator[RawFormatModelSpace]:
        """The exported architecture, fine-tuned (once) with its compression applied."""
        if self.result is None:
            self._finish()
        yield self._final

    def _finish(self) -> None:
        self.oneshot_module.set_model(self.supernet)
        sample = self.oneshot_module.export()  # argmax of every label
        if self.target is not None:
            sample = self._fit_budget(sample)
        self._final = self.model_space.freeze(sample)  # the supernet's freeze keeps the trained weights
        model = self._final.executable_model()  # fine-tuned in place below
        accuracy = None
        if self.finetune_epochs > 0:
            accuracy = finetune(model, self.model_space.evaluator, epochs=self.finetune_epochs,
                                learning_rate=self.finetune_learning_rate)
        specs = model_specs(model, self._example)
        costs = {name: float(total(specs, self.cost_table[name])) for name in self.report_costs}
        self.result = SearchResult(sample=sample, accuracy=accuracy, costs=costs,
                                   reference_costs=self.reference_costs, model=model)
        _logger.info("UDC result: %s", self.result)
