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
import itertools
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.differentiable import GumbelDartsLightningModule, LinearTemperatureScheduler
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.oneshot.pytorch.strategy import DARTS
from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax
from nni.nas.space import RawFormatModelSpace
from torch import nn

from nni_udc.evaluators.costs import COSTS, CostFn
from nni_udc.evaluators.exact import frozen_cost, model_specs
from nni_udc.evaluators.nni_profiler import CostProfiler
from nni_udc.evaluators.spec import LayerSpec
from nni_udc.evaluators.targets import HardwareTarget, load_target
from nni_udc.strategies.architecture import ArchitectureDistribution, local_search, most_probable, used_labels
from nni_udc.strategies.expected_cost import ExpectedCost, compile_expression
from nni_udc.strategies.finetune import finetune
from nni_udc.strategies.penalty import LinearPenalty, TargetPenalty
from nni_udc.strategies.supernet import MIXED_OPERATION_HOOKS, SAMPLEABLE, MixedCompressedOp
from nni_udc.strategies.uniform import uniform_grid

__all__ = ["SearchResult", "SharpeningSoftmax", "UDC", "reference_sample"]

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


class SharpeningSoftmax(GumbelSoftmax):
    """``softmax(logits / tau)`` without noise; NNI's GumbelDARTS module anneals ``tau`` every epoch.

    Annealing the temperature sharpens the distribution the supernet trains under, so at the end of the
    search the most probable architecture and the expected cost that the penalty steered agree.
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(inputs / self.tau, dim=self.dim)


class _LivePenalty(ExpectationProfilerPenalty):
    """The cost penalty on live architecture probabilities.

    NNI's DARTS module calls ``penalty(loss, export_probs())`` in every architecture step; ``export_probs``
    holds floats, so this penalty ignores them and reads the tensors of the :class:`ArchitectureDistribution`
    it was given. Subclassing ``ExpectationProfilerPenalty`` is what NNI's DARTS module accepts (it asserts the type).
    """

    def __init__(self, profiler: CostProfiler, expected: ExpectedCost, rule: LinearPenalty | TargetPenalty,
                 distribution: ArchitectureDistribution):
        super().__init__(profiler, baseline=rule.reference, scale=1.0)
        self.expected = expected
        self.rule = rule
        self.distribution = distribution

    def forward(self, loss: torch.Tensor, sample: Any = None) -> tuple[torch.Tensor, dict]:
        cost = self.expected(self.distribution.probabilities())
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
        target: search for ``cost <= target · reference`` instead, adapting λ >= 0 by dual ascent
            (``step_size``); the export is then the most probable architecture within that budget.
        step_size: dual-ascent rate of λ for ``target``.
        reference: the cost that counts as 1; default: the space's largest architecture, uncompressed
            (float weights and activations, dense), under ``cost``.
        example_input: an input batch for shape inference; default: one sample of the evaluator's train loader.
        arc_learning_rate: learning rate of the architecture parameters (Adam, as NNI's DARTS). NNI's 3e-4
            suits searches of tens of thousands of steps; the default 1e-2 suits a few thousand, and a few
            hundred steps (the demo) need about 5e-2 for the probabilities to become decisive.
        warmup_epochs: epochs that train weights only, before the architecture parameters move.
        temperature: ``None`` for plain softmax (DARTS); a float or ``(start, end)`` for a softmax
            temperature annealed linearly over the search, which sharpens the distribution so that its
            most probable architecture and its expected cost agree at the end.
        gumbel: sample Gumbel-softmax at that temperature instead (GumbelDARTS).
        sampled: searched arguments of nni-udc's layers (e.g. ``['sparsity']``; any of :data:`SAMPLEABLE`) whose
            candidates are *drawn*, one per layer and forward pass, while the supernet trains, with a
            straight-through gradient to their probabilities, instead of mixed (scoring and export are unchanged).
            Why: a mixture of sparsity masks is a soft mask that the batch norm after the layer undoes, and a soft
            width mask likewise, so the task loss barely feels them; drawn masks train the weights under the masks
            their models will have. It makes the supernet a better predictor but the main job's front worse:
            drawn sparsity and bits raise the Spearman correlation of its loss with the uniform grid's stand-alone
            accuracies by 0.045 ± 0.019 (``benchmarks/supernet_ranking.py``, 5 seeds), and lower the median size
            ratio over uniform compression from 1.06× to 0.88× (10 runs, paired difference −0.18 ± 0.07)
            (``benchmarks/front_vs_uniform.md``). Per-channel choices stay mixtures. Default: none.
        candidates: with ``target``, this many most probable architectures within budget are scored by the
            supernet's loss on the evaluator's validation (architecture) data; the best is exported.
            1 exports the most probable one.
        samples: with ``target``, also score this many architectures drawn uniformly at random within the
            budget (seeded): the candidates a supernet trained single-path (:mod:`~nni_udc.strategies.single_path`)
            ranks best need not be the ones the architecture parameters favour.
        uniform: with ``target``, also score every model of the space's uniform-compression grid within the
            budget (:func:`~nni_udc.strategies.uniform.uniform_grid`): the yardstick's own models compete, so the
            export is never one the supernet ranks below uniform compression at the same budget.
        refine: with ``target``, at most this many rounds of local search after that: every single-label
            change within budget is scored by the supernet's loss and the best improvement is taken (the
            supernet as an accuracy predictor; 0 turns it off).
        parsimony: with ``target``, export the *cheapest* scored architecture whose supernet loss is within this
            many standard errors of the best one's (Breiman's one-standard-error rule; the error is that of the
            per-sample loss difference on the same batches). 0 (default) exports the best. Near the top of a
            front, where wide models all score alike, the best by a noisy loss is often a larger model than
            needed (``benchmarks/front_vs_uniform.md``).
        exports: with ``target``, how many models the search exports: the one above, then up to ``exports`` - 1
            cheaper ones (its *ladder*, :attr:`ladder`), each picked by the same rule among the scored
            architectures that cost at most :data:`LADDER_STEP` (0.85) of the export before it, and fine-tuned
            from the supernet's weights like the first. A Pareto sweep's searches then fill the gaps between their
            targets for a few seconds of fine-tuning each (``nni-udc pareto`` puts them on the front as ``3.1``,
            ``3.2``; ``benchmarks/front_vs_uniform.md``). 1 (default): the one model.
        finetune_epochs: epochs of quantisation-aware fine-tuning in :meth:`finetune` (default of its ``epochs``).
        finetune_learning_rate: learning rate of the fine-tuning (default: the evaluator's).
        report_costs: names of the costs measured exactly on the final model (default: all generic costs
            and all of the hardware target's).
        seed: seeds architecture parameters and training, so two searches give the same architecture.
        supernet_weights: start the supernet from weights saved by :meth:`save_supernet` (a path or a state
            dict) instead of from scratch: one supernet trained once serves every target of a Pareto sweep.
        mutation_hooks: extra hooks, run before nni-udc's and NNI's.

    The evaluator's ``train_dataloaders`` train the weights and its ``val_dataloaders`` the architecture
    (as in DARTS): keep a split that neither saw for choosing and reporting. After ``NasExperiment(...).run()``:
    :meth:`export_result` (also what ``export_top_models`` calls) picks the architecture and measures its
    exact costs, with the supernet's trained weights; :meth:`finetune` fine-tunes it (and its :attr:`ladder`)
    with its compression applied; :attr:`result` holds architecture, accuracy and costs. The penalty logs ``penalty/task_loss``,
    ``penalty/expected_cost``, ``penalty/relative_cost`` and ``penalty/lambda`` through Lightning.
    """

    def __init__(self, *, cost: str | CostFn | None = None, hardware: str | HardwareTarget | None = None,
                 weight: float = 1.0, target: float | None = None,
                 step_size: float = 1.0, reference: float | None = None, example_input: Any = None,
                 arc_learning_rate: float = 1e-2, warmup_epochs: int = 0,
                 temperature: float | tuple[float, float] | None = None, gumbel: bool = False,
                 sampled: Sequence[str] | None = (), candidates: int = 1,
                 samples: int = 0, uniform: bool = False, refine: int = 0, parsimony: float = 0.0,
                 exports: int = 1, finetune_epochs: int = 0, finetune_learning_rate: float | None = None,
                 report_costs: Sequence[str] | None = None, seed: int | None = None,
                 supernet_weights: str | Path | Mapping[str, torch.Tensor] | None = None,
                 mutation_hooks: list | None = None, **kwargs: Any) -> None:
        hooks = [self._keep_memo] + list(mutation_hooks or []) + list(MIXED_OPERATION_HOOKS)
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
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ValueError(f"weight must be a number >= 0, but got {weight!r}")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise ValueError(f"candidates must be an integer >= 1, but got {candidates!r}")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
            raise ValueError(f"samples must be an integer >= 0, but got {samples!r}")
        if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
            raise ValueError(f"refine must be an integer >= 0, but got {refine!r}")
        if not isinstance(parsimony, (int, float)) or isinstance(parsimony, bool) or not parsimony >= 0:
            raise ValueError(f"parsimony must be a number of standard errors >= 0, but got {parsimony!r}")
        if not isinstance(exports, int) or isinstance(exports, bool) or exports < 1:
            raise ValueError(f"exports must be an integer >= 1, but got {exports!r}")
        sampled = () if sampled is None else sampled
        if not isinstance(sampled, (list, tuple, set, frozenset)) or not all(name in SAMPLEABLE for name in sampled):
            raise ValueError(f"sampled must be a list of searched layer arguments out of {list(SAMPLEABLE)}, "
                             f"but got {sampled!r}")
        for name in report_costs:
            if name not in self.cost_table:
                raise ValueError(f"report_costs: unknown cost {name!r}; known costs are {sorted(self.cost_table)}")
        self.weight, self.target, self.step_size, self.reference = weight, target, step_size, reference
        self.example_input = example_input
        self.temperature, self.gumbel, self.candidates, self.refine = temperature, gumbel, candidates, refine
        self.samples, self.uniform, self.parsimony = samples, bool(uniform), float(parsimony)
        self.exports, self.sampled = exports, frozenset(sampled)
        self._uniform_grid: list[dict[str, Any]] = []
        self.finetune_epochs = finetune_epochs
        self.finetune_learning_rate = finetune_learning_rate
        self.report_costs = tuple(report_costs)
        self.seed = seed
        self.supernet_weights = supernet_weights
        # State, in the order the steps fill it: prepare_cost, mutate_model, export_result, finetune.
        self._example: Any = None
        self._profiler: CostProfiler | None = None
        self._rule: LinearPenalty | TargetPenalty | None = None
        self._reference_costs: dict[str, float] | None = None
        self._used: Callable[[Mapping[str, Any]], set[str]] | None = None
        self._memo: dict[str, Any] = {}
        self.distribution: ArchitectureDistribution | None = None
        self._supernet: nn.Module | None = None
        self._result: SearchResult | None = None
        self._final: RawFormatModelSpace | None = None
        self._scored: tuple[_SupernetScore, Callable[[Mapping[str, Any]], float]] | None = None
        self._loss: _SupernetScore | None = None  # supernet_loss's score where the export scored nothing
        #: the cheaper exports (``exports`` > 1), most expensive first: after export_result, fine-tuned by finetune
        self.ladder: list[SearchResult] = []

    # ----- set-up ------------------------------------------------------------------------------------
    def _initialize(self, model_space: RawFormatModelSpace, engine: Any) -> RawFormatModelSpace:
        if self.seed is not None:
            pl.seed_everything(self.seed, workers=True, verbose=False)
        example = self.example_input if self.example_input is not None else _example_batch(model_space.evaluator)
        self.prepare_cost(model_space.model_space, example)
        # listed before the supernet replaces the space's modules with mixed ones
        self._uniform_grid = uniform_grid(model_space.model_space) if self.uniform else []
        return super()._initialize(model_space, engine)

    def prepare_cost(self, space: ModelSpace, example_input: Any) -> None:
        """Build the cost expression and the reference costs; call before :meth:`mutate_model`.

        ``NasExperiment`` does this for you; call it yourself to inspect a supernet without an experiment.
        """
        self.check_space(space)
        self._example = example_input
        self._profiler = CostProfiler(space, example_input, self.cost)
        ref_sample = reference_sample(space)
        reference = self.reference
        if reference is None:
            reference = float(CostProfiler(space, example_input, _uncompressed(self.cost)).profile(ref_sample))
        self._reference_costs = {name: float(CostProfiler(space, example_input, _uncompressed(self.cost_table[name])).profile(ref_sample))
                                 for name in self.report_costs}
        self._used = used_labels(space)
        if self.target is not None:
            self._rule = TargetPenalty(target=self.target, reference=reference, step_size=self.step_size, weight=self.weight)
        else:
            self._rule = LinearPenalty(weight=self.weight, reference=reference)

    @property
    def reference_costs(self) -> dict[str, float]:
        """Every reported cost of the reference (largest, uncompressed) architecture."""
        if self._reference_costs is None:
            raise RuntimeError("UDC.reference_costs is not ready: run the experiment (or call prepare_cost) first")
        return dict(self._reference_costs)

    @property
    def result(self) -> SearchResult:
        """What the search found (after :meth:`export_result`; ``accuracy`` after :meth:`finetune`)."""
        if self._result is None:
            raise RuntimeError("UDC.result is not ready: run the experiment, then call export_result() "
                               "(export_top_models does)")
        return self._result

    def check_space(self, space: ModelSpace) -> None:
        """Raise ``ValueError`` if ``space`` lacks what this strategy searches (the presets override it)."""
        if not space.simplify():
            raise ValueError(f"{type(space).__name__} has no choices: nothing to search")

    def _temperatures(self) -> tuple[float, float] | None:
        if self.temperature is None:
            return None
        t = self.temperature
        return (float(t), float(t)) if isinstance(t, (int, float)) else (float(t[0]), float(t[1]))

    def configure_softmax(self) -> nn.Module:
        temperatures = self._temperatures()
        if temperatures is None:
            return nn.Softmax(dim=-1)
        softmax = GumbelSoftmax() if self.gumbel else SharpeningSoftmax()
        softmax.tau = temperatures[0]
        return softmax

    def configure_oneshot_module(self, training_module: Any) -> Any:
        temperatures = self._temperatures()
        if temperatures is None:
            return super().configure_oneshot_module(training_module)
        return GumbelDartsLightningModule(
            training_module=training_module, temperature_scheduler=LinearTemperatureScheduler(*temperatures),
            arc_learning_rate=self.arc_learning_rate, gradient_clip_val=self.gradient_clip_val,
            log_prob_every_n_step=self.log_prob_every_n_step, warmup_epochs=self.warmup_epochs, penalty=self.penalty)

    def _keep_memo(self, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> None:
        """A mutation hook that changes nothing: it keeps the memo of architecture parameters by label."""
        self._memo = memo

    def mutate_model(self, model: Any) -> Any:
        if self._profiler is None or self._rule is None:
            raise RuntimeError("UDC.mutate_model needs prepare_cost(space, example_input) first")
        choices = model.simplify()
        model = super().mutate_model(model)
        # Where each label's live logits are: the alpha NNI's DARTS made for it (in the hooks' memo), or a
        # column of one of our per-channel (bits × channels) parameters.
        logits: dict[str, Any] = {label: (lambda a=self._memo[label]: a) for label in choices if label in self._memo}
        for module in model.modules():
            if isinstance(module, MixedCompressedOp):
                module.sampled = self.sampled
                for label in module.label_probabilities():
                    logits[label] = (lambda m=module, lb=label: m.alpha_of(lb))
        softmax = next((m for m in model.modules() if isinstance(m, GumbelSoftmax)), None)
        temperature = (lambda: float(getattr(softmax, "tau", 1.0))) if softmax is not None else (lambda: 1.0)
        self.distribution = ArchitectureDistribution(choices, logits, temperature)
        self.penalty = _LivePenalty(self._profiler, ExpectedCost(self._profiler.expression), self._rule, self.distribution)
        if self.supernet_weights is not None:
            self._load_weights(model, self.supernet_weights)
        self._supernet = model
        return model

    def _weight_names(self, model: nn.Module) -> list[str]:
        """State-dict keys of the supernet's weights and buffers: everything but the architecture parameters."""
        arch = {id(p) for p in self._memo.values() if isinstance(p, torch.Tensor)}
        arch |= {id(p) for m in model.modules() if isinstance(m, MixedCompressedOp) for p in m.arch_parameters()}
        names = [n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in arch]
        return [k for k in model.state_dict(keep_vars=True) if k not in names]

    def save_supernet(self, path: str | Path) -> None:
        """Save the supernet's weights (not its architecture parameters) for ``supernet_weights=`` of later searches."""
        if self._supernet is None:
            raise RuntimeError("UDC.save_supernet needs a supernet: run the experiment (or mutate_model) first")
        state = self._supernet.state_dict()
        torch.save({k: state[k] for k in self._weight_names(self._supernet)}, path)

    def _load_weights(self, model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]) -> None:
        state = torch.load(weights, weights_only=True) if isinstance(weights, (str, Path)) else weights
        expected = set(self._weight_names(model))
        if set(state) != expected:
            raise ValueError(f"supernet_weights do not fit this space's supernet: missing {sorted(expected - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - expected)[:5]}")
        model.load_state_dict(state, strict=False)

    # ----- result ------------------------------------------------------------------------------------
    def list_models(self, sort: bool = True, limit: int | None = 1) -> Iterator[RawFormatModelSpace]:
        """The exported architecture with the supernet's trained weights (see :meth:`export_result`)."""
        if self._result is None:
            self.export_result()
        yield self._final

    def export_result(self) -> SearchResult:
        """Pick the architecture, freeze it with the supernet's weights and measure its exact costs (no training)."""
        if self.distribution is None:
            raise RuntimeError("UDC.export_result needs a finished search: run the experiment first")
        sample = self.distribution.argmax()
        if self.target is not None:
            sample = self._within_budget(sample)
        # the cheaper exports first, each a copy: the primary's freeze may share the supernet's modules, and its
        # fine-tune would change their starting weights. Freezing builds new modules, whose initialisation draws
        # from the global RNG: forked, so the primary export trains exactly as it would alone.
        with torch.random.fork_rng():
            self.ladder = [self._frozen(x) for x in self._ladder(sample)]
        self._final = self.model_space.freeze(sample)  # the supernet's freeze keeps the trained weights
        model = self._final.executable_model().float()  # training.precision 64-true: found models are float32
        self._result = SearchResult(sample=sample, accuracy=None, costs=self._costs(model),
                                    reference_costs=self.reference_costs, model=model)
        _logger.info("UDC result: %s", self._result)
        return self._result

    def supernet_loss(self, sample: Mapping[str, Any]) -> float:
        """The supernet's loss with its architecture set to ``sample``: the score the export ranks candidates by
        (the evaluator's validation data, the same batches for every sample; lower is better). Call it after the
        search and before :meth:`finetune`, which may train modules the supernet shares with the export.
        ``benchmarks/supernet_ranking.py`` measures how well it ranks stand-alone accuracy."""
        if self._supernet is None or self.distribution is None:
            raise RuntimeError("UDC.supernet_loss needs a finished search: run the experiment first")
        if self._scored is not None:  # the export's own score: its batches, and the samples it scored already
            return self._scored[0](sample)
        if self._loss is None:
            self._loss = _SupernetScore(self._supernet, self.distribution, self.model_space.evaluator)
        return self._loss(sample)

    def finetune(self, *, epochs: int | None = None, train_dataloaders: Any = None, val_dataloaders: Any = None) -> float:
        """Fine-tune the exported model (then each of its :attr:`ladder`) with its compression applied; set and
        return ``result.accuracy``.

        Defaults: ``finetune_epochs`` and the evaluator's loaders. Give the train loader of *all* training
        data and a validation loader the search never trained on, so the accuracy is an honest estimate.
        """
        result = self._result or self.export_result()
        epochs = self.finetune_epochs if epochs is None else epochs
        loaders = {"train_dataloaders": train_dataloaders, "val_dataloaders": val_dataloaders}
        accuracy = self._finetune(result, epochs, loaders)
        for other in self.ladder:
            self._finetune(other, epochs, loaders)
        return accuracy

    def _finetune(self, found: SearchResult, epochs: int, loaders: dict[str, Any]) -> float:
        found.accuracy = finetune(found.model, self.model_space.evaluator, epochs=epochs,
                                  learning_rate=self.finetune_learning_rate, **loaders)
        found.model.float()  # Lightning's 64-true leaves it in float64
        found.costs = self._costs(found.model)  # a measured cost (Ethos-U bytes) changes with the weights
        return found.accuracy

    def _frozen(self, sample: dict[str, Any]) -> SearchResult:
        """``sample`` with a copy of the supernet's weights, and its exact costs."""
        model = copy.deepcopy(self.model_space.freeze(sample).executable_model()).float()
        return SearchResult(sample=sample, accuracy=None, costs=self._costs(model),
                            reference_costs=self.reference_costs, model=model)

    def _ladder(self, first: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to ``exports`` - 1 cheaper architectures after ``first``: each is what the export rule (the best
        supernet loss; with ``parsimony``, the cheapest within that many standard errors of it) picks among the
        scored ones that cost at most :data:`LADDER_STEP` of the export before it."""
        if self.exports < 2 or self._scored is None:
            return []
        score, cost = self._scored
        chosen = [first]
        for _ in range(self.exports - 1):
            bound = cost(chosen[-1]) * LADDER_STEP
            pool = [x for x, _ in score.losses.values() if cost(x) <= bound]
            if not pool:
                break
            chosen.append(self._parsimonious(min(pool, key=score), score, cost, bound))
        return chosen[1:]

    def _costs(self, model: nn.Module) -> dict[str, float]:
        """Every reported cost of a frozen model: formulas, or what a cost measures on the model itself (Arm's
        encoder for Ethos-U bytes, see :func:`~nni_udc.evaluators.exact.cost_source`)."""
        specs = model_specs(model, self._example)
        return {name: frozen_cost(model, specs, self.cost_table[name]) for name in self.report_costs}

    def _within_budget(self, argmax: dict[str, Any]) -> dict[str, Any]:
        """The most probable architectures with exact cost within the target; the best by supernet loss.

        The search steered the *expected* cost; the most probable single architecture can land above or
        below it. Architectures are listed in decreasing joint probability, the first ``candidates`` within
        budget are scored by the supernet's loss on fixed architecture-data batches and the lowest wins.
        With ``refine``, the most probable architecture within budget *given* each value of each label joins
        the candidates (so that a wide, low-bit model competes with a narrow, high-bit one), and single-label
        moves within budget that lower the loss are then taken, best first. With ``samples``, that many random
        architectures within budget are scored too.
        """
        dist, supernet, profiler, rule = self.distribution, self._supernet, self._profiler, self._rule
        if dist is None or supernet is None or profiler is None or rule is None or self.target is None:
            raise RuntimeError("UDC needs a finished search with a target to fit a budget")
        budget = self.target * rule.reference
        cost = _remembered(_compiled_cost(profiler.expression))
        found = most_probable(dist, cost, budget=budget, k=self.candidates, used=self._used)
        if not found:
            _logger.warning("no architecture among the most probable fits the budget %.4g; exporting the cheapest "
                            "move away from the most probable one", budget)
            return _cheapest_descent(argmax, dist, cost, budget)
        if (len(found) == 1 and not self.refine and not self.samples and not self.uniform and not self.parsimony
                and self.exports == 1):
            return found[0][1]
        starts = [sample for _, sample in found] + _random_within(dist.choices, cost, budget, self.samples,
                                                                  seed=self.seed or 0)
        if self.uniform:
            starts += [x for x in self._uniform_grid if cost(x) <= budget]
        if self.refine:  # also the most probable model given each value of each label: wide-and-low-bit
            for label, choice in dist.choices.items():  # is two label changes away from narrow-and-8-bit
                for value in choice.values:
                    if value == found[0][1][label]:  # the most probable within budget already has it
                        continue
                    starts += [x for _, x in most_probable(dist, cost, budget=budget, fixed={label: value},
                                                           used=self._used, max_visits=2000)]
        score = _SupernetScore(supernet, dist, self.model_space.evaluator)
        unique = {tuple(sorted(x.items(), key=lambda kv: kv[0])): x for x in starts}
        best = min(unique.values(), key=score)
        if self.refine:
            best = local_search(best, dist.choices, score, lambda x: cost(x) <= budget,
                                used=self._used, rounds=self.refine)
        self._scored = (score, cost)
        return self._parsimonious(best, score, cost, budget)

    def _parsimonious(self, best: dict[str, Any], score: _SupernetScore, cost: Callable[[Mapping[str, Any]], float],
                      budget: float) -> dict[str, Any]:
        """With ``parsimony``, the cheapest scored architecture within ``budget`` whose loss is within that many
        standard errors of ``best``'s; else ``best``."""
        if not self.parsimony:
            return best
        return min((x for x in score.within(best, self.parsimony) if cost(x) <= budget),
                   key=lambda x: (cost(x), score(x)))


#: each further export of a ladder costs at most this fraction of the one before (UDC ``exports``): the main
#: job's targets are 1.35x apart, so three exports at 1, <= 0.85 and <= 0.72 fill the gap to the next lower one
LADDER_STEP = 0.85


class _SupernetScore:
    """The supernet's loss with its architecture set to a sample, on fixed batches of the architecture data.

    Batch-norm uses the batch's statistics (training mode), as weight-sharing searches score subnets;
    running statistics and architecture parameters are restored after every call. The ``batches`` are drawn
    once and scored as one, so every sample is scored on the same data. Each sample is scored once (the fitter's enumerations
    meet the same architectures many times) and its per-sample losses are kept for :meth:`within`: make a new
    score once the supernet's weights change.
    """

    def __init__(self, supernet: nn.Module, distribution: ArchitectureDistribution, evaluator: Any, batches: int = 4) -> None:
        self.supernet, self.distribution = supernet, distribution
        self.criterion = getattr(evaluator.module, "criterion", nn.CrossEntropyLoss())
        self.unreduced = None  # the criterion without its mean over the batch, where it has one to turn off
        if getattr(self.criterion, "reduction", None) == "mean":
            self.unreduced = copy.copy(self.criterion)
            self.unreduced.reduction = "none"
        with torch.random.fork_rng():  # a shuffling loader draws from the global RNG
            drawn = list(itertools.islice(iter(evaluator.val_dataloaders), batches))
        # One forward over all of them: a tiny model's forward costs mostly its weights' quantisation, so one
        # batch of 4 × 64 images is much cheaper than four (the main job's loop with samples: 300 took 110 s
        # instead of 147 s, same exports at seed 0), and batch-norm sees every image at once.
        self.batches = [tuple(torch.cat(parts) for parts in zip(*drawn))] if drawn else []
        self.losses: dict[frozenset, tuple[dict[str, Any], torch.Tensor]] = {}  # key → (sample, per-sample losses)

    def __call__(self, sample: Mapping[str, Any]) -> float:
        key = _key(sample)
        if key not in self.losses:
            self.losses[key] = (dict(sample), self._per_sample(sample))
        return float(self.losses[key][1].mean())

    def within(self, best: Mapping[str, Any], errors: float) -> list[dict[str, Any]]:
        """Every scored sample whose mean loss exceeds ``best``'s by at most ``errors`` standard errors of the
        per-sample difference (paired: the same batches), ``best`` included."""
        self(best)
        reference = self.losses[_key(best)][1]
        close = []
        for sample, losses in self.losses.values():
            difference = losses - reference
            error = float(difference.std()) / len(difference) ** 0.5 if len(difference) > 1 else 0.0
            if float(difference.mean()) <= errors * error:
                close.append(sample)
        return close

    @torch.no_grad()
    def _per_sample(self, sample: Mapping[str, Any]) -> torch.Tensor:
        supernet = self.supernet
        buffers = {k: v.clone() for k, v in supernet.state_dict().items()
                   if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        alphas = self.distribution.state()
        was_training = supernet.training
        try:
            self.distribution.set(sample)
            supernet.train()
            losses = [self._losses(supernet(x), y) for x, y in self.batches]
        finally:
            self.distribution.restore(alphas)
            supernet.load_state_dict(buffers, strict=False)
            supernet.train(was_training)
        return torch.cat(losses)

    def _losses(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One loss per sample: the criterion unreduced, averaged over a sample's elements (pixels for L1)."""
        if self.unreduced is not None:
            return self.unreduced(output, target).reshape(len(target), -1).mean(1).float()
        return torch.stack([self.criterion(o[None], t[None]).float() for o, t in zip(output, target)])


def _random_within(choices: Mapping[str, Any], cost: Callable[[Mapping[str, Any]], float], budget: float,
                   count: int, *, seed: int, tries: int = 200) -> list[dict[str, Any]]:
    """Up to ``count`` architectures drawn uniformly (seeded), keeping those with ``cost <= budget``
    (at most ``tries × count`` draws: a budget below almost every architecture yields fewer)."""
    rng = random.Random(seed)
    found: list[dict[str, Any]] = []
    for _ in range(tries * count):
        if len(found) >= count:
            break
        sample = {label: rng.choice(c.values) for label, c in choices.items()}
        if cost(sample) <= budget:
            found.append(sample)
    return found


def _key(sample: Mapping[str, Any]) -> frozenset:
    """A sample as a dictionary key (choice values that are not hashable, by their text)."""
    try:
        return frozenset(sample.items())
    except TypeError:
        return frozenset((label, repr(value)) for label, value in sample.items())


def _remembered(fn: Callable[[Mapping[str, Any]], float]) -> Callable[[Mapping[str, Any]], float]:
    """``fn`` of a sample, computed once per sample: the fitter's enumerations (every candidate list, each
    label fixed in turn, the local search's neighbours) meet the same architectures many times."""
    memo: dict[frozenset, float] = {}

    def remembered(sample: Mapping[str, Any]) -> float:
        key = _key(sample)
        if key not in memo:
            memo[key] = fn(sample)
        return memo[key]

    return remembered


def _compiled_cost(expression: Any) -> Callable[[Mapping[str, Any]], float]:
    evaluate = compile_expression(expression)
    return lambda sample: float(evaluate(sample))


def _cheapest_descent(sample: dict[str, Any], distribution: ArchitectureDistribution,
                      cost: Callable[[Mapping[str, Any]], float], budget: float) -> dict[str, Any]:
    """Fallback when no probable architecture fits: single-label moves, the most cost saved per log-probability
    lost first, until within budget or nothing is cheaper."""
    log_p = distribution.log_probabilities()
    current, now = dict(sample), cost(sample)
    while now > budget:
        best = None
        for label, choice in distribution.choices.items():
            here = float(log_p[label][choice.values.index(current[label])])
            for i, value in enumerate(choice.values):
                c = cost({**current, label: value})
                if c < now:
                    rate = (now - c) / max(here - float(log_p[label][i]), 1e-9)
                    if best is None or rate > best[0]:
                        best = (rate, label, value, c)
        if best is None:
            _logger.warning("no architecture of the space fits the budget %.4g (cheapest found: %.4g)", budget, now)
            break
        _, label, value, now = best
        current[label] = value
    return current
