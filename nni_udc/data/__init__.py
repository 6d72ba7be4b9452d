"""Real data sets: bundled (scikit-learn's digits, MNIST-1D) or read from a local folder (CIFAR, images, speech);
super-resolution patches (``sr``) from DIV2K-style folders or scikit-image's images.

Each loader returns a :class:`DatasetSplits` of seeded, stratified train / val / test
``TensorDataset`` splits (float32 inputs standardised with train statistics, int64 labels).
:func:`load_dataset` picks a loader by name. Nothing downloads: a data set read from disk takes ``root``,
and a missing one raises :class:`DataRootError` saying what to put there.
"""
from __future__ import annotations

from typing import Any

from nni_udc.data._split import DatasetSplits
from nni_udc.data.cifar import load_cifar10_splits, load_cifar100_splits
from nni_udc.data.digits import load_digits_splits
from nni_udc.data.folder import load_folder_splits
from nni_udc.data.mnist1d import load_mnist1d_splits
from nni_udc.data.roots import DataRootError
from nni_udc.data.speech_commands import load_speech_commands_splits
from nni_udc.data.sr import load_sr_splits

__all__ = [
    "DATASET_NAMES",
    "DataRootError",
    "DatasetSplits",
    "load_cifar10_splits",
    "load_cifar100_splits",
    "load_dataset",
    "load_digits_splits",
    "load_folder_splits",
    "load_mnist1d_splits",
    "load_speech_commands_splits",
    "load_sr_splits",
]

from nni_udc.registry import DATASETS

#: Names :func:`load_dataset` accepts (registered in :data:`nni_udc.registry.DATASETS`).
DATASET_NAMES: tuple[str, ...] = tuple(sorted(DATASETS))


def load_dataset(name: str, **kw: Any) -> DatasetSplits:
    """Load the data set ``name`` (one of :data:`DATASET_NAMES`), passing ``kw`` (``seed``, ``root``, ...) to its loader.

    Raises:
        ValueError: ``name`` is not a known data set (the message lists the known ones), or the
            loader rejects ``kw``.

    Example:
        >>> splits = load_dataset("digits", seed=1)
        >>> splits.name, splits.num_classes, splits.input_shape
        ('digits', 10, (1, 8, 8))
    """
    splits: DatasetSplits = DATASETS[name].load(**kw)  # an unknown name: ValueError listing the registered ones
    return splits
