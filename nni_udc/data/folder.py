"""Images in class folders (the ImageFolder layout), read with PIL and resized to one size.

Layout under ``root``: ``train/<class>/*.png`` (or ``.jpg``, ``.jpeg``, ``.bmp``), and optionally ``val/<class>/...``
and ``test/<class>/...`` with the same class names. The classes are the folders of ``train``, sorted by name
(label 0 is the first). A split without its folder is held out from ``train``: seeded, stratified,
``val_fraction`` and ``test_fraction`` of the train folder's images. Every image is converted to RGB (or grey,
``channels=1``), resized to ``size`` (bilinear) and standardised per channel with the train split's statistics;
the whole data set is held in memory as float32.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nni_udc.data._split import DatasetSplits, check_fraction, check_seed, fraction_count, stratified_split
from nni_udc.data.images import make_image_splits
from nni_udc.data.roots import DataRootError, check_arguments, require_path

__all__ = ["IMAGE_SUFFIXES", "check_folder", "load_folder_splits"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_ARGUMENTS = ("size", "channels", "val_fraction", "test_fraction", "augment")
_HOW = "put one folder of images per class there (ROOT/train/<class>/*.png or *.jpg); ROOT/val and ROOT/test are optional"


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"folder: size must be an integer >= 1 or [height, width], got {value!r}")


def _check_values(args: Mapping[str, Any]) -> None:
    check_arguments("folder", args, _ARGUMENTS)
    _size(args.get("size", 32))
    if args.get("channels", 3) not in (1, 3) or isinstance(args.get("channels"), bool):
        raise ValueError(f"folder: channels must be 1 (grey) or 3 (RGB), got {args['channels']!r}")
    if not isinstance(args.get("augment", False), bool):
        raise ValueError(f"folder: augment must be true or false, got {args['augment']!r}")
    val, test = (check_fraction(k, args.get(k, 0.1)) for k in ("val_fraction", "test_fraction"))
    if val + test >= 1:
        raise ValueError(f"folder: val_fraction + test_fraction must be < 1, got {val!r} + {test!r}")


def _classes(root: str | Path | None) -> list[str]:
    train = require_path("folder", root, "train", _HOW.replace("ROOT", str(root)))
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise DataRootError(f"folder: {train} holds no class folders; {_HOW.replace('ROOT', str(root))}")
    return classes


def check_folder(root: str | Path | None, args: Mapping[str, Any]) -> None:
    """Refuse a ``root`` without ``train/<class>/`` folders, or a bad argument (``ValueError`` saying what to do).

    Example:
        >>> check_folder(".", {"size": 0})
        Traceback (most recent call last):
        ...
        ValueError: folder: size must be an integer >= 1 or [height, width], got 0
    """
    _check_values(args)
    _classes(root)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_split(split: Path, classes: list[str], size: tuple[int, int], mode: str,
                require_all: bool) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``split/<class>/`` as uint8 ``(n, C, H, W)`` and their labels."""
    from PIL import Image, UnidentifiedImageError

    found = sorted(p.name for p in split.iterdir() if p.is_dir())
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataRootError(f"folder: {split / unknown[0]} is not a class of the train folder "
                            f"(classes: {', '.join(classes)})")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = _images(split / name) if (split / name).is_dir() else []
        if require_all and not files:
            raise DataRootError(f"folder: {split / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as image:
                    image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as error:
                raise DataRootError(f"folder: {file} is not a readable image ({error})") from None
            images.append(array.reshape(size[0], size[1], -1).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataRootError(f"folder: {split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_folder_splits(root: str | Path | None = None, size: int | tuple[int, int] | list[int] = 32,
                       channels: int = 3, val_fraction: float = 0.1, test_fraction: float = 0.1,
                       augment: bool = False, seed: int = 0) -> DatasetSplits:
    """Images of ``root/train/<class>/`` (and ``root/val``, ``root/test`` if there) as standardised splits.

    Inputs are float32 ``(channels, height, width)``; ``size`` is one number (square) or ``[height, width]``.
    When ``root/test`` is missing, ``round(test_fraction * n)`` of the ``n`` train-folder images are held out
    as the test split; when ``root/val`` is missing, ``round(val_fraction * n)`` are held out as val (both
    seeded and stratified). With ``augment`` train images are shifted (up to an eighth of their size) and
    mirrored as they are read.

    Raises:
        DataRootError: ``root`` has no ``train`` folder, a class folder of train holds no images, a val/test
            class is not one of train's, or a file is not a readable image.
        ValueError: a bad argument.
    """
    args = {"size": size, "channels": channels, "val_fraction": val_fraction, "test_fraction": test_fraction,
            "augment": augment}
    _check_values(args)
    seed = check_seed(seed)
    classes = _classes(root)
    folder = Path(str(root)).expanduser()
    height_width, mode = _size(size), "RGB" if channels == 3 else "L"
    x, y = _read_split(folder / "train", classes, height_width, mode, require_all=True)
    given = {s: _read_split(folder / s, classes, height_width, mode, require_all=False)
             for s in ("val", "test") if (folder / s).is_dir()}
    keep = np.arange(len(y))
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split not in given:
            kept, taken = stratified_split(y[keep], fraction_count(float(fraction), len(y)), seed, f"{split}_fraction")
            given[split] = (x[keep[taken]], y[keep[taken]])
            keep = keep[kept]
    return make_image_splits("folder", (x[keep], y[keep]), given["val"], given["test"], len(classes),
                             augment=augment, padding=max(height_width) // 8)
