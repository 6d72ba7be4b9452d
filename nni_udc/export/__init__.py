"""Deploy a searched model: :func:`export` writes it as torch files, QDQ ONNX and a packed file
(:mod:`nni_udc.export.api`); bake it into plain PyTorch (:mod:`nni_udc.export.bake`); its weight layers in integer
form (:mod:`nni_udc.export.integer`), bit-packed in a file whose payload is the model's ``memory_bits``
(:mod:`nni_udc.export.packed`)."""
from __future__ import annotations

from nni_udc.export.api import FORMATS, ExportedFile, export
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
from nni_udc.export.load import ModelFileError, load_model
from nni_udc.export.packed import PackedFile, PackedFormatError, read_packed, write_packed
from nni_udc.export.torch_files import save_torch

__all__ = [
    "DEFAULT_SCALE_BITS",
    "FORMATS",
    "SCALE_BITS_CHOICES",
    "BakeError",
    "BakedModel",
    "ExportedFile",
    "IntegerWeights",
    "ModelFileError",
    "PackedFile",
    "PackedFormatError",
    "bake",
    "export",
    "fold_batchnorm",
    "integer_layers",
    "integer_weights",
    "load_model",
    "qmax",
    "read_packed",
    "round_scales",
    "save_torch",
    "write_packed",
]
