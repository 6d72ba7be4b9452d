"""Run what an experiment file describes: one search (``nni-udc search``) and its pieces.

:func:`run_search` builds the space, evaluator and strategy of an :class:`~nni_udc.config.ExperimentConfig`,
runs a real ``NasExperiment``, and writes into its output directory:

- ``model.pt`` — the found model (``torch.save`` of the module; compression applied, fine-tuned);
- ``architecture.json`` — its sample (label → chosen value);
- ``report.json`` — accuracy (validation and test), every reported cost, the reference costs and settings;
- ``tensorboard/`` — Lightning's TensorBoard logs of the search and fine-tuning.

One-shot strategies (the UDC presets) take a cost ``target`` (fraction of the reference) or a penalty
``weight``; NNI's multi-trial strategies train ``strategy.max_trials`` architectures and keep the most
accurate one within the target (then train it with the fine-tuning recipe).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nni_udc.config import ConfigError, ExperimentConfig

__all__ = ["ParetoOutcome", "SearchOutcome", "build_strategy", "quiet", "run_pareto", "run_search", "study_points"]

_PRESETS = {"udc": "UDC", "haloc": "HALOC", "channel-mixed-precision": "ChannelMixedPrecision", "dass": "DASS"}
_MULTI_TRIAL = {"regularized-evolution": "RegularizedEvolution", "random": "Random", "tpe": "TPE",
                "grid-search": "GridSearch"}


@dataclass
class SearchOutcome:
    """One finished search: the architecture, its accuracies and exact costs (``cost`` is the optimised one)."""

    sample: dict[str, Any]
    accuracy: float
    test_accuracy: float
    costs: dict[str, float]
    reference_costs: dict[str, float]
    cost: str
    seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def relative_cost(self) -> float:
        """The optimised cost as a fraction of the uncompressed reference (scale-free, 1 = float model)."""
        return self.costs[self.cost] / self.reference_costs[self.cost]

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "model"}
        out["relative_cost"] = self.relative_cost
        return out


def quiet() -> None:
    """Silence NNI's and Lightning's INFO logs and warnings (our progress bars say what happens)."""
    import nni.nas.experiment  # noqa: F401  (both set their loggers' levels when imported: import them first)
    import pytorch_lightning  # noqa: F401

    warnings.filterwarnings("ignore")
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("nni", "pytorch_lightning", "lightning", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _space(config: ExperimentConfig, data_shape: tuple[int, ...]) -> Any:
    """The space of ``config``, checked against the data set's input shape."""
    from nni_udc.spaces.registry import resolve_space

    where = f"{config.path}: space"
    try:
        cls, shape = resolve_space(config.space.name)
    except ValueError as error:
        raise ConfigError(f"{where}.name: {error}") from None
    if shape is not None and tuple(shape) != tuple(data_shape):
        raise ConfigError(f"{where}.name: space {config.space.name!r} takes inputs of shape {tuple(shape)}, but data "
                          f"set {config.data.name!r} has {tuple(data_shape)}")
    try:
        space = cls(**config.space.args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.args: {config.space.name} rejects {config.space.args!r}: {error}") from None
    return space


def build_strategy(config: ExperimentConfig, *, target: float | None = None, weight: float | None = None) -> Any:
    """The strategy of ``config``; ``target``/``weight`` override the file's ``search`` section (one-shot only)."""
    import nni.nas.strategy as nni_strategies

    import nni_udc.strategies as ours

    s, t = config.strategy, config.training
    try:
        if not s.one_shot:
            return getattr(nni_strategies, _MULTI_TRIAL[s.name])(**s.args)
        target = config.search.target if target is None and weight is None else target
        weight = config.search.weight if weight is None else weight
        return getattr(ours, _PRESETS[s.name])(
            cost=config.hardware.cost, hardware=config.hardware.target, target=target, weight=weight,
            step_size=s.step_size, arc_learning_rate=s.arc_learning_rate, warmup_epochs=s.warmup_epochs,
            temperature=s.temperature, finetune_epochs=t.finetune_epochs,
            finetune_learning_rate=t.finetune_learning_rate, seed=config.seed, **s.args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{config.path}: strategy.args: {s.name} rejects {s.args!r}: {error}") from None


def _evaluator(config: ExperimentConfig, output: Path, *, progress: bool, logger: bool) -> Any:
    from pytorch_lightning.loggers import TensorBoardLogger

    from nni_udc.evaluators.lightning import classification_evaluator

    tb = TensorBoardLogger(str(output), name="tensorboard", version="") if logger else False
    return classification_evaluator(config.data.name, epochs=config.training.epochs,
                                    batch_size=config.training.batch_size, learning_rate=config.training.learning_rate,
                                    seed=config.data.seed, logger=tb, enable_progress_bar=progress)


def run_search(config: ExperimentConfig, *, target: float | None = None, weight: float | None = None,
               output: str | Path | None = None, progress: bool = False, logger: bool = True) -> SearchOutcome:
    """Run one search of ``config`` and write model, architecture and report to ``output`` (default: config's).

    Example:
        >>> from nni_udc.config import parse_config
        >>> config = parse_config({"space": "digits", "training": {"epochs": 1, "finetune_epochs": 1}}, "inline")
        >>> outcome = run_search(config, target=0.1, output="runs/doc")  # doctest: +SKIP
        >>> outcome.relative_cost <= 0.1                                   # doctest: +SKIP
        True
    """
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.data import load_dataset
    from nni_udc.evaluators.training import accuracy

    output = Path(output if output is not None else config.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    torch.manual_seed(config.seed)
    splits = load_dataset(config.data.name, seed=config.data.seed)
    space = _space(config, splits.input_shape)
    strategy = build_strategy(config, target=target, weight=weight)
    evaluator = _evaluator(config, output, progress=progress, logger=logger)
    if config.strategy.one_shot:
        nni_config = NasExperimentConfig("sequential", "raw")
        nni_config.experiment_working_directory = str((output / "nni-experiments").resolve())
        experiment = NasExperiment(space, evaluator, strategy, nni_config)
        experiment.run(debug=False)
        model = experiment.export_top_models(formatter="instance")[0]
        result = strategy.result
        sample, costs, reference = result.sample, result.costs, result.reference_costs
        val = result.accuracy if result.accuracy is not None else accuracy(model, splits.val)
    else:
        model, sample, costs, reference, val = _multi_trial(config, space, strategy, evaluator, splits, output, progress,
                                                            target=target if target is not None else config.search.target)
    outcome = SearchOutcome(sample=sample, accuracy=float(val), test_accuracy=accuracy(model, splits.test),
                            costs=dict(costs), reference_costs=dict(reference), cost=config.hardware.cost or "",
                            seconds=time.time() - started, model=model)
    _write(outcome, output, config, target=target, weight=weight)
    return outcome


def _multi_trial(config: ExperimentConfig, space: Any, strategy: Any, evaluator: Any, splits: Any,
                 output: Path, progress: bool, *, target: float | None) -> tuple:
    """NNI multi-trial search; the most accurate architecture within ``target`` is retrained and returned."""
    from nni_udc.evaluators.costs import total
    from nni_udc.evaluators.exact import model_specs
    from nni_udc.evaluators.training import train_classifier
    from nni_udc.strategies import UDC, run_multitrial

    example = torch.zeros(1, *splits.input_shape)
    results = run_multitrial(space, evaluator, strategy, example_input=example, max_trials=config.strategy.max_trials,
                             workdir=output / "nni-experiments", progress=progress, costs=["params"])
    # Every cost of the target and the reference (largest float architecture), exactly as the one-shot search does.
    probe = UDC(cost=config.hardware.cost, hardware=config.hardware.target)
    probe.prepare_cost(space, example)  # the multi-trial search froze copies: the space is as built
    reference = probe.reference_costs

    def costs_of(sample: dict[str, Any]) -> dict[str, float]:
        specs = model_specs(space.freeze(sample), example)
        return {name: float(total(specs, probe.cost_table[name])) for name in probe.report_costs}

    cost = config.hardware.cost or probe.cost_name
    measured = [(r, costs_of(r.sample)) for r in results]
    fitting = [(r, c) for r, c in measured if target is None or c[cost] <= target * reference[cost]]
    if not fitting:
        cheapest = min(c[cost] / reference[cost] for _, c in measured)
        raise RuntimeError(f"none of the {len(results)} architectures fits the target {target:g} x reference "
                           f"(the cheapest is {cheapest:.3g}); raise search.target or strategy.max_trials")
    best, costs = max(fitting, key=lambda rc: rc[0].accuracy)
    model = space.freeze(best.sample)
    scores = train_classifier(model, splits, epochs=max(config.training.epochs, config.training.finetune_epochs),
                              learning_rate=config.training.learning_rate, batch_size=config.training.batch_size,
                              seed=config.seed)
    return model, best.sample, costs, reference, scores["val"]


def _write(outcome: SearchOutcome, output: Path, config: ExperimentConfig, **settings: Any) -> None:
    torch.save(outcome.model, output / "model.pt")
    (output / "architecture.json").write_text(json.dumps(outcome.sample, indent=2) + "\n")
    report = {"experiment": config.name, "config": config.path, "strategy": config.strategy.name,
              "hardware": config.hardware.target, **settings, **outcome.to_json()}
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")


# ----- the outer loop ----------------------------------------------------------------------------------------

@dataclass
class ParetoOutcome:
    """The study's finished searches, its front (cheapest first), hypervolume and the files written."""

    points: list[Any]
    front: list[Any]
    hypervolume: float
    files: dict[str, Path]


def storage_url(config: ExperimentConfig) -> str:
    """The study's storage: the file's ``pareto.storage``, else an SQLite file in the output directory."""
    if config.pareto.storage:
        return config.pareto.storage
    return f"sqlite:///{(config.output / 'study.db').resolve()}"


def study_points(study: Any) -> list[Any]:
    """Every completed trial of a study as a front :class:`~nni_udc.pareto.Point`."""
    from nni_udc.pareto import Point, finished

    points = []
    for t in finished(study):
        attrs = t.user_attrs
        points.append(Point(number=t.number, accuracy=t.values[0], relative_cost=t.values[1],
                            value=next(iter(t.params.values()), None), test_accuracy=attrs.get("test_accuracy"),
                            costs=attrs.get("costs", {}), architecture=attrs.get("architecture", {}),
                            output=attrs.get("output", "")))
    return points


def run_pareto(config: ExperimentConfig, *, progress: bool = True, inner_progress: bool = False) -> ParetoOutcome:
    """Run (or resume, or join as one more worker) the outer loop of ``config``; write and return the front.

    Each trial runs :func:`run_search` with one cost target (or λ) into ``output/trials/NNN/`` and stores the
    architecture, accuracies and every reported cost as trial attributes. The loop ends when the study has
    ``pareto.trials`` completed trials, whichever worker completed them.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from tqdm import tqdm

    from nni_udc.pareto.study import enough
    from nni_udc.pareto import finished, hypervolume, non_dominated, open_study, plot_front, suggest
    from nni_udc.pareto import write_front

    if not config.strategy.one_shot:
        raise ConfigError(f"{config.path}: strategy.name: the outer loop varies the one-shot search's cost target; "
                          f"it must be one of udc, haloc, channel-mixed-precision, dass, but got "
                          f"{config.strategy.name!r} (use 'nni-udc search' for multi-trial strategies)")
    p = config.pareto
    config.output.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(storage=storage_url(config), name=p.study_name or config.name, sampler=p.sampler, seed=p.seed,
                       variable=p.variable, low=p.low, high=p.high, initial=p.initial,
                       heartbeat_interval=p.heartbeat_interval, grace_period=p.grace_period)
    done = len(finished(study))
    bar = tqdm(total=p.trials, initial=min(done, p.trials), desc="pareto searches", unit="search", disable=not progress)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if enough(study, trial, p.trials):  # another worker runs the last searches: do no extra work
            study.stop()
            raise optuna.TrialPruned("the study has enough searches")
        value = suggest(trial, p.variable, p.low, p.high)
        out = config.output / "trials" / f"{trial.number:04d}"
        bar.set_postfix({p.variable: f"{value:.3g}", "trial": trial.number})
        try:
            outcome = run_search(config, output=out, progress=inner_progress, **{p.variable: value})
        except KeyboardInterrupt:  # Ctrl-C: this value is searched again when the run resumes
            study.enqueue_trial({p.variable: value})
            raise
        for key, val in (("architecture", outcome.sample), ("test_accuracy", outcome.test_accuracy),
                         ("costs", outcome.costs), ("reference_costs", outcome.reference_costs),
                         ("cost", outcome.cost), ("seconds", outcome.seconds), ("output", str(out)),
                         ("worker", f"{socket.gethostname()}:{os.getpid()}")):
            trial.set_user_attr(key, val)
        return outcome.accuracy, outcome.relative_cost

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            bar.n = min(len(finished(study)), p.trials)
            bar.refresh()

    remaining = p.trials - done
    try:
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, gc_after_trial=True,
                           callbacks=[MaxTrialsCallback(p.trials, states=(TrialState.COMPLETE,)), on_trial])
    finally:
        bar.close()
    points = study_points(study)
    front = non_dominated(points)
    hv = hypervolume(points, p.reference_point)
    csv_path, json_path = write_front(front, config.output, cost=config.hardware.cost or "", hv=hv,
                                      reference=p.reference_point, variable=p.variable)
    files = {"csv": csv_path, "json": json_path}
    if points:
        files["png"], files["html"] = plot_front(points, config.output, cost=config.hardware.cost or "",
                                                 title=f"{config.name}: {len(front)} of {len(points)} searches on the front")
    return ParetoOutcome(points, front, hv, files)
