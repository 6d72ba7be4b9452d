"""Training that diverged fails instead of finishing: a non-finite loss or weight raises :class:`DivergedError`.

A learning rate far too large (``training.learning_rate: 1e6``) or an infinite penalty weight turns the loss
into ``nan`` or ``inf`` within a few steps; the optimiser then writes ``nan`` into the weights, and the model
still "predicts" (one class for every input). Without a check such a search finishes at chance accuracy and
its model lands on the Pareto front. :class:`DivergenceCheck` stops Lightning training at the first non-finite
loss (or, at an epoch's end, weight); :func:`check_finite` checks a trained model.

Example:
    >>> from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> check_finite(net, where="a fresh layer")
    >>> with torch.no_grad():
    ...     net.bias.fill_(float("nan"))
    Parameter containing:
    tensor([nan], requires_grad=True)
    >>> check_finite(net, where="after training")
    Traceback (most recent call last):
    ...
    nni_udc.errors.DivergedError: after training: weights are not finite: bias (nan)
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from nni_udc.errors import DivergedError  # defined without torch, for the command line

__all__ = ["DivergedError", "DivergenceCheck", "check_finite", "check_loss", "nonfinite_tensors", "told_once"]


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers holding a ``nan`` or ``inf``."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _first_bad(t: torch.Tensor) -> str:
    flat = t.detach().flatten()
    return f"{float(flat[~torch.isfinite(flat)][0]):g}"


def check_finite(module: nn.Module, *, where: str) -> None:
    """Raise :class:`DivergedError` naming the first few non-finite tensors of ``module`` (``where``: when)."""
    bad = nonfinite_tensors(module)
    if bad:
        tensors = dict([*module.named_parameters(), *module.named_buffers()])
        shown = ", ".join(f"{name} ({_first_bad(tensors[name])})" for name in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DivergedError(f"{where}: weights are not finite: {shown}{more}")


def check_loss(loss: Any, *, where: str) -> None:
    """Raise :class:`DivergedError` if ``loss`` (a tensor, or a dict with ``'loss'``) is not finite."""
    if isinstance(loss, Mapping):
        loss = loss.get("loss")
    if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
        raise DivergedError(f"{where}: the training loss is {_first_bad(loss)}")


class DivergenceCheck(pl.Callback):
    """Stop Lightning training at the first non-finite training loss, and at an epoch's end with non-finite weights.

    The loss is checked after every step (one-shot strategies return it from ``training_step`` too); the weights
    once per epoch (every tensor of the module: cheap next to an epoch of training).
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        check_loss(outputs, where=f"epoch {trainer.current_epoch}, step {batch_idx}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_finite(pl_module, where=f"end of epoch {trainer.current_epoch}")


#: NNI's loggers that announce a failed model or strategy (without saying why) while the error propagates
_NNI_FAILURE_LOGGERS = ("nni.nas.execution.sequential", "nni.nas.strategy.base")


@contextmanager
def told_once() -> Iterator[None]:
    """Within the block, NNI's "Model 1 fails to be executed." / "Strategy failed to execute." lines are dropped
    while a :class:`DivergedError` propagates: the caller reports it, in one line that says why."""
    def not_divergence(record: logging.LogRecord) -> bool:
        return not isinstance(sys.exc_info()[1], DivergedError)  # NNI logs these inside its ``except:``

    loggers = [logging.getLogger(name) for name in _NNI_FAILURE_LOGGERS]
    for logger in loggers:
        logger.addFilter(not_divergence)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(not_divergence)
