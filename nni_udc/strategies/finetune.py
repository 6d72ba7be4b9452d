"""Quantisation-aware fine-tuning of an exported model, with the evaluator's data, loss and optimiser.

The exported model is made of nni-udc's plain modules, whose forward pass already applies the chosen
compression (fake-quantised weights and activations, pruning masks), so ordinary training of it *is*
quantisation-aware training. A fresh Lightning ``Trainer`` runs it, so nothing is reported to NNI twice.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from nni_udc.evaluators.batchnorm_stats import reestimate_batchnorm

__all__ = ["finetune"]


class _FineTune(pl.LightningModule):
    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: type, learning_rate: float,
                 weight_decay: float, score: Any = None) -> None:
        super().__init__()
        self.model, self.criterion, self.score = model, criterion, score
        self.optimizer_class, self.learning_rate, self.weight_decay = optimizer, learning_rate, weight_decay
        self.correct: float = 0  # correct predictions, or the sum of another task's score
        self.seen = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self.model(x), y)
        self.log("finetune/train_loss", loss)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.correct = self.seen = 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if self.score is not None:  # another task's score: (sum over the batch, count), e.g. PSNR (evaluators/sr.py)
            total, count = self.score(self.model(x), y)
            self.correct, self.seen = self.correct + float(total), self.seen + int(count)
            return
        self.correct += int((self.model(x).argmax(-1) == y).sum())
        self.seen += len(y)

    def on_validation_epoch_end(self) -> None:
        self.log("finetune/val_acc", self.correct / max(self.seen, 1))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_class(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        # Cosine decay to zero: the last epochs settle the quantised weights instead of bouncing between levels.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


def _placement(trainer: Any) -> dict[str, Any]:
    """The accelerator, devices, precision and strategy (DDP for several devices) the search's trainer was made
    with (an NNI-traced ``pl.Trainer`` keeps its arguments); Lightning's defaults for what it was not given."""
    given = getattr(trainer, "trace_kwargs", None) or {}
    return {"accelerator": given.get("accelerator", "auto"), "devices": given.get("devices", 1),
            "precision": given.get("precision", "32-true"), "strategy": given.get("strategy", "auto")}


def finetune(model: nn.Module, evaluator: Any, *, epochs: int, learning_rate: float | None = None,
             train_dataloaders: Any = None, val_dataloaders: Any = None) -> float:
    """Train ``model`` for ``epochs`` on the evaluator's train loader; return its validation accuracy.

    After training, the BatchNorm statistics are recomputed with the final weights over the train loader
    (:func:`~nni_udc.evaluators.batchnorm_stats.reestimate_batchnorm`) and the accuracy is measured with them.

    ``train_dataloaders`` / ``val_dataloaders`` replace the evaluator's (a search trains its architecture on
    the evaluator's validation loader, so its fine-tune should report on data the search never saw).

    ``evaluator`` is an NNI Lightning evaluator such as ``Classification`` (its ``train_dataloaders``,
    ``val_dataloaders``, criterion, optimiser class, learning rate and weight decay are used, and its
    trainer's logger and progress-bar setting, so fine-tuning logs next to the search as ``finetune/...``,
    and its ``accelerator``, ``devices``, ``precision`` and ``strategy``, so fine-tuning runs where the search ran).
    """
    module = evaluator.module
    hparams = getattr(module, "hparams", {})
    tuner = _FineTune(model, module.criterion, getattr(module, "optimizer", torch.optim.Adam),
                      learning_rate if learning_rate is not None else hparams.get("learning_rate", 1e-3),
                      hparams.get("weight_decay", 0.0), getattr(module, "score_batch", None))
    search_trainer = getattr(evaluator, "trainer", None)
    logger = getattr(search_trainer, "logger", None) or False
    progress = bool(getattr(search_trainer, "progress_bar_callback", None))
    trainer = pl.Trainer(max_epochs=epochs, **_placement(search_trainer), logger=logger, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0)
    train = train_dataloaders if train_dataloaders is not None else evaluator.train_dataloaders
    val = val_dataloaders if val_dataloaders is not None else evaluator.val_dataloaders
    trainer.fit(tuner, train_dataloaders=train, val_dataloaders=val)
    # The running statistics lag behind low-bit weights that oscillate to the end (batchnorm_stats.py):
    # recompute them with the final weights, then score again.
    if reestimate_batchnorm(model, train):
        trainer.validate(tuner, dataloaders=val, verbose=False)
    model.eval()
    return float(tuner.correct / max(tuner.seen, 1))
