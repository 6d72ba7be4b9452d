"""Super-resolution patch pairs: a low-resolution input and its high-resolution target, with bicubic degradation.

Images come from a folder in DIV2K's layout (``ROOT/DIV2K_train_HR/*.png`` and, optionally,
``ROOT/DIV2K_valid_HR/*.png``) or, with no ``root``, from the natural images scikit-image ships
(:data:`BUNDLED`: astronaut, coffee, chelsea, rocket, ...; grey ones repeated over three channels). Nothing
downloads. Each image is cropped to a multiple of ``scale`` and shrunk by ``scale`` with torch's bicubic
interpolation (antialiased, as MATLAB's ``imresize`` that made DIV2K's LR images), then ``patches`` aligned pairs
are cut at seeded positions: an LR patch of ``patch × patch`` pixels (the network's input) and the HR patch of
``scale·patch`` pixels it must become. Pixels are float32 RGB in [0, 1] (not standardised: PSNR is measured on
them, :mod:`nni_udc.evaluators.sr`).

Splits are by image, never by patch (no image lends patches to two splits): the images of
``DIV2K_valid_HR`` are shuffled (seeded) and halved into val and test; without that folder, and for the bundled
images, ``val_fraction`` and ``test_fraction`` of the images are held out (seeded, at least one each).

Example:
    >>> splits = load_sr_splits(scale=2, patch=12, patches=2)
    >>> splits.name, splits.input_shape, tuple(splits.train.tensors[1].shape[1:])
    ('sr', (3, 12, 12), (3, 24, 24))
    >>> lr, hr = splits.val[0]
    >>> 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0
    True
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nni_udc.data._split import DatasetSplits, check_fraction, check_seed
from nni_udc.data.roots import DataRootError, check_arguments, require_path

__all__ = ["BUNDLED", "SCALES", "check_sr", "degrade", "load_sr_splits"]

#: scikit-image's shipped images the bundled set is made of (all read offline from the installed package)
BUNDLED = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "camera", "brick", "grass", "gravel", "coins", "moon")
#: the bicubic degradations offered (DIV2K's "bicubic" tracks)
SCALES = (2, 3, 4)
_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_ARGUMENTS = ("scale", "patch", "patches", "val_fraction", "test_fraction", "images")
_TRAIN, _VALID = "DIV2K_train_HR", "DIV2K_valid_HR"


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sr: {name} must be an integer >= 1, got {value!r}")
    return value


def _check_values(args: Mapping[str, Any]) -> None:
    check_arguments("sr", args, _ARGUMENTS)
    if args.get("scale", 2) not in SCALES or isinstance(args.get("scale"), bool):
        raise ValueError(f"sr: scale must be one of {', '.join(map(str, SCALES))}, got {args['scale']!r}")
    _positive("patch", args.get("patch", 24))
    _positive("patches", args.get("patches", 16))
    if args.get("images") is not None:
        _positive("images", args["images"])
    val, test = (check_fraction(k, args.get(k, 0.15)) for k in ("val_fraction", "test_fraction"))
    if val + test >= 1:
        raise ValueError(f"sr: val_fraction + test_fraction must be < 1, got {val!r} + {test!r}")


def _how(root: Any) -> str:
    return (f"put high-resolution images there as DIV2K ships them: {root}/{_TRAIN}/*.png (training) and, "
            f"optionally, {root}/{_VALID}/*.png (halved into val and test); or leave data.root out for the images "
            f"bundled with scikit-image")


def _image_files(root: str | Path | None) -> tuple[list[Path], list[Path]]:
    """The train and valid images of a DIV2K-style ``root`` (sorted by name), checked to exist."""
    train = require_path("sr", root, _TRAIN, _how(root))
    files = sorted(p for p in train.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not files:
        raise DataRootError(f"sr: {train} holds no images ({', '.join(_SUFFIXES)}); {_how(root)}")
    valid = train.parent / _VALID
    held = sorted(p for p in valid.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES) if valid.is_dir() else []
    if valid.is_dir() and len(held) < 2:
        raise DataRootError(f"sr: {valid} holds {len(held)} image(s); it needs at least 2 (halved into val and "
                            f"test), or remove it to hold images of {_TRAIN} out instead")
    return files, held


def check_sr(root: str | Path | None, args: Mapping[str, Any]) -> None:
    """Refuse a bad argument, or a ``root`` without ``DIV2K_train_HR/`` images (``root=None``: the bundled images).

    Example:
        >>> check_sr(None, {"scale": 5})
        Traceback (most recent call last):
        ...
        ValueError: sr: scale must be one of 2, 3, 4, got 5
    """
    _check_values(args)
    if root is not None:
        _image_files(root)


def _read(file: Path) -> np.ndarray:
    """An image file as uint8 ``(H, W, 3)`` RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DataRootError(f"sr: {file} is not a readable image ({error})") from None


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[np.ndarray, ...]:
    """scikit-image's images of :data:`BUNDLED` as uint8 ``(H, W, 3)`` (read once per process)."""
    import skimage.data

    images = []
    for name in BUNDLED:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    return tuple(images)


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``hr`` (``(N, C, H, W)`` in [0, 1], ``H`` and ``W`` multiples of ``scale``) shrunk ``scale`` times by
    antialiased bicubic interpolation and clipped to [0, 1].

    Example:
        >>> degrade(torch.full((1, 3, 8, 6), 0.5), 2).shape
        torch.Size([1, 3, 4, 3])
    """
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    return lr.clamp_(0.0, 1.0)


def _pairs(image: np.ndarray, scale: int, patch: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` aligned (LR, HR) patches of one image at seeded positions."""
    h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    if h // scale < patch or w // scale < patch:
        raise DataRootError(f"sr: an image of {image.shape[1]}x{image.shape[0]} pixels is too small for LR patches "
                            f"of {patch} at scale {scale} (it needs {patch * scale}x{patch * scale}); lower patch")
    hr = torch.from_numpy(image[:h, :w]).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    lr = degrade(hr, scale)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, h // scale - patch + 1, count)
    cols = rng.integers(0, w // scale - patch + 1, count)
    s = scale
    lows = torch.stack([lr[0, :, r:r + patch, c:c + patch] for r, c in zip(rows, cols)])
    highs = torch.stack([hr[0, :, r * s:(r + patch) * s, c * s:(c + patch) * s] for r, c in zip(rows, cols)])
    return lows, highs


def _held_out(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Seeded train / val / test indices of ``n`` images, at least one image in each."""
    if n < 3:
        raise DataRootError(f"sr: {n} image(s) cannot make train, val and test splits; give at least 3")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_test = min(max(1, int(round(test_fraction * n))), n - 2)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1 - n_test)
    return sorted(order[n_test + n_val:]), sorted(order[n_test:n_test + n_val]), sorted(order[:n_test])


def load_sr_splits(root: str | Path | None = None, scale: int = 2, patch: int = 24, patches: int = 16,
                   val_fraction: float = 0.15, test_fraction: float = 0.15, images: int | None = None,
                   seed: int = 0) -> DatasetSplits:
    """(LR, HR) patch pairs of DIV2K-style images under ``root``, or of scikit-image's images without one.

    ``patch`` is the LR patch's side (the network's input; the HR patch is ``scale`` times larger), ``patches`` the
    number cut from each image, ``images`` the most images read (the first by name; ``None``: all). The splits are
    ``TensorDataset`` s of ``(lr, hr)`` float32 tensors in [0, 1]; ``input_shape`` is ``(3, patch, patch)`` and
    ``num_classes`` 0 (no classes: the target is an image).

    Raises:
        DataRootError: ``root`` has no ``DIV2K_train_HR`` with images, a file is not a readable image, an image is
            smaller than one HR patch, or there are too few images for three splits.
        ValueError: a bad argument.
    """
    args = {"scale": scale, "patch": patch, "patches": patches, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "images": images}
    _check_values(args)
    seed = check_seed(seed)
    if root is None:
        pictures = list(_bundled())[:images]
        train_i, val_i, test_i = _held_out(len(pictures), val_fraction, test_fraction, seed)
        parts = {"train": [pictures[i] for i in train_i], "val": [pictures[i] for i in val_i],
                 "test": [pictures[i] for i in test_i]}
    else:
        train_files, valid_files = _image_files(root)
        train_files = train_files[:images]
        if valid_files:
            order = np.random.default_rng(seed).permutation(len(valid_files)).tolist()
            half = len(order) // 2
            files = {"train": train_files, "val": [valid_files[i] for i in sorted(order[:half])],
                     "test": [valid_files[i] for i in sorted(order[half:])]}
        else:
            train_i, val_i, test_i = _held_out(len(train_files), val_fraction, test_fraction, seed)
            files = {"train": [train_files[i] for i in train_i], "val": [train_files[i] for i in val_i],
                     "test": [train_files[i] for i in test_i]}
        parts = {split: [_read(f) for f in chosen] for split, chosen in files.items()}

    def dataset(split: str, offset: int) -> TensorDataset:
        pairs = [_pairs(image, scale, patch, patches, seed * 7919 + offset + i)
                 for i, image in enumerate(parts[split])]
        return TensorDataset(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))

    return DatasetSplits(train=dataset("train", 0), val=dataset("val", 100_000), test=dataset("test", 200_000),
                         input_shape=(3, patch, patch), num_classes=0, name="sr")
