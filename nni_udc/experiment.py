"""Run what an experiment file describes: one search (``nni-udc search``), the outer loop (``nni-udc pareto``)
and the uniform-compression baseline (``nni-udc baseline``).

:func:`run_search` builds the space, evaluator and strategy of an :class:`~nni_udc.config.ExperimentConfig`,
runs a real ``NasExperiment``, and writes into its output directory:

- ``model.pt`` — the found model (``torch.save`` of the module; compression applied, fine-tuned);
- ``model.pt2``, ``model.state_dict.pt``, ``model.record.json`` — the same model baked into plain torch
  (:mod:`nni_udc.export`): a ``torch.export`` program that runs with torch alone, its tensors, and where each came from;
- ``architecture.json`` — its sample (label → chosen value);
- ``report.json`` — accuracy (validation and test), every reported cost, the reference costs and settings;
- ``tensorboard/`` — Lightning's TensorBoard logs of the search and fine-tuning.

One-shot strategies (the UDC presets) take a cost ``target`` (fraction of the reference) or a penalty
``weight``; NNI's multi-trial strategies train ``strategy.max_trials`` architectures and keep the most
accurate one within the target (then train it with the fine-tuning recipe).

:func:`run_baseline` trains every model of the space's uniform grid (:func:`~nni_udc.strategies.uniform_grid`)
from scratch with the budget of one search and writes ``baseline.csv`` and ``baseline.json``;
:func:`run_pareto` runs it after the outer loop and compares the two fronts; :func:`run_retrain` (``nni-udc
retrain``) trains both fronts' models again under several seeds and compares the means.
"""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nni_udc._manifest import manifest_in
from nni_udc.config import ONE_SHOT, ConfigError, ExperimentConfig, brief, check_pareto, clip
from nni_udc.evaluators.divergence import DivergedError, DivergenceCheck, check_finite, told_once
from nni_udc.pareto import Comparison, Point, read_baseline, write_baseline
from nni_udc.pareto.baseline import BASELINE_CSV, BASELINE_JSON
from nni_udc.pareto.metric import metric_of_data
from nni_udc.pareto.record import TrialRecord
from nni_udc.pareto.retrained import RETRAINED_JSON
from nni_udc.registry import DATASETS, STRATEGIES

if TYPE_CHECKING:
    from nni_udc.evaluators.costs import CostFn

__all__ = ["BaselineOutcome", "ParetoOutcome", "SearchOutcome", "build_strategy", "check_space", "distributed_rank",
           "ladder_directory", "pareto_workers", "quiet", "resolve_budget", "run_baseline", "run_pareto", "run_retrain", "run_search",
           "study_points", "training_device", "RetrainOutcome"]

#: fraction of the train split on which a one-shot search trains its architecture parameters
ARCH_SPLIT = 0.2


@dataclass
class SearchOutcome:
    """One finished search: the architecture, its accuracies and exact costs (``cost`` is the optimised one);
    ``ladder``: the cheaper models it exported beside it (UDC's ``exports``), each an outcome of its own."""

    sample: dict[str, Any]
    accuracy: float
    test_accuracy: float
    costs: dict[str, float]
    reference_costs: dict[str, float]
    cost: str
    seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    ladder: list[SearchOutcome] = field(default_factory=list, repr=False, compare=False)

    @property
    def relative_cost(self) -> float:
        """The optimised cost as a fraction of the uncompressed reference (scale-free, 1 = float model)."""
        return self.costs[self.cost] / self.reference_costs[self.cost]

    def record(self, *, number: int | None = None, variable: str | None = None, value: float | None = None,
               output: str | Path = "") -> TrialRecord:
        """This search as one trial of the outer loop (:class:`~nni_udc.pareto.record.TrialRecord`): ``variable``
        names the outer variable whose ``value`` it ran with, ``output`` its directory.

        Example:
            >>> outcome = SearchOutcome(sample={"bits": 4}, accuracy=0.9, test_accuracy=0.88,
            ...                         costs={"memory_bits": 800.0}, reference_costs={"memory_bits": 1e4},
            ...                         cost="memory_bits", seconds=12.0)
            >>> record = outcome.record(number=0, variable="target", value=0.1, output="runs/trials/0000")
            >>> record.relative_cost, record.architecture, record.to_user_attrs()["output"]
            (0.08, {'bits': 4}, 'runs/trials/0000')
        """
        ladder = tuple(o.record(number=number, variable=variable, value=value, output=ladder_directory(output, k))
                       for k, o in enumerate(self.ladder, 1))
        return TrialRecord(number=number, variable=variable, value=value, accuracy=self.accuracy,
                           relative_cost=self.relative_cost, test_accuracy=self.test_accuracy, costs=dict(self.costs),
                           reference_costs=dict(self.reference_costs), cost=self.cost, architecture=dict(self.sample),
                           output=str(output), seconds=self.seconds, ladder=ladder)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("model", "ladder")}
        out["relative_cost"] = self.relative_cost
        if self.ladder:
            out["ladder"] = [ladder_directory("", k).as_posix() for k in range(1, len(self.ladder) + 1)]
        return out


#: the subdirectory of a search's output that holds its cheaper exports (``ladder/1``, ``ladder/2``, ...)
LADDER = "ladder"


def ladder_directory(output: str | Path, k: int) -> Path:
    """Where a search writing to ``output`` keeps its k-th cheaper export (UDC's ``exports``)."""
    return Path(output) / LADDER / str(k)


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Within the block, silence warnings and NNI's and Lightning's INFO logs (our progress bars say what happens).

    Scoped: warning filters and logger levels are restored on exit, so a program that calls
    :func:`~nni_udc.experiment.run_search` keeps its own. ``enabled=False`` changes nothing (``--verbose``).
    Like :func:`warnings.catch_warnings`, not meant for threads that warn at the same time.

    Example:
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     with quiet():
        ...         warnings.warn("dropped")
        ...     warnings.warn("kept")
        >>> [str(w.message) for w in seen]
        ['kept']
    """
    if not enabled:
        yield
        return
    import nni.nas.experiment  # noqa: F401  (both set their loggers' levels when imported: import them first)
    import pytorch_lightning  # noqa: F401

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.split(".")[0] in ("nni", "pytorch_lightning", "lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _space(config: ExperimentConfig, data_shape: tuple[int, ...]) -> Any:
    """The space of ``config``, checked against the data set's input shape."""
    from nni_udc.spaces.registry import resolve_space

    where = f"{config.path}: space"
    if config.space.model is not None:
        return _own_model_space(config, data_shape)
    try:
        cls, shape = resolve_space(config.space.name)
    except ValueError as error:
        raise ConfigError(f"{where}.name: {error}") from None
    # a fully convolutional space (EdsrSpace.any_input_size) takes any H x W: only the channels must agree
    compared = 1 if getattr(cls, "any_input_size", False) and shape is not None and len(shape) == len(data_shape) else None
    if shape is not None and tuple(shape[:compared]) != tuple(data_shape[:compared]):
        raise ConfigError(f"{where}.name: space {config.space.name!r} takes inputs of shape {tuple(shape)}, but data "
                          f"set {config.data.name!r} has {tuple(data_shape)}")
    try:
        space = cls(**config.space.args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.args: {config.space.name} rejects {brief(config.space.args)}: "
                          f"{clip(str(error))}") from None
    return space


def _own_model_space(config: ExperimentConfig, data_shape: tuple[int, ...]) -> Any:
    """``space.model`` built with ``space.args`` and made compressible with ``space.compress``; checked by one
    forward pass on the data set's input shape (evaluation mode, so BatchNorm takes a batch of one)."""
    from nni_udc._imports import import_named
    from nni_udc.compressible import CompressionPolicy, make_compressible

    where, spec = f"{config.path}: space", config.space
    try:
        build = import_named(spec.model)  # type: ignore[arg-type]  # not None: checked by the caller
    except ValueError as error:
        raise ConfigError(f"{where}.model: {clip(str(error))}") from None
    try:
        net = build(**spec.args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.args: {spec.model} rejects {brief(spec.args)}: {clip(str(error))}") from None
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"{where}.model: {spec.model!r} returned a {type(net).__name__}, not a torch.nn.Module")
    compress = dict(spec.compress)
    try:
        if isinstance(compress.get("policy"), dict):
            policy = dict(compress["policy"])
            policy["skip"] = tuple(policy.get("skip", ()))
            compress["policy"] = CompressionPolicy(**policy)
        if "depth" in compress:  # its blocks are checked to keep their input's shape on the data set's inputs
            compress["example_input"] = torch.zeros(1, *data_shape)
        space = make_compressible(net, **compress)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.compress: make_compressible rejects {brief(spec.compress)}: "
                          f"{clip(str(error))}") from None
    was_training = space.training
    try:
        with torch.no_grad():
            space.eval()(torch.zeros(1, *data_shape))
    except Exception as error:  # any failure of the user's forward code on this input means "does not fit"
        raise ConfigError(f"{where}.model: {spec.model} does not run on data set {config.data.name!r}'s inputs of "
                          f"shape {tuple(data_shape)}: {clip(str(error))}") from None
    finally:
        space.train(was_training)
    return space


def check_space(config: ExperimentConfig) -> None:
    """Build the space of ``config`` against its data set's registered input shape: a wrong space or argument
    fails before any data loads or any output is written."""
    _space(config, DATASETS[config.data.name].input_shape)


def resolve_budget(config: ExperimentConfig, *, target: float | None = None,
                   weight: float | None = None) -> tuple[float | None, float | None]:
    """The cost ``target`` and penalty ``weight`` one search uses: the arguments, else the file's ``search``.

    One-shot: a ``weight`` alone replaces the file's target (λ-only search). Multi-trial strategies use the
    target only (the most accurate architecture within it); their weight is ``None``.

    Example:
        >>> from nni_udc.config import parse_config
        >>> config = parse_config({"space": "digits", "search": {"target": 0.06}}, "inline")
        >>> resolve_budget(config), resolve_budget(config, weight=2.0)
        ((0.06, 0.0), (None, 2.0))
    """
    if not config.strategy.one_shot:
        return (target if target is not None else config.search.target), None
    resolved = config.search.target if target is None and weight is None else target
    return resolved, (config.search.weight if weight is None else weight)


def build_strategy(config: ExperimentConfig, *, target: float | None = None, weight: float | None = None,
                   supernet: Path | None = None) -> Any:
    """The strategy of ``config``; ``target``/``weight`` override the file's ``search`` section (one-shot only).

    ``supernet``: weights of a shared supernet (:func:`train_supernet`) the one-shot search starts from; its
    weights are trained already, so the search has no warm-up.
    """
    s, t = config.strategy, config.training
    if s.baseline:
        raise ConfigError(f"{config.path}: strategy.name: {s.name!r} trains the uniform grid, not one search: run it "
                          f"with run_baseline ('nni-udc baseline'); one search takes one of "
                          f"{', '.join(STRATEGIES.where(lambda entry: entry.build is not None))}")
    try:
        if not s.one_shot:
            return STRATEGIES[s.name].make(**s.args)
        target, weight = resolve_budget(config, target=target, weight=weight)
        shared = {} if supernet is None else {"supernet_weights": supernet}
        return STRATEGIES[s.name].make(
            cost=config.hardware.cost, hardware=config.hardware.target, target=target, weight=weight,
            step_size=s.step_size, arc_learning_rate=s.arc_learning_rate,
            warmup_epochs=s.warmup_epochs if supernet is None else 0,
            temperature=s.temperature, finetune_epochs=t.finetune_epochs,
            finetune_learning_rate=t.finetune_learning_rate, seed=config.seed, **shared, **s.args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{config.path}: strategy.args: {s.name} rejects {brief(s.args)}: "
                          f"{clip(str(error))}") from None


def training_device(config: ExperimentConfig) -> torch.device:
    """The torch device of ``training.accelerator`` (``auto``: cuda when available, else cpu), for the plain
    training loops; a device this machine lacks is a :class:`ConfigError` naming the file and the field.

    Example:
        >>> from nni_udc.config import parse_config
        >>> training_device(parse_config({"space": "digits", "training": {"accelerator": "cpu"}}, "inline"))
        device(type='cpu')
    """
    from nni_udc.evaluators.devices import DeviceUnavailable, torch_device

    t = config.training
    try:
        return torch_device(t.accelerator, t.devices)
    except DeviceUnavailable as error:
        field = "training.devices" if "devices asked for" in str(error) else "training.accelerator"
        raise ConfigError(f"{config.path}: {field}: {error}") from None


def _evaluator(config: ExperimentConfig, output: Path, *, progress: bool, logger: bool) -> Any:
    """The search's evaluator; a one-shot search trains its architecture on a part of the train split
    (``ARCH_SPLIT``), so the validation split that chooses and reports stays unseen."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from nni_udc.evaluators.tasks import task_of

    training_device(config)  # a missing GPU is a clear error here, not Lightning's traceback at fit time
    if config.training.devices > 1 and not config.strategy.one_shot:
        raise ConfigError(f"{config.path}: training.devices: {config.training.devices} devices (DDP) work for the "
                          f"one-shot strategies ({', '.join(ONE_SHOT)}), not for {config.strategy.name!r}; use 1")
    tb = TensorBoardLogger(str(output), name="tensorboard", version="") if logger else False
    task = task_of(config.data.name)  # classification, or super-resolution (L1 loss, PSNR)
    classes = {"num_classes": _num_classes(config)} if task.classes else {}
    return task.evaluator(config.data.name, epochs=config.training.epochs,
                          batch_size=config.training.batch_size, learning_rate=config.training.learning_rate,
                          seed=config.data.seed, data_args=_data_args(config), **classes, logger=tb,
                          enable_progress_bar=progress, accelerator=config.training.accelerator,
                          devices=config.training.devices, precision=config.training.precision,
                          arch_split=ARCH_SPLIT if config.strategy.one_shot else None,
                          callbacks=[DivergenceCheck()])  # a diverged search stops at once


def _finetune_loaders(config: ExperimentConfig) -> dict[str, Any]:
    from nni_udc.evaluators.lightning import data_loaders

    train, val = data_loaders(config.data.name, batch_size=config.training.batch_size, seed=config.data.seed,
                              data_args=_data_args(config))
    return {"train_dataloaders": train, "val_dataloaders": val}


def _data_args(config: ExperimentConfig) -> dict[str, Any]:
    """The data set's loader arguments other than the seed (``root`` and ``args`` of the data section)."""
    return {k: v for k, v in config.data.loader_arguments.items() if k != "seed"}


def _num_classes(config: ExperimentConfig) -> int:
    from nni_udc.data import load_dataset

    return int(load_dataset(config.data.name, **config.data.loader_arguments).num_classes)


def run_search(config: ExperimentConfig, *, target: float | None = None, weight: float | None = None,
               output: str | Path | None = None, progress: bool = False, logger: bool = True,
               supernet: Path | None = None, strategy: Any = None) -> SearchOutcome:
    """Run one search of ``config`` and write model, architecture and report to ``output`` (default: config's).

    ``supernet``: start from a shared supernet's weights (:func:`train_supernet`) instead of from scratch.
    ``strategy``: the one :func:`build_strategy` makes of ``config`` (and the same ``target``/``weight``), given
    to inspect it afterwards, e.g. :meth:`~nni_udc.strategies.UDC.supernet_loss` (``benchmarks/supernet_ranking.py``).

    Example:
        >>> from nni_udc.config import parse_config
        >>> config = parse_config({"space": "digits", "training": {"epochs": 1, "finetune_epochs": 1}}, "inline")
        >>> outcome = run_search(config, target=0.1, output="runs/doc")  # doctest: +SKIP
        >>> outcome.relative_cost <= 0.1                                   # doctest: +SKIP
        True
    """
    if strategy is None:
        strategy = build_strategy(config, target=target, weight=weight, supernet=supernet)  # a wrong file fails first
    target, weight = resolve_budget(config, target=target, weight=weight)
    output = Path(output if output is not None else config.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        with manifest_in(output / "nni-experiments"):  # NNI's bookkeeping stays in the run, not in ~ (_manifest.py)
            outcome = _search(config, strategy, output, target=target, progress=progress, logger=logger)
    except DivergedError as error:
        hint = " or the penalty weight" if config.strategy.one_shot else ""
        raise DivergedError(f"{config.path}: the search diverged: {error}; lower training.learning_rate "
                            f"({config.training.learning_rate:g}){hint}") from None
    if distributed_rank() != 0:  # training.devices > 1: every DDP process ends here; the first one writes
        return outcome
    # what the search used, file or arguments
    _write(outcome, output, config, target=target, weight=weight, supernet=str(supernet) if supernet else None)
    return outcome


def distributed_rank() -> int:
    """This process's rank among Lightning's DDP processes (``training.devices`` > 1); 0 when there are none.

    Lightning starts the other ranks by running the same command again with ``LOCAL_RANK`` set, so the rank is
    known before the process group exists: the CLI prints from rank 0 only.

    >>> distributed_rank()
    0
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def _search(config: ExperimentConfig, strategy: Any, output: Path, *, target: float | None, progress: bool,
            logger: bool) -> SearchOutcome:
    """The search of :func:`run_search`, written nowhere yet; a non-finite loss or weight raises DivergedError."""
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.data import load_dataset
    from nni_udc.evaluators.tasks import task_of

    score = task_of(config.data.name).score  # accuracy, or PSNR for super-resolution
    started = time.time()
    torch.manual_seed(config.seed)
    splits = load_dataset(config.data.name, **config.data.loader_arguments)
    space = _space(config, splits.input_shape)
    evaluator = _evaluator(config, output, progress=progress, logger=logger)
    if config.strategy.one_shot:
        nni_config = NasExperimentConfig("sequential", "raw")
        nni_config.experiment_working_directory = str((output / "nni-experiments").resolve())
        experiment = NasExperiment(space, evaluator, strategy, nni_config)
        try:
            with told_once():  # a DivergedError is reported once, by run_search
                experiment.run(debug=False)
            model = experiment.export_top_models(formatter="instance")[0]
        finally:  # NNI stops a finished experiment only at exit, after manifest_in has ended (its manifest: in ~)
            experiment.stop()
        if config.training.finetune_epochs > 0:  # on all training data; reported on the unseen validation split
            strategy.finetune(**_finetune_loaders(config))
        result = strategy.result
        sample, costs, reference = result.sample, result.costs, result.reference_costs
        val = score(model, splits.val)
    else:
        model, sample, costs, reference, val = _multi_trial(config, space, strategy, evaluator, splits, output, progress,
                                                            target=target)
    check_finite(model, where="the found model")  # fine-tuning has no DivergenceCheck of its own
    ladder = [SearchOutcome(sample=r.sample, accuracy=float(score(r.model, splits.val)),
                            test_accuracy=score(r.model, splits.test), costs=dict(r.costs),
                            reference_costs=dict(reference), cost=config.hardware.cost or "",
                            seconds=time.time() - started, model=r.model)
              for r in (strategy.ladder if config.strategy.one_shot else [])]  # UDC's exports > 1
    return SearchOutcome(sample=sample, accuracy=float(val), test_accuracy=score(model, splits.test),
                         costs=dict(costs), reference_costs=dict(reference), cost=config.hardware.cost or "",
                         seconds=time.time() - started, model=model, ladder=ladder)


def train_supernet(config: ExperimentConfig, *, epochs: int, output: str | Path | None = None,
                   progress: bool = False) -> Path:
    """Train the weight-shared supernet of ``config``'s space once and save its weights (``OUTPUT/supernet.pt``).

    The weights train single-path for ``epochs`` (:func:`~nni_udc.strategies.single_path.train_single_path`:
    every step trains the largest, the smallest and two random architectures), on the same part of the train
    split as a search's weights, with the training section's learning rate and batch size. Every search of a
    Pareto sweep then starts from these weights (``run_search(..., supernet=path)``) and needs only a short
    architecture search and its fine-tune. An existing file is reused (resume, or another worker made it);
    workers sharing the output directory train it once.
    """
    from torch.utils.data import DataLoader

    from nni_udc.data import load_dataset
    from nni_udc.data.traced import BundledSplit
    from nni_udc.evaluators.tasks import task_of
    from nni_udc.strategies.single_path import train_single_path

    output = Path(output if output is not None else config.output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "supernet.pt"
    with _locked(output / "supernet.lock"):
        if path.exists():
            return path
        torch.manual_seed(config.seed)
        splits = load_dataset(config.data.name, **config.data.loader_arguments)
        space = _space(config, splits.input_shape)
        strategy = STRATEGIES[config.strategy.name].make(
            cost=config.hardware.cost, hardware=config.hardware.target, weight=0.0, seed=config.seed,
            **config.strategy.args)
        strategy.prepare_cost(space, splits.train.tensors[0][:2])
        supernet = strategy.mutate_model(space)
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(BundledSplit(config.data.name, "train", part="weights", arch_fraction=ARCH_SPLIT,
                                         **config.data.loader_arguments),
                            batch_size=config.training.batch_size, shuffle=True, generator=generator)
        try:
            train_single_path(supernet, strategy.distribution, loader, epochs=epochs,
                              learning_rate=config.training.learning_rate, seed=config.seed, progress=progress,
                              device=training_device(config), criterion=task_of(config.data.name).criterion(),
                              precision=config.training.precision)
        except DivergedError as error:
            raise DivergedError(f"{config.path}: the shared supernet diverged: {error}; lower "
                                f"training.learning_rate ({config.training.learning_rate:g})") from None
        partial = output / "supernet.pt.partial"
        strategy.save_supernet(partial)
        partial.replace(path)  # atomic: a killed run never leaves a half-written file
    return path


def _cost_probe(config: ExperimentConfig, space: Any, example: torch.Tensor
                ) -> tuple[str, dict[str, float], Callable[[dict[str, Any]], dict[str, float]]]:
    """The optimised cost's name, every reported cost of the reference (largest float architecture) and a
    function giving every reported cost of a sample, by the formulas the one-shot search steers with."""
    from nni_udc.evaluators.costs import total
    from nni_udc.evaluators.exact import model_specs
    from nni_udc.strategies import UDC

    probe = UDC(cost=config.hardware.cost, hardware=config.hardware.target)
    # On a copy: profiling runs the space forward in training mode, which would move its BatchNorm statistics
    # and activation clips, and models frozen from the space afterwards would start from them.
    probe.prepare_cost(copy.deepcopy(space), example)
    table = _cost_table(config)

    def costs_of(sample: dict[str, Any]) -> dict[str, float]:
        # The formulas (for Ethos-U bytes: the analytic model): a sample frozen here holds no trained weights
        # for Arm's encoder to measure.
        specs = model_specs(space.freeze(sample), example)
        return {name: float(total(specs, cost)) for name, cost in table.items()}

    return config.hardware.cost or probe.cost_name, probe.reference_costs, costs_of


def _multi_trial(config: ExperimentConfig, space: Any, strategy: Any, evaluator: Any, splits: Any,
                 output: Path, progress: bool, *, target: float | None) -> tuple:
    """NNI multi-trial search; the most accurate architecture within ``target`` is retrained and returned."""
    from nni_udc.evaluators.tasks import task_of
    from nni_udc.evaluators.training import train_classifier
    from nni_udc.strategies import run_multitrial

    example = torch.zeros(1, *splits.input_shape)
    results = run_multitrial(space, evaluator, strategy, example_input=example, max_trials=config.strategy.max_trials,
                             workdir=output / "nni-experiments", progress=progress, costs=["params"])
    cost, reference, costs_of = _cost_probe(config, space, example)
    measured = [(r, costs_of(r.sample)) for r in results]
    fitting = [(r, c) for r, c in measured if target is None or c[cost] <= target * reference[cost]]
    if not fitting:
        cheapest = min(c[cost] / reference[cost] for _, c in measured)
        raise RuntimeError(f"none of the {len(results)} architectures fits the target {target:g} x reference "
                           f"(the cheapest is {cheapest:.3g}); raise search.target or strategy.max_trials")
    best, _ = max(fitting, key=lambda rc: rc[0].accuracy)
    model = space.freeze(best.sample)
    scores = train_classifier(model, splits, epochs=max(config.training.epochs, config.training.finetune_epochs),
                              learning_rate=config.training.learning_rate, batch_size=config.training.batch_size,
                              seed=config.seed, device=training_device(config), loss=task_of(config.data.name).loss,
                              score=task_of(config.data.name).score, precision=config.training.precision)
    return model, best.sample, _measured_costs(config, model, example), reference, scores["val"]


def _measured_costs(config: ExperimentConfig, model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Every reported cost of a trained frozen ``model`` as :func:`~nni_udc.evaluators.exact.exact_costs` gives it:
    a cost measured on the model itself (Ethos-U bytes: Arm's encoder) reports the measurement."""
    from nni_udc.evaluators.exact import frozen_cost, model_specs

    specs = model_specs(model, example)
    return {name: frozen_cost(model, specs, cost) for name, cost in _cost_table(config).items()}


def _cost_table(config: ExperimentConfig) -> dict[str, CostFn]:
    """Every cost a search on ``config``'s hardware target reports, by name, as its cost function.

    >>> from nni_udc.config import parse_config
    >>> sorted(_cost_table(parse_config({"space": "digits"}, "inline")))
    ['bitops', 'macs', 'memory_bits', 'params']
    """
    from nni_udc.strategies import UDC

    udc = UDC(cost=config.hardware.cost, hardware=config.hardware.target)
    return {name: udc.cost_table[name] for name in udc.report_costs}


def _write(outcome: SearchOutcome, output: Path, config: ExperimentConfig, **settings: Any) -> None:
    """The found model's files in ``output``; each cheaper export's in ``output/ladder/<k>/`` (those of an earlier
    search into the same directory are removed first)."""
    shutil.rmtree(output / LADDER, ignore_errors=True)
    for k, other in enumerate(outcome.ladder, 1):
        ladder_directory(output, k).mkdir(parents=True)
        _write(other, ladder_directory(output, k), config, **settings)
    torch.save(outcome.model, output / "model.pt")
    (output / "architecture.json").write_text(json.dumps(outcome.sample, indent=2) + "\n")
    baked = _write_baked(outcome.model, output, DATASETS[config.data.name].input_shape)
    report = {"experiment": config.name, "config": config.path, "strategy": config.strategy.name,
              "hardware": config.hardware.target, **settings, **outcome.to_json(),
              "cost_sources": _cost_sources(config), "baked": baked}
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _metric_name(config: ExperimentConfig) -> str:
    """What the front's "accuracy" of ``config`` is: ``'accuracy'``, or ``'psnr'`` for super-resolution data."""
    return metric_of_data(config.data.name).name


def _cost_sources(config: ExperimentConfig) -> dict[str, str]:
    """Where each reported cost of the found model comes from: ``'formula'`` or the measurement (Arm's encoder)."""
    from nni_udc.evaluators.exact import cost_source

    return {name: cost_source(cost) for name, cost in _cost_table(config).items()}


def _write_baked(model: nn.Module | None, output: Path, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The baked model's torch files beside ``model.pt`` (:mod:`nni_udc.export.torch_files`): what tools and users
    load with ``weights_only=True``. A model that cannot be baked keeps its search: the report says why."""
    from nni_udc.export.bake import BakeError, bake
    from nni_udc.export.torch_files import save_torch

    if model is None:
        return {"error": "no model"}
    try:
        files = save_torch(bake(model, torch.zeros(2, *input_shape)), output)
    except BakeError as error:
        return {"error": str(error)}
    except Exception as error:  # model.pt is written: an unforeseen failure here must not lose the search
        return {"error": f"{type(error).__name__}: {error}"}
    return {kind: path.name for kind, path in files.items()}


# ----- the uniform baseline ----------------------------------------------------------------------------------

@dataclass
class BaselineOutcome:
    """The uniform grid's models in grid order (``number`` = place in the grid), how many this run trained,
    its wall time, and the files written."""

    points: list[Point]
    cost: str
    trained: int
    seconds: float
    files: dict[str, Path]


def baseline_epochs(config: ExperimentConfig) -> int:
    """Training epochs of each uniform baseline model: those of one search of the front.

    A search trains ``training.epochs`` (supernet) and ``training.finetune_epochs``; with a shared supernet
    (``pareto.supernet_epochs``) each of the ``pareto.trials`` searches also gets its share of that, rounded up.

    Example:
        >>> from nni_udc.config import parse_config
        >>> config = parse_config({"space": "digits", "training": {"epochs": 1, "finetune_epochs": 12},
        ...                        "pareto": {"trials": 10, "supernet_epochs": 25}}, "inline")
        >>> baseline_epochs(config)
        16
    """
    t, p = config.training, config.pareto
    shared = -(-p.supernet_epochs // p.trials) if p.supernet_epochs else 0
    return t.epochs + t.finetune_epochs + shared


def _baseline_settings(config: ExperimentConfig) -> dict[str, Any]:
    """What decides a baseline model's numbers: a file trained otherwise is not reused."""
    t = config.training
    settings = {"space": {"name": config.space.name, "args": config.space.args},
                "data": {"name": config.data.name, **config.data.loader_arguments},
                "epochs": baseline_epochs(config),
                "learning_rate": t.learning_rate, "batch_size": t.batch_size, "seed": config.seed,
                "hardware": config.hardware.target, "cost": config.hardware.cost,
                "batchnorm": "re-estimated"}  # statistics recomputed after training (evaluators/batchnorm_stats.py)
    return json.loads(json.dumps(settings))  # as the file holds them (tuples become lists)


class _Trainer:
    """Trains one grid model from scratch the same way wherever it runs: the space built and the model frozen
    under the experiment's seed, one torch thread (results then do not depend on the number of processes)."""

    def __init__(self, config: ExperimentConfig) -> None:
        from nni_udc.data import load_dataset

        self.config = config
        self.device = training_device(config)
        self.splits = load_dataset(config.data.name, **config.data.loader_arguments)
        torch.manual_seed(config.seed)  # plain modules of a space keep their initial weights when frozen
        self.space = _space(config, self.splits.input_shape)

    def __call__(self, sample: dict[str, Any]) -> tuple[float, float, float]:
        """Validation accuracy, test accuracy and seconds of the model ``sample`` trained for one search's epochs."""
        from nni_udc.evaluators.tasks import task_of
        from nni_udc.evaluators.training import train_classifier

        task = task_of(self.config.data.name)
        started, threads = time.time(), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(self.config.seed)
            t = self.config.training
            scores = train_classifier(self.space.freeze(sample), self.splits, epochs=baseline_epochs(self.config),
                                      learning_rate=t.learning_rate, batch_size=t.batch_size, seed=self.config.seed,
                                      device=self.device, loss=task.loss, score=task.score, precision=t.precision)
        finally:
            torch.set_num_threads(threads)
        return scores["val"], scores["test"], time.time() - started


_WORKER: _Trainer | None = None
_WORTH_A_POOL = 8  # models left to train from which worker processes pay for their start


def _default_workers(models: int) -> int:
    """Processes to train ``models`` models: 2 where there are 2 cores and enough models to pay for starting them."""
    return min(2, os.cpu_count() or 1) if models >= _WORTH_A_POOL else 1


def _check_settings(path: Path, saved: dict[str, Any], settings: dict[str, Any], config: ExperimentConfig,
                    remedy: str) -> None:
    """Refuse a file of trained models whose recorded settings differ from ``config``'s, naming the first one."""
    for name, value in settings.items():
        if saved.get(name) != value:
            raise ConfigError(f"{path}: settings.{name}: its models were trained with {saved.get(name)!r}, but "
                              f"{config.path} gives {value!r}; {remedy} or write elsewhere (--out)")


def _start_worker(config: ExperimentConfig) -> None:
    global _WORKER
    with quiet():
        _WORKER = _Trainer(config)


def _train_in_worker(sample: dict[str, Any]) -> tuple[float, float, float]:
    if _WORKER is None:
        raise RuntimeError("a baseline worker process runs _start_worker first")
    with quiet():
        return _WORKER(sample)


def _results(trainer: _Trainer, config: ExperimentConfig, todo: list[tuple[int, dict[str, Any]]],
             workers: int) -> Iterator[tuple[int, tuple[float, float, float]]]:
    """(grid index, trainer's result) of every model of ``todo``, as each finishes."""
    if workers <= 1 or len(todo) <= 1:
        for index, sample in todo:
            yield index, trainer(sample)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads already run
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_start_worker,
                             initargs=(config,)) as pool:
        futures = {pool.submit(_train_in_worker, sample): index for index, sample in todo}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: workers of one study that share the output train the baseline once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_baseline(config: ExperimentConfig, *, output: str | Path | None = None, progress: bool = True,
                 workers: int | None = None) -> BaselineOutcome:
    """Train every model of the space's uniform grid; write ``baseline.csv`` and ``baseline.json`` to ``output``.

    Each model (:func:`~nni_udc.strategies.uniform_grid`) is trained from scratch with
    :func:`~nni_udc.evaluators.training.train_classifier` for the epochs of one search (:func:`baseline_epochs`)
    with its learning rate, batch size and seed; quantisation and masks act from
    the first step (the frozen modules compress in their forward pass). Costs are measured as the searches
    measure theirs. Resumable: models already in ``baseline.json`` are kept (their accuracies; their costs are
    measured again), and the files are rewritten after each model. ``workers`` processes train models side by
    side (default: 2 where there are 2 cores and at least 8 models to train, else this process); every model
    trains on one thread, so the numbers do not depend on it.

    Example:
        >>> from nni_udc.config import parse_config
        >>> config = parse_config({"space": "digits", "strategy": {"name": "uniform"}}, "inline")
        >>> outcome = run_baseline(config, output="runs/doc-baseline")    # doctest: +SKIP
        >>> len(outcome.points)                                           # doctest: +SKIP
        96
    """
    from tqdm import tqdm

    from nni_udc.strategies import uniform_grid

    check_pareto(config, "nni-udc baseline")  # its models train one at a time, on one device
    output = Path(output if output is not None else config.output)
    output.mkdir(parents=True, exist_ok=True)
    settings = _baseline_settings(config)
    started = time.time()
    with _locked(output / "baseline.lock"):
        trainer = _Trainer(config)
        grid = uniform_grid(trainer.space)
        cost, reference, costs_of = _cost_probe(config, trainer.space, torch.zeros(1, *trainer.splits.input_shape))
        keys = [json.dumps(sample, sort_keys=True) for sample in grid]
        done: dict[int, Point] = {}
        if (output / BASELINE_JSON).is_file():
            saved = read_baseline(output / BASELINE_JSON)
            _check_settings(output / BASELINE_JSON, saved["settings"], settings, config, "remove the baseline files")
            by_key = {json.dumps(p.architecture, sort_keys=True): p for p in saved["points"]}
            done = {}
            for i, k in enumerate(keys):
                if k in by_key:  # accuracies are kept; costs are measured again (a formula may have changed since)
                    costs = costs_of(grid[i])
                    done[i] = replace(by_key[k], number=i, costs=costs, relative_cost=costs[cost] / reference[cost])
        files = {"csv": output / BASELINE_CSV, "json": output / BASELINE_JSON}
        todo = [(i, sample) for i, sample in enumerate(grid) if i not in done]
        if workers is None:  # starting a process costs seconds: worth it for the grids of real experiments
            workers = _default_workers(len(todo))
        bar = tqdm(total=len(grid), initial=len(done), desc="uniform baseline", unit="model", disable=not progress)
        try:
            for index, (val, test, seconds) in _results(trainer, config, todo, workers):
                costs = costs_of(grid[index])
                done[index] = Point(number=index, accuracy=val, relative_cost=costs[cost] / reference[cost],
                                    test_accuracy=test, costs=costs, architecture=grid[index], seconds=seconds)
                files["csv"], files["json"] = write_baseline(list(done.values()), output, cost=cost,
                                                             reference_costs=reference, settings=settings,
                                                             metric=_metric_name(config))
                bar.update(1)
        finally:
            bar.close()
    return BaselineOutcome([done[i] for i in sorted(done)], cost, len(todo), time.time() - started, files)


# ----- one run's verdict, retrained with several seeds -------------------------------------------------------


@dataclass
class RetrainOutcome:
    """The comparison of a finished pareto run again, with every compared model's accuracies the mean over
    ``seeds`` trainings from scratch; the means themselves; how many trainings this run did; the file."""

    comparison: Comparison
    uniform: list[Point]
    searched: list[Point]
    seeds: int
    trained: int
    seconds: float
    path: Path


def run_retrain(config: ExperimentConfig, *, seeds: int = 3, output: str | Path | None = None, progress: bool = True,
                workers: int | None = None) -> RetrainOutcome:
    """Retrain a finished ``nni-udc pareto`` run's models from scratch under seeds ``0..seeds-1``; compare the means.

    One run's comparison rests on one training of every model, scored on a small test split: on digits' 359 test
    images the same architecture moves by up to 1.7 points between seeds, and a front picked from single runs keeps
    the lucky ones. This trains every searched architecture (``front.json``) and every point of the uniform
    baseline's front by test or by validation accuracy (``baseline.json``; the other grid models are dominated
    by a wide margin) from scratch like a baseline model (:func:`baseline_epochs`, the file's learning rate and
    batch size) under each seed, and compares mean accuracies with :func:`~nni_udc.pareto.compare`. The searched
    models are trained from scratch too: this judges the architectures the searches chose, not their fine-tunes.

    Resumable: every training's accuracies go to ``OUTPUT/retrained.json`` as it finishes; a later call trains
    only what is missing (a file made with other training settings is refused, naming the setting). ``workers``
    processes train side by side as in :func:`run_baseline`.

    Example:
        >>> from nni_udc.config import load_config
        >>> outcome = run_retrain(load_config("examples/udc-digits.yaml"), seeds=3)   # doctest: +SKIP
        >>> round(outcome.comparison.median_ratio, 2)                                 # doctest: +SKIP
        0.64
    """
    from tqdm import tqdm

    from nni_udc.pareto import compare, read_front
    from nni_udc.pareto.baseline import _replace
    from nni_udc.pareto.retrained import architecture_key, mean_points, read_retrained, retrained_models

    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1, but got {seeds!r}")
    output = Path(output if output is not None else config.output)
    front_path, baseline_path, path = output / "front.json", output / BASELINE_JSON, output / RETRAINED_JSON
    for needed, command in ((front_path, "pareto"), (baseline_path, "baseline")):
        if not needed.is_file():
            raise ConfigError(f"{needed}: not found; run 'nni-udc {command} {config.path}' first (retraining compares "
                              f"a finished pareto run with its uniform baseline)")
    settings = _baseline_settings(config)
    settings.pop("seed")  # every seed is trained here
    uniform, searched = retrained_models(read_baseline(baseline_path)["points"], read_front(front_path)["points"])
    results: dict[str, dict[str, list[float]]] = {}  # architecture (JSON) -> seed -> [val, test]
    if path.is_file():
        saved = read_retrained(path)
        _check_settings(path, saved["settings"], settings, config, f"remove {path}")
        results = saved["results"]

    started, trained = time.time(), 0
    architectures = {architecture_key(p): p.architecture for p in uniform + searched}
    todo = {seed: [(i, a) for i, (k, a) in enumerate(architectures.items()) if str(seed) not in results.get(k, {})]
            for seed in range(seeds)}
    keys = list(architectures)
    bar = tqdm(total=len(keys) * seeds, initial=len(keys) * seeds - sum(map(len, todo.values())),
               desc=f"retraining with {seeds} seeds", unit="model", disable=not progress)
    try:
        for seed, pending in todo.items():
            if not pending:
                continue
            seeded = replace(config, seed=seed)
            count = workers if workers is not None else _default_workers(len(pending))
            for index, (val, test, _) in _results(_Trainer(seeded), seeded, pending, count):
                results.setdefault(keys[index], {})[str(seed)] = [val, test]
                _replace(path, json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
                trained += 1
                bar.update(1)
    finally:
        bar.close()

    uniform, searched = mean_points(uniform, results, seeds), mean_points(searched, results, seeds)
    comparison = compare(uniform, searched, reference=config.pareto.reference_point, metric=_metric_name(config))
    return RetrainOutcome(comparison, uniform, searched, seeds, trained, time.time() - started, path)


# ----- the outer loop ----------------------------------------------------------------------------------------

@dataclass
class ParetoOutcome:
    """The study's finished searches, its front (cheapest first), hypervolume and the files written; with
    ``pareto.baseline``, the uniform baseline and its comparison with the searches."""

    points: list[Point]
    front: list[Point]
    hypervolume: float
    files: dict[str, Path]
    baseline: BaselineOutcome | None = None
    comparison: Comparison | None = None


def storage_url(config: ExperimentConfig) -> str:
    """The study's storage: the file's ``pareto.storage``, else an SQLite file in the output directory."""
    if config.pareto.storage:
        return config.pareto.storage
    return f"sqlite:///{(config.output / 'study.db').resolve()}"


def study_points(study: Any) -> list[Point]:
    """Every model of every completed trial of a study (``nni-udc pareto``'s or the nnictl tuner's) as a front
    :class:`~nni_udc.pareto.Point`, read through :meth:`TrialRecord.from_trial <nni_udc.pareto.record.TrialRecord.from_trial>`:
    a search's own, then its cheaper exports (:meth:`TrialRecord.points <nni_udc.pareto.record.TrialRecord.points>`)."""
    from nni_udc.pareto import finished

    return [point for t in finished(study) for point in TrialRecord.from_trial(t).points()]


@contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """Ctrl-C inside the block raises ``KeyboardInterrupt``, even where Lightning turned it into ``SystemExit(1)``.

    Lightning's trainer catches a ``KeyboardInterrupt`` during ``fit``, ignores SIGINT from then on and calls
    ``sys.exit(1)`` (``pytorch_lightning/trainer/call.py``, ``_call_and_handle_interrupt``), so without this the
    Pareto loop would neither queue the interrupted value again nor end with its "interrupted" message. The
    SIGINT handler in force before the block is restored after it. Outside the main thread it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except SystemExit as stop:
        if interrupted:
            raise KeyboardInterrupt from stop
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def pareto_workers(config: ExperimentConfig) -> int:
    """Processes of this machine that run ``config``'s searches side by side: ``pareto.workers``, else 2 where
    there are 2 CPU cores, the searches train on the CPU and there are at least 8 of them (starting a process
    costs seconds), else 1.

    Example:
        >>> from nni_udc.config import parse_config
        >>> pareto_workers(parse_config({"space": "digits", "pareto": {"trials": 4}}, "inline"))
        1
    """
    if config.pareto.workers is not None:
        return config.pareto.workers
    if training_device(config).type != "cpu":
        return 1
    return _default_workers(config.pareto.trials)


def _threads_per_worker(workers: int) -> int:
    """Torch threads of each of ``workers`` processes: tiny models train faster on one thread per core than on
    two threads that share a core (benchmarks/front_vs_uniform.md)."""
    return max(1, (os.cpu_count() or 1) // workers)


def _open_study(config: ExperimentConfig) -> Any:
    import optuna

    from nni_udc.pareto import open_study

    p = config.pareto
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_study(storage=storage_url(config), name=p.study_name or config.name, sampler=p.sampler, seed=p.seed,
                      variable=p.variable, low=p.low, high=p.high, initial=p.initial,
                      heartbeat_interval=p.heartbeat_interval, grace_period=p.grace_period)


def _shared_supernet(config: ExperimentConfig, *, progress: bool) -> Path:
    """The study's shared supernet: trained by the first process to get here, waited for by the others."""
    with manifest_in(config.output / "nni-experiments"):
        return train_supernet(config, epochs=config.pareto.supernet_epochs or 0, progress=progress)


def _start_helpers(config: ExperimentConfig, workers: int) -> list[Any]:
    """``workers - 1`` processes that run the study's searches beside this one."""
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads already run
    helpers = [context.Process(target=_helper, args=(config, _threads_per_worker(workers)),
                               name=f"nni-udc pareto helper {i}") for i in range(1, workers)]
    for helper in helpers:
        helper.start()
    return helpers


def _helper(config: ExperimentConfig, threads: int) -> None:
    """A helper process: searches of the study until it is complete, silently (the first process shows progress)."""
    torch.set_num_threads(threads)
    try:
        with quiet():
            study = _open_study(config)
            supernet = _shared_supernet(config, progress=False) if config.pareto.supernet_epochs is not None else None
            _search_until_complete(config, study, supernet, progress=False, inner_progress=False)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal; its search went back to the queue
        raise SystemExit(130) from None


def _stop(helpers: list[Any], grace: float | None) -> None:
    """Wait up to ``grace`` seconds (``None``: until it ends) for each helper, then terminate it: a search it
    leaves unfinished is retried when the run resumes (its owner process is dead, :mod:`nni_udc.pareto.owners`)."""
    for helper in helpers:
        helper.join(grace)
        if helper.is_alive():
            helper.terminate()
            helper.join()


def _search_until_complete(config: ExperimentConfig, study: Any, supernet: Path | None, *, progress: bool,
                           inner_progress: bool, threads: int | None = None, helpers: list[Any] | None = None) -> None:
    """This process's part of the outer loop: searches of ``study`` until it has ``pareto.trials`` completed trials
    (or gives up on diverging ones), on ``threads`` torch threads; then it waits for the ``helpers`` (and stops
    them if this process fails)."""
    import optuna
    from optuna.trial import TrialState
    from tqdm import tqdm

    from nni_udc.pareto import finished, suggest
    from nni_udc.pareto.owners import FAILURE, claim
    from nni_udc.pareto.study import enough, requeue, run_until_complete

    p, helpers = config.pareto, helpers or []
    bar = tqdm(total=p.trials, initial=min(len(finished(study)), p.trials), desc="pareto searches", unit="search",
               disable=not progress)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        claim(trial)  # killed, this trial is retried as soon as a worker on this host runs (pareto/owners.py)
        value = suggest(trial, p.variable, p.low, p.high)
        if enough(study, trial, p.trials):  # another worker runs the last searches: do no extra work
            requeue(study, trial)
            study.stop()
            raise optuna.TrialPruned("the study has enough searches")
        out = config.output / "trials" / f"{trial.number:04d}"
        bar.n = min(len(finished(study)), p.trials)  # other workers' searches count too
        bar.set_postfix({p.variable: f"{value:.3g}", "trial": trial.number})
        try:
            with _ctrl_c_kept():
                outcome = run_search(config, output=out, progress=inner_progress, supernet=supernet,
                                     **{p.variable: value})  # type: ignore[arg-type]
            _check_finite_outcome(outcome)
        except KeyboardInterrupt:  # Ctrl-C: this value is searched again when the run resumes
            study.enqueue_trial({p.variable: value})
            raise
        except DivergedError as error:  # FAIL, with the reason; the study goes on (run_until_complete)
            trial.set_user_attr(FAILURE, str(error))
            trial.set_user_attr(DIVERGED, True)
            raise
        record = outcome.record(number=trial.number, variable=p.variable, value=value, output=out)
        for key, val in record.to_user_attrs().items():
            trial.set_user_attr(key, val)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # bookkeeping, not the record's
        return record.accuracy, record.relative_cost

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            bar.n = min(len(finished(study)), p.trials)
            bar.refresh()

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        run_until_complete(study, objective, p.trials, catch=(DivergedError,), callbacks=[on_trial],
                           give_up=lambda: len(_diverged(study)) >= p.trials)  # more would most likely diverge too
    except BaseException as error:  # Ctrl-C reached the helpers too: give them time to queue their searches again
        _stop(helpers, grace=10.0 if isinstance(error, KeyboardInterrupt) else 0.0)
        raise
    finally:
        bar.close()
        torch.set_num_threads(previous)
    _stop(helpers, grace=None)


def _diverged(study: Any) -> list[Any]:
    """The study's failed trials whose search diverged."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.user_attrs.get(DIVERGED)]


def run_pareto(config: ExperimentConfig, *, progress: bool = True, inner_progress: bool = False) -> ParetoOutcome:
    """Run (or resume, or join as one more worker) the outer loop of ``config``; write and return the front.

    Each trial runs :func:`run_search` with one cost target (or λ) into ``output/trials/NNN/`` and stores the
    architecture, accuracies and every reported cost as trial attributes. The loop ends when the study has
    ``pareto.trials`` completed trials, whichever worker completed them: it waits for the searches other workers
    run, and retries a search whose process died (:func:`~nni_udc.pareto.study.run_until_complete`). With
    :func:`pareto_workers` above 1, that many processes of this machine run searches side by side: this one and
    helpers it spawns (so a script calling this needs the ``if __name__ == "__main__":`` guard), each with its
    share of the CPU threads. A search whose training diverges is a failed trial, its reason in the user
    attribute ``failure``, and the study goes on; after ``pareto.trials`` diverged searches it gives up with
    :class:`DivergedError`. Then, with ``pareto.baseline``, it runs (or reuses) :func:`run_baseline` into the
    same directory, draws it beside the searches and compares the two by test accuracy (:func:`~nni_udc.pareto.compare`).
    """
    from nni_udc.pareto import compare, finished, hypervolume, non_dominated, plot_front, write_front
    from nni_udc.pareto.front import count_text
    from nni_udc.pareto.owners import FAILURE

    if not config.strategy.one_shot:
        raise ConfigError(f"{config.path}: strategy.name: the outer loop varies the one-shot search's cost target; "
                          f"it must be one of {', '.join(ONE_SHOT)}, but got {config.strategy.name!r} (use "
                          f"'nni-udc search' for multi-trial strategies, 'nni-udc baseline' for the uniform grid)")
    check_pareto(config)
    p = config.pareto
    config.output.mkdir(parents=True, exist_ok=True)
    study = _open_study(config)
    done = len(finished(study))
    workers = pareto_workers(config) if done < p.trials else 1
    helpers = _start_helpers(config, workers)  # they start (seconds) while the shared supernet trains
    try:
        supernet = None
        if p.supernet_epochs is not None and done < p.trials:
            if progress:
                print(f"training the shared supernet for {p.supernet_epochs} epochs (once per study; "
                      f"{config.output / 'supernet.pt'})", flush=True)
            supernet = _shared_supernet(config, progress=inner_progress)
    except BaseException:
        _stop(helpers, grace=0.0)
        raise
    _search_until_complete(config, study, supernet, progress=progress, inner_progress=inner_progress,
                           threads=_threads_per_worker(workers) if workers > 1 else None, helpers=helpers)
    points = study_points(study)
    front = non_dominated(points)
    hv = hypervolume(points, p.reference_point)
    metric, sources = _metric_name(config), _cost_sources(config)  # PSNR for super-resolution; formula or encoder
    csv_path, json_path = write_front(front, config.output, cost=config.hardware.cost or "", hv=hv,
                                      reference=p.reference_point, variable=p.variable, points=points, metric=metric,
                                      cost_sources=sources)
    files = {"csv": csv_path, "json": json_path}
    failed = _diverged(study)
    if len(points) < p.trials and failed:  # given up: the baseline, trained the same way, would diverge too
        raise DivergedError(f"{len(failed)} searches of the study diverged and {len(points)} of {p.trials} completed "
                            f"(front: {csv_path}); the last: {failed[-1].user_attrs[FAILURE]}")
    baseline = run_baseline(config, progress=progress) if p.baseline else None
    comparison = None
    if baseline is not None:
        files.update({f"baseline_{kind}": path for kind, path in baseline.files.items()})
        comparison = compare(baseline.points, points, reference=p.reference_point, metric=metric)
    if points:
        cost = config.hardware.cost or ""
        where = f"{cost} of the searches: {sources.get(cost, 'formula')}" + ("; of the uniform baseline: formula"
                                                                            if baseline is not None else "")
        files["png"], files["html"] = plot_front(points, config.output, cost=cost,
                                                 title=f"{config.name}: {len(front)} of {count_text(points)} on the front",
                                                 baseline=baseline.points if baseline is not None else (),
                                                 metric=metric, subtitle=where)
    return ParetoOutcome(points, front, hv, files, baseline, comparison)


#: user attribute of a Pareto trial whose search diverged (a FAIL that is not retried)
DIVERGED = "diverged"


def _check_finite_outcome(outcome: SearchOutcome) -> None:
    """A search's numbers, all finite: what is not would reach the front files."""
    numbers = {"accuracy": outcome.accuracy, "test_accuracy": outcome.test_accuracy,
               "relative_cost": outcome.relative_cost, **{f"costs.{k}": v for k, v in outcome.costs.items()}}
    bad = {name: value for name, value in numbers.items() if not math.isfinite(value)}
    if bad:
        raise DivergedError(f"the search gave non-finite results: {bad}")
