"""Lightning evaluators for NNI experiments on bundled data."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nni
from nni.nas.evaluator.pytorch import Classification, DataLoader

from nni_udc.data.traced import BundledSplit

__all__ = ["FreshTrainerClassification", "classification_evaluator", "data_loaders", "search_loaders",
           "trainer_options"]


@nni.trace
class FreshTrainerClassification(Classification):
    """NNI's ``Classification`` evaluator with a new Lightning ``Trainer`` for every model.

    Works around NNI 3.0's sequential engine, which reuses one evaluator: the second ``fit`` on the same
    trainer returns at once ("max_epochs reached") and then fails with ``KeyError: 'val_acc'``
    (research/nni_api.md C.1, bug 1).
    """

    def evaluate(self, model: Any) -> Any:
        self.trainer = self.trainer.trace_copy().get()  # type: ignore[has-type]
        return super().evaluate(model)


def data_loaders(dataset: str = "digits", *, batch_size: int = 64, seed: int = 0,
                 data_args: Mapping[str, Any] | None = None) -> tuple[DataLoader, DataLoader]:
    """NNI-traceable loaders of the whole train split (shuffled) and the validation split; ``data_args`` go to the
    data set's loader (``root`` and its own arguments, e.g. ``{'root': '/data/cifar', 'augment': False}``)."""
    kw = dict(data_args or {})
    return (DataLoader(BundledSplit(dataset, "train", seed=seed, **kw), batch_size=batch_size, shuffle=True),
            DataLoader(BundledSplit(dataset, "val", seed=seed, **kw), batch_size=512))


def search_loaders(dataset: str, *, batch_size: int, seed: int, arch_split: float | None,
                   data_args: Mapping[str, Any] | None = None) -> tuple[DataLoader, DataLoader]:
    """The train and validation loaders of an evaluator: :func:`data_loaders`, or with ``arch_split`` (one-shot
    searches) the train split divided into the weights' part and the architecture's (see
    :func:`classification_evaluator`)."""
    kw = dict(data_args or {})
    if arch_split is None:
        return data_loaders(dataset, batch_size=batch_size, seed=seed, data_args=kw)
    train = DataLoader(BundledSplit(dataset, "train", part="weights", arch_fraction=arch_split, seed=seed, **kw),
                       batch_size=batch_size, shuffle=True)
    val = DataLoader(BundledSplit(dataset, "train", part="arch", arch_fraction=arch_split, seed=seed, **kw),
                     batch_size=batch_size, shuffle=True)
    return train, val


def trainer_options(*, accelerator: str = "auto", devices: int = 1, precision: str = "32-true",
                    **trainer_kwargs: Any) -> dict[str, Any]:
    """The Lightning ``Trainer`` arguments of an evaluator: where it trains, quietly; ``trainer_kwargs`` win."""
    # Several devices: Lightning's DDP. A one-shot step leaves some parameters without a gradient (the
    # architecture's in the weight step, unchosen paths), which plain DDP refuses.
    strategy = "ddp_find_unused_parameters_true" if devices > 1 else "auto"
    options: dict[str, Any] = dict(accelerator=accelerator, devices=devices, precision=precision, strategy=strategy,
                                   enable_progress_bar=False, logger=False,
                                   enable_checkpointing=False, enable_model_summary=False)
    options.update(trainer_kwargs)
    return options


def classification_evaluator(dataset: str = "digits", *, epochs: int = 5, batch_size: int = 64,
                             learning_rate: float = 3e-3, weight_decay: float = 0.0, seed: int = 0,
                             num_classes: int = 10, arch_split: float | None = None,
                             data_args: Mapping[str, Any] | None = None, accelerator: str = "auto",
                             devices: int = 1, precision: str = "32-true",
                             **trainer_kwargs: Any) -> FreshTrainerClassification:
    """An evaluator that trains on the train split and reports validation accuracy, quietly.

    ``accelerator``, ``devices`` and ``precision`` are Lightning's (``training.accelerator`` etc. of an
    experiment file): ``auto`` trains on a GPU when there is one, else on the CPU.

    ``arch_split`` (a fraction, e.g. 0.2) is for one-shot searches, which train the architecture on the
    evaluator's validation loader: the train split is divided, weights train on ``1 - arch_split`` of it and
    the architecture on the rest, and the real validation split stays unseen (see :func:`data_loaders`).
    ``data_args`` go to the data set's loader (see :func:`data_loaders`).

    Example:
        >>> evaluator = classification_evaluator("digits", epochs=1)
        >>> type(evaluator).__name__
        'FreshTrainerClassification'
    """
    train, val = search_loaders(dataset, batch_size=batch_size, seed=seed, arch_split=arch_split, data_args=data_args)
    options = trainer_options(accelerator=accelerator, devices=devices, precision=precision, **trainer_kwargs)
    return FreshTrainerClassification(
        train_dataloaders=train, val_dataloaders=val, max_epochs=epochs, learning_rate=learning_rate,
        weight_decay=weight_decay, num_classes=num_classes, export_onnx=False, **options)
