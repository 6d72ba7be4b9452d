"""Image splits: per-channel standardisation and the standard train augmentation (random shift, mirror).

CIFAR and image folders become :class:`~nni_udc.data.DatasetSplits` here. Each channel is standardised with
the train split's mean and std; the train split may be an :class:`AugmentedImages`, which keeps its tensors
(``.tensors``, like every split) and shifts and mirrors each image as it is read.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).integers(0, 256, (8, 3, 4, 4), dtype=np.uint8)
    >>> y = np.arange(8) % 2
    >>> s = make_image_splits("toy", (x[:4], y[:4]), (x[4:6], y[4:6]), (x[6:], y[6:]), 2, augment=True)
    >>> type(s.train).__name__, s.input_shape, round(float(s.train.tensors[0][:, 0].mean()), 4)
    ('AugmentedImages', (3, 4, 4), 0.0)
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nni_udc.data._split import DatasetSplits

__all__ = ["AugmentedImages", "make_image_splits"]

Arrays = tuple[np.ndarray, np.ndarray]


class AugmentedImages(TensorDataset):
    """``(image, label)`` tensors whose images are randomly shifted and mirrored each time one is read.

    The shift is the usual "random crop with padding": the image moves by up to ``padding`` pixels in each
    direction and the uncovered border is 0 (the mean, after standardisation); ``flip`` mirrors it left-right
    with probability 1/2. Random numbers come from torch's global generator, which ``DataLoader`` seeds per
    worker. ``.tensors`` holds the unaugmented images.

    Example:
        >>> images = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> ds = AugmentedImages(images, torch.zeros(1, dtype=torch.int64), padding=0, flip=False)
        >>> bool(torch.equal(ds[0][0], images[0]))
        True
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int = 4, flip: bool = True) -> None:
        super().__init__(images, labels)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        self.padding, self.flip = int(padding), bool(flip)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.tensors[0][index], self.tensors[1][index]
        p = self.padding
        if p:
            dy, dx = (int(v) for v in torch.randint(-p, p + 1, (2,)))
            image = _shift(image, dy, dx)
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image, label


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down by ``dy`` and right by ``dx`` pixels, zeros where nothing moved in."""
    h, w = image.shape[-2:]
    out = torch.zeros_like(image)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def make_image_splits(name: str, train: Arrays, val: Arrays, test: Arrays, num_classes: int, *,
                      augment: bool = False, padding: int = 4) -> DatasetSplits:
    """``(images, labels)`` arrays (``uint8`` or float, ``(n, C, H, W)``) as standardised image splits.

    Each channel is standardised with the train split's mean and std (also applied to val and test). With
    ``augment`` the train split is an :class:`AugmentedImages` (shift by up to ``padding`` pixels, mirror).

    Raises:
        ValueError: a channel of the train images is constant (nothing to standardise by).
    """
    def tensors(part: Arrays) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(part[0], dtype=np.float32))  # a fresh, writable copy: normalised in place
        return x, torch.from_numpy(np.array(part[1], dtype=np.int64))

    parts = [tensors(train), tensors(val), tensors(test)]
    x_train = parts[0][0]
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
    if not bool((std > 0).all()):
        raise ValueError(f"{name}: a channel of the train images is constant (std {std.flatten().tolist()}); "
                         "cannot standardise")
    for x, _ in parts:
        x.sub_(mean).div_(std)  # in place: a copy of CIFAR's train images alone is 600 MB
    (train_x, train_y), val_t, test_t = parts
    train_set = AugmentedImages(train_x, train_y, padding) if augment else TensorDataset(train_x, train_y)
    return DatasetSplits(train=train_set, val=TensorDataset(*val_t), test=TensorDataset(*test_t),
                         input_shape=tuple(train_x.shape[1:]), num_classes=int(num_classes), name=name)
