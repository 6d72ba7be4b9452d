"""A data split as a small, traceable object, so NNI can ship evaluators to trial processes.

NNI serialises an evaluator (and its data loaders) to send it to a trial; a ``TensorDataset`` would be
sent by value and hit NNI's 64 KB payload limit. ``BundledSplit`` is sent as its name and arguments
and loads the data where it is used.
"""
from __future__ import annotations

from typing import Any

import nni
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from nni_udc.data import load_dataset
from nni_udc.data._split import check_fraction, fraction_count, stratified_split

__all__ = ["BundledSplit"]

_SPLITS = ("train", "val", "test")
_PARTS = ("all", "weights", "arch")


@nni.trace
class BundledSplit(Dataset):
    """One split (``'train'``, ``'val'`` or ``'test'``) of a bundled data set, loaded by name.

    ``part`` divides a split in two, seeded and stratified: ``'weights'`` keeps ``1 - arch_fraction`` of it,
    ``'arch'`` the rest. A one-shot search trains weights on one part of ``train`` and its architecture on
    the other, so the ``val`` split stays unseen for choosing and reporting.

    Example:
        >>> ds = BundledSplit("digits", "val")
        >>> len(ds), tuple(ds[0][0].shape)
        (359, (1, 8, 8))
        >>> len(BundledSplit("digits", "train", part="weights")), len(BundledSplit("digits", "train", part="arch"))
        (863, 216)
    """

    def __init__(self, dataset: str, split: str, *, part: str = "all", arch_fraction: float = 0.2,
                 **loader_kwargs: Any) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, but got {split!r}")
        if part not in _PARTS:
            raise ValueError(f"part must be one of {list(_PARTS)}, but got {part!r}")
        data = getattr(load_dataset(dataset, **loader_kwargs), split)
        if part != "all":
            labels = data.tensors[1].numpy()
            fraction = check_fraction("arch_fraction", arch_fraction)
            if labels.ndim > 1:  # targets are images (super-resolution): no classes to stratify by
                order, n_arch = np.random.default_rng(0).permutation(len(labels)), fraction_count(fraction, len(labels))
                arch, weights = np.sort(order[:n_arch]), np.sort(order[n_arch:])
            else:
                weights, arch = stratified_split(labels, fraction_count(fraction, len(labels)), seed=0,
                                                 arg="arch_fraction")
            data = Subset(data, (weights if part == "weights" else arch).tolist())
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index]
