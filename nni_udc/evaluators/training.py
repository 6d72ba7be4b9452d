"""A small, deterministic training loop for final numbers (retraining found architectures and baselines)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nni_udc.data import DatasetSplits
from nni_udc.evaluators.batchnorm_stats import reestimate_batchnorm
from nni_udc.evaluators.devices import torch_device
from nni_udc.evaluators.divergence import check_finite, check_loss
from nni_udc.evaluators.precision import Precision

__all__ = ["accuracy", "train_classifier"]


@torch.no_grad()
def accuracy(model: nn.Module, dataset: TensorDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (evaluation mode), on the device of the model's weights."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
    return correct / len(dataset)


def train_classifier(model: nn.Module, splits: DatasetSplits, *, epochs: int = 15, learning_rate: float = 1e-2,
                     batch_size: int = 64, seed: int = 0, device: str | torch.device = "auto",
                     loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                     score: Callable[[nn.Module, TensorDataset], float] = accuracy,
                     precision: str = "32-true") -> dict[str, float]:
    """Train with Adam and cosine decay on ``splits.train``; return validation and test accuracy.

    After the last epoch the BatchNorm statistics are recomputed with the final weights
    (:func:`~nni_udc.evaluators.batchnorm_stats.reestimate_batchnorm`).

    ``loss`` and ``score`` serve another task (super-resolution: L1 and PSNR, :mod:`nni_udc.evaluators.tasks`).

    ``device`` is a torch device or a Lightning accelerator name (``auto``: cuda when available, else cpu;
    :func:`~nni_udc.evaluators.devices.torch_device`); the model is moved there and stays there. ``precision`` is
    Lightning's name (``training.precision``; :mod:`nni_udc.evaluators.precision`): ``bf16-mixed`` trains under
    bfloat16 autocast, ``64-true`` in float64; the model is scored and returned in float32 either way.

    A non-finite loss or weight raises :class:`~nni_udc.evaluators.divergence.DivergedError`.

    Example:
        >>> from nni_udc.data import load_digits_splits
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> scores = train_classifier(net, load_digits_splits(), epochs=2)
        >>> scores["test"] > 0.8
        True
    """
    target = torch_device(device)
    mode = Precision.of(precision, target)
    mode.model(model.to(target))
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    for epoch in range(epochs):
        model.train()
        for step, (x, y) in enumerate(loader):
            x, y = mode.inputs(x.to(target, non_blocking=True)), mode.inputs(y.to(target, non_blocking=True))
            optimizer.zero_grad()
            with mode.autocast():
                value = loss(model(x), y)
            check_loss(value, where=f"epoch {epoch}, step {step}")  # nan weights would still "predict" one class
            mode.backward(value)
            mode.step(optimizer)
            schedule.step()
    check_finite(model, where=f"end of epoch {epochs - 1}")
    # BatchNorm statistics of the final weights (low-bit weights oscillate to the end: batchnorm_stats.py)
    reestimate_batchnorm(model, DataLoader(splits.train, batch_size=batch_size), inputs=mode.inputs,
                         autocast=mode.autocast)
    if mode.weight_dtype != torch.float32:  # 64-true: back to the dtype that scoring, costing and export expect
        model.float()
    return {"val": score(model, splits.val), "test": score(model, splits.test)}
