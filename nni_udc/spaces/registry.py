"""Model spaces by name (for the command line and YAML files): a registered name or ``module:Class``."""
from __future__ import annotations

from nni.nas.nn.pytorch import ModelSpace

from nni_udc._imports import import_named
from nni_udc.spaces.digits import DigitsSpace
from nni_udc.spaces.ds_cnn import DsCnnSpace
from nni_udc.spaces.edsr_sr import EdsrSpace
from nni_udc.spaces.mnist1d import Mnist1dSpace
from nni_udc.spaces.mobilenetv2_cifar import MobileNetV2CifarSpace
from nni_udc.spaces.resnet_cifar import ResNetCifarSpace
from nni_udc.spaces.sparse_cell import SparseCellSpace
from nni_udc.spaces.vgg_cifar import VggCifarSpace

__all__ = ["SPACES", "resolve_space"]

#: name -> (space class, input shape of one sample)
SPACES: dict[str, tuple[type, tuple[int, ...]]] = {
    "digits": (DigitsSpace, (1, 8, 8)),
    "mnist1d": (Mnist1dSpace, (1, 40)),
    "sparse-cell": (SparseCellSpace, (1, 8, 8)),
    "resnet-cifar": (ResNetCifarSpace, (3, 32, 32)),
    "vgg-cifar": (VggCifarSpace, (3, 32, 32)),
    "mobilenetv2-cifar": (MobileNetV2CifarSpace, (3, 32, 32)),
    "ds-cnn": (DsCnnSpace, (1, 49, 10)),
    "edsr-sr": (EdsrSpace, (3, 24, 24)),  # a low-resolution patch; the space is fully convolutional
}


def resolve_space(name: str) -> tuple[type, tuple[int, ...] | None]:
    """The space class of a registered name, or of ``'package.module:Class'`` (its input shape is then unknown).

    Example:
        >>> resolve_space("digits")
        (<class 'nni_udc.spaces.digits.DigitsSpace'>, (1, 8, 8))
    """
    if name in SPACES:
        return SPACES[name]
    if ":" not in name:
        raise ValueError(f"unknown space {name!r}; registered spaces: {sorted(SPACES)} (or give 'module:Class')")
    cls = import_named(name)
    if not (isinstance(cls, type) and issubclass(cls, ModelSpace)):
        raise ValueError(f"space {name!r} is not an NNI ModelSpace subclass")
    return cls, None
