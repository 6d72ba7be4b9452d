"""Pure tensor math for compression: fake quantisation, masks, low-rank factorisation.

Everything here is a plain function of tensors (no NNI, no modules) and passes gradients
straight through the non-differentiable steps (rounding, top-k).
"""
from __future__ import annotations

from nni_udc.functional.lowrank import factorize_conv, factorize_conv2d, factorize_linear, max_rank
from nni_udc.functional.quant import (
    FLOAT_BITS,
    SUPPORTED_ACT_BITS,
    SUPPORTED_WEIGHT_BITS,
    fake_quantize_activation,
    fake_quantize_weight,
)
from nni_udc.functional.sparse import magnitude_mask, n_zeros_for, topk_mask_ste

__all__ = [
    "FLOAT_BITS",
    "SUPPORTED_ACT_BITS",
    "SUPPORTED_WEIGHT_BITS",
    "factorize_conv",
    "factorize_conv2d",
    "factorize_linear",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "magnitude_mask",
    "max_rank",
    "n_zeros_for",
    "topk_mask_ste",
]
