"""What each task trains with and is judged by: its Lightning evaluator, loss, score and the front's metric.

A data set's ``task`` (:class:`nni_udc.registry.DatasetEntry`) picks one :class:`Task`: classification (NNI's
``Classification``, cross-entropy, top-1 accuracy) or super-resolution (:mod:`nni_udc.evaluators.sr`: L1, PSNR).
Every training loop of an experiment (one-shot search and fine-tune, multi-trial retraining, uniform baseline,
shared supernet) asks :func:`task_of` instead of assuming classification.

Example:
    >>> task_of("digits").metric, task_of("sr").metric
    ('accuracy', 'psnr')
    >>> type(task_of("sr").criterion()).__name__
    'L1Loss'
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.sr import l1_loss, mean_psnr, sr_evaluator
from nni_udc.evaluators.training import accuracy
from nni_udc.registry import DATASETS

__all__ = ["TASKS", "Task", "task_of"]


@dataclass(frozen=True)
class Task:
    """How models of one task train and what number judges them (higher is better)."""

    metric: str  # the front's metric (nni_udc.pareto.metric.METRICS)
    evaluator: Callable[..., Any]  # classification_evaluator's arguments; num_classes only when ``classes``
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # of the plain loops (train_classifier)
    criterion: Callable[[], nn.Module]  # the same loss as a module (the single-path supernet)
    score: Callable[[nn.Module, Any], float]  # a model's metric on a split
    classes: bool  # whether the evaluator takes the data set's num_classes


#: the tasks by name (the values of :attr:`nni_udc.registry.DatasetEntry.task`)
TASKS: dict[str, Task] = {
    "classification": Task("accuracy", classification_evaluator, F.cross_entropy, nn.CrossEntropyLoss, accuracy, True),
    "super-resolution": Task("psnr", sr_evaluator, l1_loss, nn.L1Loss, mean_psnr, False),
}


def task_of(dataset: str) -> Task:
    """The :class:`Task` of the registered data set ``dataset``."""
    return TASKS[DATASETS[dataset].task]
