"""Compressible layers (Conv1d, Conv2d, Linear): each a plain fixed module plus an NNI ``ParametrizedModule`` twin
(``Mutable*``)."""
from __future__ import annotations

from nni_udc import _compat  # noqa: F401  (silences NNI's harmless torch-version warnings once)
from nni_udc.nn.choices import act_bits_choice, bits_choice, channel_bits_choice, rank_choice, sparsity_choice
from nni_udc.nn.lowrank import (
    LowRankConv1d,
    LowRankConv2d,
    LowRankLinear,
    MutableLowRankConv1d,
    MutableLowRankConv2d,
    MutableLowRankLinear,
)
from nni_udc.nn.quant import (
    ActivationQuantizer,
    MutableQuantConv1d,
    MutableQuantConv2d,
    MutableQuantLinear,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
)
from nni_udc.nn.sparse import (
    MutableSparseConv1d,
    MutableSparseConv2d,
    MutableSparseLinear,
    SparseConv1d,
    SparseConv2d,
    SparseLinear,
)

#: The plain (frozen) layers by family, for code that reads a found model (costs, export). Typed member by
#: member so that ``isinstance(m, QUANT_LAYERS)`` narrows ``m`` to those classes for mypy.
QUANT_LAYERS: tuple[type[QuantConv1d], type[QuantConv2d], type[QuantLinear]] = (QuantConv1d, QuantConv2d, QuantLinear)
LOWRANK_LAYERS: tuple[type[LowRankConv1d], type[LowRankConv2d], type[LowRankLinear]] = (
    LowRankConv1d, LowRankConv2d, LowRankLinear)
SPARSE_LAYERS: tuple[type[SparseConv1d], type[SparseConv2d], type[SparseLinear]] = (
    SparseConv1d, SparseConv2d, SparseLinear)
COMPRESSED_LAYERS: tuple[type[QuantConv1d], type[QuantConv2d], type[QuantLinear],
                         type[LowRankConv1d], type[LowRankConv2d], type[LowRankLinear],
                         type[SparseConv1d], type[SparseConv2d], type[SparseLinear]] = (
    QUANT_LAYERS + LOWRANK_LAYERS + SPARSE_LAYERS)

#: The NNI twins by family, for code that looks for a kind of compression in a space.
QUANT_MUTABLES: tuple[type[MutableQuantConv1d], type[MutableQuantConv2d], type[MutableQuantLinear]] = (
    MutableQuantConv1d, MutableQuantConv2d, MutableQuantLinear)
LOWRANK_MUTABLES: tuple[type[MutableLowRankConv1d], type[MutableLowRankConv2d], type[MutableLowRankLinear]] = (
    MutableLowRankConv1d, MutableLowRankConv2d, MutableLowRankLinear)
SPARSE_MUTABLES: tuple[type[MutableSparseConv1d], type[MutableSparseConv2d], type[MutableSparseLinear]] = (
    MutableSparseConv1d, MutableSparseConv2d, MutableSparseLinear)
COMPRESSIBLE_MUTABLES: tuple[type[MutableQuantConv1d], type[MutableQuantConv2d], type[MutableQuantLinear],
                             type[MutableLowRankConv1d], type[MutableLowRankConv2d], type[MutableLowRankLinear],
                             type[MutableSparseConv1d], type[MutableSparseConv2d], type[MutableSparseLinear]] = (
    QUANT_MUTABLES + LOWRANK_MUTABLES + SPARSE_MUTABLES)

__all__ = [
    "COMPRESSED_LAYERS",
    "COMPRESSIBLE_MUTABLES",
    "LOWRANK_LAYERS",
    "LOWRANK_MUTABLES",
    "QUANT_LAYERS",
    "QUANT_MUTABLES",
    "SPARSE_LAYERS",
    "SPARSE_MUTABLES",
    "ActivationQuantizer",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankLinear",
    "MutableLowRankConv1d",
    "MutableLowRankConv2d",
    "MutableLowRankLinear",
    "MutableQuantConv1d",
    "MutableQuantConv2d",
    "MutableQuantLinear",
    "MutableSparseConv1d",
    "MutableSparseConv2d",
    "MutableSparseLinear",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "SparseConv1d",
    "SparseConv2d",
    "SparseLinear",
    "act_bits_choice",
    "bits_choice",
    "channel_bits_choice",
    "rank_choice",
    "sparsity_choice",
]
