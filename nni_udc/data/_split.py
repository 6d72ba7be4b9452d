"""Helpers shared by the bundled loaders: argument checks, seeded stratified splits, standardisation.

Every loader turns its arrays into a :class:`DatasetSplits` through :func:`make_splits`, so all data
sets are standardised the same way: one scalar mean and standard deviation, taken from the train
split only and applied to all three splits.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

__all__ = [
    "DatasetSplits",
    "check_fraction",
    "check_seed",
    "fraction_count",
    "make_splits",
    "stratified_split",
]

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test splits of one data set, ready for a ``DataLoader``.

    Each split is a ``TensorDataset`` of ``(inputs, labels)``: float32 inputs shaped
    ``(n, *input_shape)``, standardised with the train split's statistics, and int64 labels in
    ``range(num_classes)``.

    Example:
        >>> from nni_udc.data import load_digits_splits
        >>> splits = load_digits_splits()
        >>> x, y = splits.train[0]
        >>> tuple(x.shape) == splits.input_shape, splits.num_classes, splits.name
        (True, 10, 'digits')
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    name: str


def check_fraction(arg: str, value: Any) -> float:
    """Return ``value`` as a float if it lies in the open interval (0, 1), else raise ``ValueError``.

    Example:
        >>> check_fraction("val_fraction", 0.25)
        0.25
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) < 1:
        raise ValueError(f"{arg} must be a number in the open interval (0, 1), got {value!r}")
    return float(value)


def check_seed(value: Any, arg: str = "seed") -> int:
    """Return ``value`` as an int if it is a valid NumPy seed (``0 <= seed < 2**32``), else raise ``ValueError``.

    Example:
        >>> check_seed(7)
        7
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise ValueError(f"{arg} must be an int in [0, 2**32), got {value!r}")
    return int(value)


def fraction_count(fraction: float, n: int) -> int:
    """Number of samples out of ``n`` that ``fraction`` stands for (rounded to nearest).

    Example:
        >>> fraction_count(0.2, 1797)
        359
    """
    return int(round(fraction * n))


def stratified_split(labels: np.ndarray, n_out: int, seed: int, arg: str) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices of ``labels`` into ``(kept, taken)``, ``n_out`` taken, keeping class proportions.

    The split is a seeded ``sklearn.model_selection.train_test_split`` with ``stratify=labels``, so
    the same seed always gives the same indices. ``arg`` names the argument that set ``n_out``, for
    the error raised when either part would miss a class.

    Example:
        >>> labels = np.array([0, 1] * 10)
        >>> kept, taken = stratified_split(labels, 4, seed=0, arg="val_fraction")
        >>> len(kept), len(taken), int(labels[taken].sum())
        (16, 4, 2)
    """
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    if not n_classes <= n_out <= len(labels) - n_classes:
        raise ValueError(
            f"{arg} takes {n_out} of {len(labels)} samples; both parts of the split need at least "
            f"one sample per class ({n_classes} classes)"
        )
    kept, taken = train_test_split(np.arange(len(labels)), test_size=n_out, random_state=seed, stratify=labels)
    return kept, taken


def make_splits(
    name: str, train: Arrays, val: Arrays, test: Arrays, input_shape: tuple[int, ...], num_classes: int
) -> DatasetSplits:
    """Standardise ``(x, y)`` arrays with the train split's mean/std and wrap them as :class:`DatasetSplits`.

    Inputs become float32 tensors shaped ``(n, *input_shape)``; labels become int64 tensors.

    Example:
        >>> x, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1])
        >>> s = make_splits("toy", (x[:4], y[:4]), (x[4:5], y[4:5]), (x[5:], y[5:]), (2,), 2)
        >>> round(float(s.train.tensors[0].mean()), 6), s.val.tensors[1].dtype
        (0.0, torch.int64)
    """
    x_train = np.asarray(train[0], dtype=np.float64)
    mean, std = float(x_train.mean()), float(x_train.std())
    if not std > 0:
        raise ValueError(f"{name}: train inputs are constant (std {std!r}); cannot standardise")

    def to_dataset(part: Arrays) -> TensorDataset:
        x = ((np.asarray(part[0], dtype=np.float64) - mean) / std).astype(np.float32)
        inputs = torch.from_numpy(x.reshape(-1, *input_shape))
        labels = torch.tensor(np.asarray(part[1]), dtype=torch.int64)
        return TensorDataset(inputs, labels)

    return DatasetSplits(
        train=to_dataset(train),
        val=to_dataset(val),
        test=to_dataset(test),
        input_shape=tuple(input_shape),
        num_classes=int(num_classes),
        name=name,
    )
