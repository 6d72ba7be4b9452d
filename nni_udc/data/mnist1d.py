"""MNIST-1D: 1-D digit sequences generated locally by the ``mnist1d`` package (no download).

The package's default arguments give 5,000 sequences of length 40 (10 classes), 4,000 for training
and 1,000 for testing. The given test part is kept as the test split; the given training part is
split into train / val with a seeded stratified split. Inputs are shaped ``(1, 40)`` for ``Conv1d``
and standardised with the train split's statistics.
"""
from __future__ import annotations

import contextlib
import functools
import io
import random

import numpy as np

from nni_udc.data._split import (
    DatasetSplits,
    check_fraction,
    check_seed,
    fraction_count,
    make_splits,
    stratified_split,
)

__all__ = ["DEFAULT_DATA_SEED", "load_mnist1d_splits"]

#: The seed ``mnist1d.data.get_dataset_args()`` uses: the canonical MNIST-1D data set.
DEFAULT_DATA_SEED = 42
NUM_CLASSES = 10


@functools.lru_cache(maxsize=4)
def _generate(data_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, x_test, y_test)`` generated with ``data_seed`` (read-only arrays, cached per process).

    ``make_dataset`` reseeds Python's and NumPy's global generators; their states are restored
    afterwards so that loading data does not change anyone else's random numbers.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = data_seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x, x_test = (np.asarray(data[k], dtype=np.float64) for k in ("x", "x_test"))
    y, y_test = (np.asarray(data[k], dtype=np.int64) for k in ("y", "y_test"))
    arrays = (x, y, x_test, y_test)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_mnist1d_splits(val_fraction: float = 0.2, seed: int = 0, data_seed: int = DEFAULT_DATA_SEED) -> DatasetSplits:
    """Generate MNIST-1D and return stratified train / val / test splits.

    ``data_seed`` fixes the generated sequences (default: the package's canonical seed 42); ``seed``
    fixes the train / val split of the 4,000 training sequences, of which val takes
    ``round(val_fraction * 4000)`` (defaults: 3200 / 800, plus the package's 1000 test sequences).
    Inputs are float32 ``(1, 40)``, standardised with the train split's mean and std. Generation
    (about 1.5 s) runs once per ``data_seed`` per process; later calls reuse it.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1) or leaving a split without some class, or a bad
            ``seed`` / ``data_seed``.

    Example:
        >>> splits = load_mnist1d_splits(seed=0)
        >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
        (3200, 800, 1000, (1, 40))
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    seed = check_seed(seed)
    data_seed = check_seed(data_seed, "data_seed")
    x, y, x_test, y_test = _generate(data_seed)
    train, val = stratified_split(y, fraction_count(val_fraction, len(y)), seed, "val_fraction")
    input_shape = (1, x.shape[1])
    return make_splits(
        "mnist1d", (x[train], y[train]), (x[val], y[val]), (x_test, y_test), input_shape, NUM_CLASSES
    )
