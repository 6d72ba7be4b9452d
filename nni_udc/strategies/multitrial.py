"""Multi-trial search with NNI's own strategies over spaces that use nni-udc's modules.

:func:`run_multitrial` runs a real ``NasExperiment`` (sequential engine in-process, or NNI's
training-service engine with trial processes) and returns every trained architecture with its
validation accuracy and its exact compression costs.

The (architecture, metric) pairs are recorded from the engine's final-metric events in this process,
not read back from NNI's database: with several concurrent trials NNI 3.0 can store a trial's
metric against another trial's parameters (microsoft/nni#5726, #5693).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from nni.nas.evaluator import Evaluator
from nni.nas.execution.event import FinalMetricEvent, ModelEventType
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.strategy import Strategy
from tqdm.auto import tqdm

from nni_udc.evaluators import exact_costs

__all__ = ["TrialResult", "run_multitrial"]


@dataclass
class TrialResult:
    """One trained architecture: its sample (label → value), validation accuracy and exact costs."""

    sample: dict[str, Any]
    accuracy: float
    costs: dict[str, float] = field(default_factory=dict)


def _scalar(metric: Any) -> float:
    if isinstance(metric, dict):
        metric = metric["default"]
    return float(metric)


class _RecordingExperiment(NasExperiment):
    """A ``NasExperiment`` that hands every final metric, with its own model's sample, to ``on_metric``."""

    def __init__(self, *args: Any, on_metric: Callable[[dict, float], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_metric = on_metric
        self._submitted: list[Any] = []

    def execution_engine_factory(self, config: Any) -> Any:
        engine = super().execution_engine_factory(config)
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._record)
        # The ts engine holds submitted models only by weak reference and skips the metrics of collected
        # ones; strategies such as Random keep no reference, so keep every submitted model alive here.
        submit = engine.submit_models

        def submit_models(*models: Any) -> None:
            self._submitted.extend(models)
            submit(*models)

        engine.submit_models = submit_models
        return engine

    def _record(self, event: FinalMetricEvent) -> None:
        self._on_metric(dict(event.model.sample), _scalar(event.metric))


def run_multitrial(space: ModelSpace, evaluator: Evaluator, strategy: Strategy, *, example_input: torch.Tensor,
                   max_trials: int = 10, engine: Literal["sequential", "ts"] = "sequential",
                   workdir: str | Path = "runs/nni-experiments", costs: Iterable[str] | None = None,
                   port: int = 8080, progress: bool = True) -> list[TrialResult]:
    """Search ``space`` with an NNI multi-trial ``strategy``; return results sorted by accuracy (best first).

    Args:
        space: the model space (its modules must be importable by trial processes for ``engine='ts'``).
        evaluator: a Lightning evaluator; see :func:`nni_udc.evaluators.lightning.classification_evaluator`.
        strategy: e.g. ``nni.nas.strategy.Random(seed=0)`` or ``RegularizedEvolution(...)``.
        example_input: an input batch, used to compute each architecture's exact cost.
        max_trials: architectures to train.
        engine: ``'sequential'`` trains in this process; ``'ts'`` starts NNI's manager and trial processes.
        workdir: NNI's experiment working directory (checkpoints, logs, database).
        costs: cost names to report (default: all built-in costs).
        port: the NNI manager's port (``engine='ts'`` only).

    Example:
        >>> from nni.nas.strategy import Random
        >>> from nni_udc.spaces import DigitsSpace
        >>> from nni_udc.evaluators.lightning import classification_evaluator
        >>> results = run_multitrial(DigitsSpace(), classification_evaluator(epochs=1), Random(seed=0),
        ...                          example_input=torch.zeros(1, 1, 8, 8), max_trials=2)  # doctest: +SKIP
    """
    config = NasExperimentConfig(engine, "simplified", "local") if engine == "ts" else NasExperimentConfig(engine, "simplified")
    config.max_trial_number = max_trials
    config.trial_concurrency = 1
    config.experiment_working_directory = str(Path(workdir).resolve())
    recorded: list[tuple[dict, float]] = []
    bar = tqdm(total=max_trials, desc="architectures", unit="trial", disable=not progress)

    def on_metric(sample: dict, accuracy: float) -> None:
        recorded.append((sample, accuracy))
        bar.update(1)
        bar.set_postfix(best=f"{max(a for _, a in recorded):.3f}")

    experiment = _RecordingExperiment(space, evaluator, strategy, config, on_metric=on_metric)
    try:
        experiment.run(port=port)
    finally:
        experiment.stop()
        bar.close()
    results = [TrialResult(sample, acc, exact_costs(space.freeze(sample), example_input, costs))
               for sample, acc in recorded]
    return sorted(results, key=lambda r: -r.accuracy)
