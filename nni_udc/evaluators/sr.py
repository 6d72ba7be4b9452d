"""Super-resolution quality: PSNR and SSIM written in torch, and the Lightning evaluator of an SR search.

**PSNR is measured on RGB**, all three channels, pixels in [0, 1], the model's output clipped to [0, 1] (as the
saved image would be), no border cropped: ``10 · log10(1 / MSE)`` per image, averaged over images. (EDSR's papers
report PSNR on the luma channel Y with a border of ``scale`` pixels cut off, which reads about 1–2 dB higher; the
search and its front compare models with each other and with the uniform baseline, for which one consistent
measure on what the network outputs is enough.) **SSIM** is Wang et al.'s (2004): an 11×11 Gaussian window of
σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``, per channel over the positions where the window fits, averaged.

The evaluator (:func:`sr_evaluator`) is NNI's Lightning evaluator with an L1 loss (EDSR's) and ``psnr`` as its
only metric, so one-shot searches, NNI's multi-trial strategies and the fine-tune read PSNR where a classification
search reads accuracy.

Example:
    >>> x = torch.rand(2, 3, 16, 16)
    >>> psnr(x, x).tolist(), round(float(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1))), 6)
    ([inf, inf], 20.0)
    >>> [round(v, 6) for v in ssim(x, x).tolist()]
    [1.0, 1.0]
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import nni
import torch
import torch.nn.functional as F
import torchmetrics
from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.evaluator.pytorch.lightning import SupervisedLearningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nni_udc.evaluators.lightning import search_loaders, trainer_options

__all__ = ["PSNR", "FreshTrainerSuperResolution", "SuperResolutionModule", "l1_loss", "mean_psnr", "psnr", "ssim",
           "sr_evaluator"]


def psnr(output: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image of a batch ``(N, C, H, W)``: ``10·log10(data_range² / MSE)`` over all channels;
    ``output`` is clipped to ``[0, data_range]`` first. Identical images give ``inf``.

    Example:
        >>> target = torch.full((1, 3, 2, 2), 0.5)
        >>> round(float(psnr(target + 0.01, target)), 4)   # MSE 1e-4: 40 dB
        40.0
    """
    if output.shape != target.shape or output.dim() != 4:
        raise ValueError(f"psnr takes two batches of images of one shape (N, C, H, W), but got "
                         f"{tuple(output.shape)} and {tuple(target.shape)}")
    error = (output.detach().clamp(0.0, data_range).double() - target.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(data_range ** 2 / error)).float()


def _gaussian(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(output: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """SSIM of each image of a batch ``(N, C, H, W)`` (Gaussian ``window`` × ``window``, σ = ``sigma``), averaged
    over channels and the positions where the window fits; ``output`` is clipped to ``[0, data_range]``.
    A window larger than the image shrinks to the image's smaller side (odd).

    Example:
        >>> a = torch.zeros(1, 1, 11, 11); b = a.clone(); b[..., 5, 5] = 1.0
        >>> 0.0 < float(ssim(b, a)) < 1.0
        True
    """
    if output.shape != target.shape or output.dim() != 4:
        raise ValueError(f"ssim takes two batches of images of one shape (N, C, H, W), but got "
                         f"{tuple(output.shape)} and {tuple(target.shape)}")
    size = min(window, *output.shape[-2:])
    size -= 1 - size % 2
    x, y = output.detach().clamp(0.0, data_range).double(), target.double()
    channels = x.shape[1]
    kernel = _gaussian(size, sigma, x.dtype, x.device).expand(channels, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1).float()


@torch.no_grad()
def mean_psnr(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Mean PSNR (dB, :func:`psnr`) of ``model``'s outputs over the (LR, HR) pairs of ``dataset``, in evaluation
    mode, on the device of the model's weights; :func:`~nni_udc.evaluators.training.accuracy`'s counterpart."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total, count = 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        values = psnr(model(x.to(device)), y.to(device))
        total, count = total + float(values.sum()), count + len(values)
    return total / max(count, 1)


class PSNR(torchmetrics.Metric):
    """Mean PSNR (dB) of the images seen since the last reset, as a torchmetrics metric (Lightning logs it)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        values = psnr(output, target)
        self.total += values.double().sum()  # type: ignore[operator]
        self.count += values.numel()  # type: ignore[operator]

    def compute(self) -> torch.Tensor:
        total, count = cast(torch.Tensor, self.total), cast(torch.Tensor, self.count)  # the states added above
        return total / count.clamp(min=1)


@nni.trace
class SuperResolutionModule(SupervisedLearningModule):
    """NNI's supervised Lightning module with an L1 loss and PSNR (``val_psnr``) as its one metric."""

    def __init__(self, learning_rate: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: type[torch.optim.Optimizer] = torch.optim.Adam) -> None:
        super().__init__(nn.L1Loss, {"psnr": PSNR()}, learning_rate=learning_rate, weight_decay=weight_decay,
                         optimizer=optimizer, export_onnx=False)

    @staticmethod
    def score_batch(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        """The sum of the batch's PSNRs and its size (what the fine-tune averages; ``strategies/finetune.py``)."""
        values = psnr(output, target)
        return float(values.sum()), len(values)


@nni.trace
class FreshTrainerSuperResolution(Lightning):
    """The SR evaluator: a :class:`SuperResolutionModule` and a new Lightning ``Trainer`` for every model (NNI
    3.0's sequential engine reuses one evaluator, see :class:`~nni_udc.evaluators.lightning.FreshTrainerClassification`)."""

    def __init__(self, learning_rate: float = 1e-3, weight_decay: float = 0.0, train_dataloaders: Any = None,
                 val_dataloaders: Any = None, **trainer_kwargs: Any) -> None:
        module = SuperResolutionModule(learning_rate=learning_rate, weight_decay=weight_decay)
        super().__init__(module, Trainer(**trainer_kwargs), train_dataloaders=train_dataloaders,
                         val_dataloaders=val_dataloaders)

    def evaluate(self, model: Any) -> Any:
        self.trainer = self.trainer.trace_copy().get()  # type: ignore[has-type]
        return super().evaluate(model)


def sr_evaluator(dataset: str = "sr", *, epochs: int = 5, batch_size: int = 16, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0, arch_split: float | None = None,
                 data_args: Mapping[str, Any] | None = None, accelerator: str = "auto", devices: int = 1,
                 precision: str = "32-true", **trainer_kwargs: Any) -> FreshTrainerSuperResolution:
    """An evaluator that trains on (LR, HR) pairs with an L1 loss and reports validation PSNR, quietly.

    The arguments are :func:`~nni_udc.evaluators.lightning.classification_evaluator`'s (no ``num_classes``).

    Example:
        >>> evaluator = sr_evaluator("sr", epochs=1, data_args={"patches": 2})
        >>> type(evaluator).__name__, type(evaluator.module.criterion).__name__
        ('FreshTrainerSuperResolution', 'L1Loss')
    """
    train, val = search_loaders(dataset, batch_size=batch_size, seed=seed, arch_split=arch_split, data_args=data_args)
    options = trainer_options(accelerator=accelerator, devices=devices, precision=precision, **trainer_kwargs)
    return FreshTrainerSuperResolution(learning_rate=learning_rate, weight_decay=weight_decay, train_dataloaders=train,
                                       val_dataloaders=val, max_epochs=epochs, **options)


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """EDSR's training loss, the mean absolute error (what :func:`~nni_udc.evaluators.training.train_classifier`
    takes as ``loss`` for super-resolution)."""
    return F.l1_loss(output, target)

