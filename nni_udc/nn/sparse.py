"""DASS-style sparse ops: a weight plus learnable importance scores, masked to a fixed sparsity.

The mask keeps the weights with the largest ``|score|`` (exactly ``round(sparsity·n)`` zeros) and passes
its gradient straight through to the scores, so the set of kept weights can change while training.
``weight_bits`` fake-quantises the kept weights (per output channel); 32 keeps them float.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ParametrizedModule
from torch import nn

from nni_udc.functional import fake_quantize_weight, topk_mask_ste
from nni_udc.nn._checks import check_sparsity, check_weight_bits

__all__ = ["MutableSparseConv1d", "MutableSparseConv2d", "MutableSparseLinear", "SparseConv1d", "SparseConv2d", "SparseLinear"]


class _Scored:
    weight: nn.Parameter
    sparsity: float
    scores: nn.Parameter

    def _setup_scores(self, sparsity: float, weight_bits: int) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.weight_bits = check_weight_bits(weight_bits)
        # Scores start at |w|: the first mask is the magnitude mask.
        self.scores = nn.Parameter(self.weight.detach().abs().clone())

    def mask(self) -> torch.Tensor:
        return topk_mask_ste(self.scores, self.sparsity)

    def masked_weight(self) -> torch.Tensor:
        """The masked, fake-quantised weight (what the hardware would store)."""
        return fake_quantize_weight(self.weight * self.mask(), self.weight_bits)


class _SparseConv(_Scored):
    """The DASS sparse conv of any dimension, mixed in before the torch conv class (one ``__init__`` for all)."""

    _conv_forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    bias: torch.Tensor | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, sparsity: float = 0.5,
                 weight_bits: int = 32) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,  # type: ignore[call-arg]
                         padding_mode)
        self._setup_scores(sparsity, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparsity={self.sparsity}, weight_bits={self.weight_bits}"  # type: ignore[misc]


class SparseConv1d(_SparseConv, nn.Conv1d):  # type: ignore[misc]
    """``nn.Conv1d`` whose weight is masked to ``sparsity`` by learnable scores.

    Example:
        >>> conv = SparseConv1d(4, 8, 5, sparsity=0.75)
        >>> int((conv.masked_weight() == 0).sum())   # 0.75 · 8·4·5
        120
    """


class SparseConv2d(_SparseConv, nn.Conv2d):  # type: ignore[misc]
    """``nn.Conv2d`` whose weight is masked to ``sparsity`` by learnable scores.

    Example:
        >>> conv = SparseConv2d(4, 8, 3, sparsity=0.75)
        >>> int((conv.masked_weight() == 0).sum())
        216
    """


class SparseLinear(_Scored, nn.Linear):  # type: ignore[misc]
    """``nn.Linear`` whose weight is masked to ``sparsity`` by learnable scores."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, sparsity: float = 0.5,
                 weight_bits: int = 32) -> None:
        super().__init__(in_features, out_features, bias)
        self._setup_scores(sparsity, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparsity={self.sparsity}, weight_bits={self.weight_bits}"


class MutableSparseConv1d(ParametrizedModule, SparseConv1d, wraps=SparseConv1d):  # type: ignore[call-arg]
    """:class:`SparseConv1d` whose ``sparsity`` (or any argument) may be an ``nni.choice``."""


class MutableSparseConv2d(ParametrizedModule, SparseConv2d, wraps=SparseConv2d):  # type: ignore[call-arg]
    """:class:`SparseConv2d` whose ``sparsity`` (or any argument) may be an ``nni.choice``."""


class MutableSparseLinear(ParametrizedModule, SparseLinear, wraps=SparseLinear):  # type: ignore[call-arg]
    """:class:`SparseLinear` whose ``sparsity`` (or any argument) may be an ``nni.choice``."""
