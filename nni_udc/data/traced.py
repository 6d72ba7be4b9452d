"""A data split as a small, traceable object, so NNI can ship evaluators to trial processes.

NNI serialises an evaluator (and its data loaders) to send it to a trial; a ``TensorDataset`` would be
sent by value and hit NNI's 64 KB payload limit. ``BundledSplit`` is sent as its name and arguments
and loads the data where it is used.
"""
from __future__ import annotations

from typing import Any

import nni
import torch
from torch.utils.data import Dataset

from nni_udc.data import load_dataset

__all__ = ["BundledSplit"]

_SPLITS = ("train", "val", "test")


@nni.trace
class BundledSplit(Dataset):
    """One split (``'train'``, ``'val'`` or ``'test'``) of a bundled data set, loaded by name.

    Example:
        >>> ds = BundledSplit("digits", "val")
        >>> len(ds), tuple(ds[0][0].shape)
        (359, (1, 8, 8))
    """

    def __init__(self, dataset: str, split: str, **loader_kwargs: Any) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, but got {split!r}")
        self.data = getattr(load_dataset(dataset, **loader_kwargs), split)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index]
