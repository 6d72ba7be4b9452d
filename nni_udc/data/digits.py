"""Digits: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, 10 classes).

Pixels (0..16) are scaled to [0, 1], shaped ``(1, 8, 8)`` for ``Conv2d``, split train / val / test
with a seeded stratified split and standardised with the train split's statistics.
"""
from __future__ import annotations

import functools

import numpy as np

from nni_udc.data._split import (
    DatasetSplits,
    check_fraction,
    check_seed,
    fraction_count,
    make_splits,
    stratified_split,
)

__all__ = ["load_digits_splits"]

INPUT_SHAPE: tuple[int, ...] = (1, 8, 8)
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images scaled to [0, 1], shaped (n, 8, 8), and their labels (read-only, cached)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_digits_splits(val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """Load scikit-learn's digits as stratified train / val / test splits.

    The test split takes ``round(test_fraction * 1797)`` images, the val split
    ``round(val_fraction * 1797)`` and train the rest (defaults: 1079 / 359 / 359, i.e. 0.6 / 0.2 / 0.2).
    Inputs are float32 ``(1, 8, 8)``, scaled to [0, 1] and then standardised with the train split's
    mean and std. The same ``seed`` always gives the same splits.

    Raises:
        ValueError: a fraction outside (0, 1), ``val_fraction + test_fraction >= 1``, a split too
            small to hold every class, or a bad ``seed``.

    Example:
        >>> splits = load_digits_splits(seed=0)
        >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
        (1079, 359, 359, (1, 8, 8))
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 (train gets the rest), "
            f"got {val_fraction!r} + {test_fraction!r} = {val_fraction + test_fraction!r}"
        )
    seed = check_seed(seed)
    x, y = _digits_arrays()
    n = len(y)
    rest, test = stratified_split(y, fraction_count(test_fraction, n), seed, "test_fraction")
    train, val = stratified_split(y[rest], fraction_count(val_fraction, n), seed, "val_fraction")
    train, val = rest[train], rest[val]
    return make_splits(
        "digits", (x[train], y[train]), (x[val], y[val]), (x[test], y[test]), INPUT_SHAPE, NUM_CLASSES
    )
