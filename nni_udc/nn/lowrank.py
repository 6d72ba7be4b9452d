"""Low-rank Conv1d, Conv2d and Linear: a dense layer replaced by two thinner ones (HALOC's rank as a choice).

``LowRankConv2d`` is a ``k×k`` conv to ``rank`` channels followed by a ``1×1`` conv to ``out_channels``
(``LowRankConv1d``: a ``k`` conv, then a ``1`` conv).
``from_dense`` initialises both factors from the dense layer's SVD (best rank-r approximation).
``weight_bits`` fake-quantises both factors (per output channel, as :class:`~nni_udc.nn.QuantConv2d`), so a
low-rank layer is compressed like any other; 32 keeps them float.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ParametrizedModule
from torch import nn
from torch.nn.modules.utils import _ntuple

from nni_udc.functional import factorize_conv, factorize_linear, fake_quantize_weight, max_rank
from nni_udc.nn._checks import check_rank, check_weight_bits

__all__ = ["LowRankConv1d", "LowRankConv2d", "LowRankLinear", "MutableLowRankConv1d", "MutableLowRankConv2d",
           "MutableLowRankLinear"]


class _LowRankConv(nn.Module):
    """A conv of any dimension factorised at ``rank``: ``first`` (full kernel, ``in → rank``, no bias), then
    ``second`` (pointwise, ``rank → out``). Subclasses name the torch conv class and its dimension."""

    conv_type: type[nn.Conv1d] | type[nn.Conv2d]
    dims: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, *, rank: int, weight_bits: int = 32) -> None:
        super().__init__()
        self.weight_bits = check_weight_bits(weight_bits)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups = 1
        self.kernel_size = _ntuple(self.dims)(kernel_size)  # one entry per dimension, as torch stores it
        self.rank = check_rank(rank, max_rank(out_channels, in_channels, self.kernel_size))
        self.first = self.conv_type(in_channels, self.rank, kernel_size, stride, padding, dilation, bias=False)
        self.second = self.conv_type(self.rank, out_channels, 1, bias=bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv1d | nn.Conv2d, rank: int) -> _LowRankConv:
        """A factorised copy of ``conv`` (groups must be 1) initialised from its SVD."""
        if not isinstance(conv, cls.conv_type):
            raise TypeError(f"{cls.__name__}.from_dense needs an nn.{cls.conv_type.__name__}, but got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"low-rank factorisation needs groups=1, but got groups={conv.groups}")
        lr = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                 conv.dilation, conv.bias is not None, rank=rank)
        lr.load_dense(conv.weight, conv.bias)
        return lr

    @torch.no_grad()
    def load_dense(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set both factors from a dense ``(out, in, *kernel)`` weight."""
        first, second = factorize_conv(weight, self.rank)
        self.first.weight.copy_(first)
        self.second.weight.copy_(second)
        if bias is not None and self.second.bias is not None:
            self.second.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first._conv_forward(x, fake_quantize_weight(self.first.weight, self.weight_bits), None)
        return self.second._conv_forward(h, fake_quantize_weight(self.second.weight, self.weight_bits), self.second.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
                f"weight_bits={self.weight_bits}")


class LowRankConv1d(_LowRankConv):
    """Conv1d factorised at ``rank``: ``first`` (kernel k, ``in → rank``, no bias), then ``second`` (kernel 1, ``rank → out``).

    Example:
        >>> dense = nn.Conv1d(4, 16, 5, padding=2)
        >>> lr = LowRankConv1d.from_dense(dense, rank=16)   # full rank: same function
        >>> x = torch.randn(1, 4, 40)
        >>> bool(torch.allclose(lr(x), dense(x), atol=1e-5))
        True
    """

    conv_type, dims = nn.Conv1d, 1


class LowRankConv2d(_LowRankConv):
    """Conv2d factorised at ``rank``: ``first`` (k×k, ``in → rank``, no bias), then ``second`` (1×1, ``rank → out``).

    Example:
        >>> dense = nn.Conv2d(8, 16, 3, padding=1)
        >>> lr = LowRankConv2d.from_dense(dense, rank=16)   # full rank: same function
        >>> x = torch.randn(1, 8, 6, 6)
        >>> bool(torch.allclose(lr(x), dense(x), atol=1e-5))
        True
    """

    conv_type, dims = nn.Conv2d, 2


class LowRankLinear(nn.Module):
    """Linear factorised at ``rank``: ``first`` (``in → rank``, no bias), then ``second`` (``rank → out``).

    Example:
        >>> dense = nn.Linear(10, 6)
        >>> lr = LowRankLinear.from_dense(dense, rank=6)
        >>> x = torch.randn(3, 10)
        >>> bool(torch.allclose(lr(x), dense(x), atol=1e-5))
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int, weight_bits: int = 32) -> None:
        super().__init__()
        self.weight_bits = check_weight_bits(weight_bits)
        self.in_features, self.out_features = in_features, out_features
        self.rank = check_rank(rank, max_rank(out_features, in_features))
        self.first = nn.Linear(in_features, self.rank, bias=False)
        self.second = nn.Linear(self.rank, out_features, bias=bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """A factorised copy of ``linear`` initialised from its SVD."""
        lr = cls(linear.in_features, linear.out_features, linear.bias is not None, rank=rank)
        lr.load_dense(linear.weight, linear.bias)
        return lr

    @torch.no_grad()
    def load_dense(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set both factors from a dense ``(out, in)`` weight."""
        first, second = factorize_linear(weight, self.rank)
        self.first.weight.copy_(first)
        self.second.weight.copy_(second)
        if bias is not None and self.second.bias is not None:
            self.second.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, fake_quantize_weight(self.first.weight, self.weight_bits))
        return F.linear(h, fake_quantize_weight(self.second.weight, self.weight_bits), self.second.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, weight_bits={self.weight_bits}"


class MutableLowRankConv1d(ParametrizedModule, LowRankConv1d, wraps=LowRankConv1d):  # type: ignore[call-arg]
    """:class:`LowRankConv1d` whose ``rank`` (or any argument) may be an ``nni.choice``."""


class MutableLowRankConv2d(ParametrizedModule, LowRankConv2d, wraps=LowRankConv2d):  # type: ignore[call-arg]
    """:class:`LowRankConv2d` whose ``rank`` (or any argument) may be an ``nni.choice``."""


class MutableLowRankLinear(ParametrizedModule, LowRankLinear, wraps=LowRankLinear):  # type: ignore[call-arg]
    """:class:`LowRankLinear` whose ``rank`` (or any argument) may be an ``nni.choice``."""
