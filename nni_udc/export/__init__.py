"""Deploy a searched model: bake it into plain PyTorch (:mod:`nni_udc.export.bake`); its weight layers in integer
form (:mod:`nni_udc.export.integer`), bit-packed in a file whose payload is the model's ``memory_bits``
(:mod:`nni_udc.export.packed`)."""
from __future__ import annotations

from nni_udc.export.bake import BakedModel, BakeError, bake
from nni_udc.export.integer import (
    DEFAULT_SCALE_BITS,
    SCALE_BITS_CHOICES,
    IntegerWeights,
    fold_batchnorm,
    integer_layers,
    integer_weights,
    qmax,
    round_scales,
)
from nni_udc.export.packed import PackedFile, PackedFormatError, read_packed, write_packed

__all__ = [
    "DEFAULT_SCALE_BITS",
    "SCALE_BITS_CHOICES",
    "BakeError",
    "BakedModel",
    "IntegerWeights",
    "PackedFile",
    "PackedFormatError",
    "bake",
    "fold_batchnorm",
    "integer_layers",
    "integer_weights",
    "qmax",
    "read_packed",
    "round_scales",
    "write_packed",
]
