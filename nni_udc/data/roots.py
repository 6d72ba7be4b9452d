"""Checks of a data set's local ``root`` folder and of its loader arguments, each failing with one clear message.

Nothing downloads at run time: a loader reads files a user put under ``root``. When they are not there, the
error names the data set, the path that is missing and what to put there, so the fix is one step.

Example:
    >>> require_path("cifar10", None, "cifar-10-batches-py/data_batch_1", "extract the archive there")
    Traceback (most recent call last):
    ...
    nni_udc.data.roots.DataRootError: cifar10: needs data.root, a folder holding cifar-10-batches-py/data_batch_1: extract the archive there
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DataRootError", "check_arguments", "require_path", "require_root"]


class DataRootError(ValueError):
    """A data set's ``root`` is missing or does not hold what its loader reads; the message says what to put there."""


def require_root(dataset: str, root: str | Path | None, holding: str, how: str) -> Path:
    """``root`` as a ``Path`` if it is an existing folder, else :class:`DataRootError`.

    ``holding`` says what the folder must contain and ``how`` how to get it, both for the message.

    Example:
        >>> require_root("folder", ".", "train/<class>/*.png", "put images there").is_dir()
        True
    """
    if root is None:
        raise DataRootError(f"{dataset}: needs data.root, a folder holding {holding}: {how}")
    if not isinstance(root, (str, Path)) or not str(root):
        raise DataRootError(f"{dataset}: data.root must be a folder path, but got {root!r}")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataRootError(f"{dataset}: data root {str(path)!r} {what}; it must be a folder holding {holding}: {how}")
    return path


def require_path(dataset: str, root: str | Path | None, relative: str, how: str) -> Path:
    """``root / relative`` if it exists, else :class:`DataRootError` naming the missing path and ``how`` to fill it.

    Example:
        >>> require_path("x", ".", "missing.bin", "copy it there")
        Traceback (most recent call last):
        ...
        nni_udc.data.roots.DataRootError: x: data root '.' has no missing.bin; copy it there
    """
    folder = require_root(dataset, root, relative, how)
    path = folder / relative
    if not path.exists():
        raise DataRootError(f"{dataset}: data root {str(folder)!r} has no {relative}; {how}")
    return path


def check_arguments(dataset: str, given: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse an argument name the loader of ``dataset`` does not take, naming the ones it does.

    Example:
        >>> check_arguments("cifar10", {"augment": True}, ["augment", "val_fraction"])
        >>> check_arguments("cifar10", {"size": 32}, ["augment", "val_fraction"])
        Traceback (most recent call last):
        ...
        ValueError: cifar10: unknown argument 'size'; allowed: augment, val_fraction
    """
    allowed = list(allowed)
    unknown = sorted(str(k) for k in given if k not in allowed)
    if unknown:
        raise ValueError(f"{dataset}: unknown argument {unknown[0]!r}; allowed: {', '.join(allowed) or '(none)'}")
