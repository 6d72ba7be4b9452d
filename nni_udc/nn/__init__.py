"""Compressible layers: each a plain fixed module plus an NNI ``ParametrizedModule`` twin (``Mutable*``)."""
from __future__ import annotations

from nni_udc import _compat  # noqa: F401  (silences NNI's harmless torch-version warnings once)
from nni_udc.nn.choices import act_bits_choice, bits_choice, channel_bits_choice, rank_choice, sparsity_choice
from nni_udc.nn.lowrank import LowRankConv2d, LowRankLinear, MutableLowRankConv2d, MutableLowRankLinear
from nni_udc.nn.quant import ActivationQuantizer, MutableQuantConv2d, MutableQuantLinear, QuantConv2d, QuantLinear
from nni_udc.nn.sparse import MutableSparseConv2d, MutableSparseLinear, SparseConv2d, SparseLinear

__all__ = [
    "ActivationQuantizer",
    "LowRankConv2d",
    "LowRankLinear",
    "MutableLowRankConv2d",
    "MutableLowRankLinear",
    "MutableQuantConv2d",
    "MutableQuantLinear",
    "MutableSparseConv2d",
    "MutableSparseLinear",
    "QuantConv2d",
    "QuantLinear",
    "SparseConv2d",
    "SparseLinear",
    "act_bits_choice",
    "bits_choice",
    "channel_bits_choice",
    "rank_choice",
    "sparsity_choice",
]
