"""CIFAR-10 and CIFAR-100 read from the "python version" archives, extracted under a local ``root``.

The layout is the one torchvision's ``CIFAR10``/``CIFAR100`` read: ``ROOT/cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, and ``ROOT/cifar-100-python/`` with ``train`` and
``test``. Each file is a pickled dict: ``b"data"`` a ``(n, 3072)`` uint8 array (1024 red, then green, then blue
values, rows top to bottom) and the labels, ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` and
``b"coarse_labels"`` (CIFAR-100). The files are read with :func:`~nni_udc.data.safe_pickle.load_array_pickle`,
which refuses a pickle that asks for anything but NumPy arrays.

The given test set is the test split; ``val_fraction`` of the training set is held out as the val split
(seeded, stratified). Channels are standardised with the train split's statistics; with ``augment`` (the
default) each train image is shifted by up to 4 pixels and mirrored as it is read.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nni_udc.data._split import DatasetSplits, check_fraction, check_seed, fraction_count, stratified_split
from nni_udc.data.images import make_image_splits
from nni_udc.data.roots import DataRootError, check_arguments, require_path
from nni_udc.data.safe_pickle import UnsafePickleError, load_array_pickle

__all__ = ["CIFAR_URL", "check_cifar10", "check_cifar100", "load_cifar10_splits", "load_cifar100_splits",
           "read_cifar_batch"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
INPUT_SHAPE: tuple[int, ...] = (3, 32, 32)
_LAYOUT = {  # data set -> (folder, archive, train files, test file, classes)
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", 10),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ("train",), "test", 100),
}
_ARGUMENTS = {"cifar10": ("val_fraction", "augment"), "cifar100": ("val_fraction", "augment", "labels")}
_LABEL_KEYS = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}


def _files(dataset: str, root: str | Path | None) -> list[Path]:
    """The batch files of ``dataset`` under ``root`` (train files, then the test file), checked to exist."""
    folder, archive, train, test, _ = _LAYOUT[dataset]
    files = []
    for name in (*train, test):
        where = f"{root}/{folder}/{name}"
        how = f"extract {archive} from {CIFAR_URL} into {root} so that {where} exists"
        files.append(require_path(dataset, root, f"{folder}/{name}", how))
    return files


def _check(dataset: str, root: str | Path | None, args: Mapping[str, Any]) -> None:
    check_arguments(dataset, args, _ARGUMENTS[dataset])
    check_fraction("val_fraction", args.get("val_fraction", 0.1))
    if not isinstance(args.get("augment", True), bool):
        raise ValueError(f"{dataset}: augment must be true or false, got {args['augment']!r}")
    if args.get("labels", "fine") not in _LABEL_KEYS:
        raise ValueError(f"{dataset}: labels must be one of {', '.join(_LABEL_KEYS)}, got {args['labels']!r}")
    _files(dataset, root)


def check_cifar10(root: str | Path | None, args: Mapping[str, Any]) -> None:
    """Refuse a ``root`` without CIFAR-10's batch files, or a bad argument (``ValueError`` naming what to do).

    Example:
        >>> try:
        ...     check_cifar10("/nonexistent", {})
        ... except ValueError as error:
        ...     print(error)  # doctest: +NORMALIZE_WHITESPACE
        cifar10: data root '/nonexistent' does not exist;
        it must be a folder holding cifar-10-batches-py/data_batch_1: extract cifar-10-python.tar.gz from
        https://www.cs.toronto.edu/~kriz/cifar.html into /nonexistent so that /nonexistent/cifar-10-batches-py/data_batch_1 exists
    """
    _check("cifar10", root, args)


def check_cifar100(root: str | Path | None, args: Mapping[str, Any]) -> None:
    """Refuse a ``root`` without CIFAR-100's ``train``/``test`` files, or a bad argument (see :func:`check_cifar10`)."""
    _check("cifar100", root, args)


def read_cifar_batch(path: str | Path, label_key: bytes = b"labels",
                     num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(images, labels)``: uint8 ``(n, 3, 32, 32)`` and int64 ``(n,)``.

    Raises:
        DataRootError: the file is not a CIFAR batch (not a pickle, refused as unsafe, keys or shapes wrong).

    Example:
        >>> import pickle, tempfile, os
        >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = open(os.path.join(d, "b"), "wb").write(pickle.dumps(batch, protocol=2))
        ...     x, y = read_cifar_batch(os.path.join(d, "b"))
        >>> x.shape, y.tolist()
        ((2, 3, 32, 32), [3, 7])
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            batch = load_array_pickle(file)
    except UnsafePickleError as error:
        raise DataRootError(f"{path}: not loaded, {error}") from None
    except Exception as error:  # noqa: BLE001 (any unpickling failure: a truncated or foreign file)
        raise DataRootError(f"{path}: not a CIFAR batch file ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataRootError(f"{path}: not a CIFAR batch file: expected a dict with b'data' and {label_key!r}, "
                            f"got {keys}")
    images = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072 or len(labels) != len(images):
        raise DataRootError(f"{path}: b'data' must be uint8 (n, 3072) with n labels, got {images.dtype} "
                            f"{images.shape} and {len(labels)} labels")
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise DataRootError(f"{path}: labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return images.reshape(-1, *INPUT_SHAPE), labels


@functools.lru_cache(maxsize=2)
def _read(files: tuple[Path, ...], stamps: tuple[tuple[int, int], ...], label_key: bytes,
          num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test arrays of the batch ``files`` (cached per process while their sizes and times stay)."""
    train = [read_cifar_batch(f, label_key, num_classes) for f in files[:-1]]
    x_test, y_test = read_cifar_batch(files[-1], label_key, num_classes)
    x, y = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    for a in (x, y, x_test, y_test):
        a.setflags(write=False)
    return x, y, x_test, y_test


def _load(dataset: str, root: str | Path | None, val_fraction: float, augment: bool, seed: int,
          labels: str = "fine") -> DatasetSplits:
    args = {"val_fraction": val_fraction, "augment": augment} | ({"labels": labels} if dataset == "cifar100" else {})
    _check(dataset, root, args)
    seed = check_seed(seed)
    files = tuple(_files(dataset, root))
    label_key, num_classes = (b"labels", 10) if dataset == "cifar10" else _LABEL_KEYS[labels]
    x, y, x_test, y_test = _read(files, tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files),
                                 label_key, num_classes)
    train, val = stratified_split(y, fraction_count(float(val_fraction), len(y)), seed, "val_fraction")
    return make_image_splits(dataset, (x[train], y[train]), (x[val], y[val]), (x_test, y_test), num_classes,
                             augment=augment)


def load_cifar10_splits(root: str | Path | None = None, val_fraction: float = 0.1, augment: bool = True,
                        seed: int = 0) -> DatasetSplits:
    """CIFAR-10 from ``root`` (holding ``cifar-10-batches-py/``): train / val / test of ``(3, 32, 32)`` images.

    The 50,000 training images give train and val (``round(val_fraction * 50000)``, seeded and stratified;
    default 45,000 / 5,000); the 10,000 test images are the test split. Channels are standardised with the
    train split's mean and std; with ``augment`` the train split shifts (up to 4 pixels) and mirrors images.

    Raises:
        DataRootError: ``root`` is missing or lacks a batch file (the message says what to extract where), or a
            file is not a CIFAR batch (including a pickle that asks for more than NumPy arrays).
        ValueError: a bad ``val_fraction``, ``augment`` or ``seed``.
    """
    return _load("cifar10", root, val_fraction, augment, seed)


def load_cifar100_splits(root: str | Path | None = None, val_fraction: float = 0.1, augment: bool = True,
                         seed: int = 0, labels: str = "fine") -> DatasetSplits:
    """CIFAR-100 from ``root`` (holding ``cifar-100-python/``), as :func:`load_cifar10_splits` does CIFAR-10.

    ``labels``: ``"fine"`` (100 classes, the default) or ``"coarse"`` (the 20 superclasses).
    """
    return _load("cifar100", root, val_fraction, augment, seed, labels)
