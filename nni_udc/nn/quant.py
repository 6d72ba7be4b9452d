"""Quantised, optionally sparse Conv1d, Conv2d and Linear layers.

The plain classes (``QuantConv1d``, ``QuantConv2d``, ``QuantLinear``) are what a frozen model holds. Their NNI twins
(``MutableQuantConv1d``, ``MutableQuantConv2d``, ``MutableQuantLinear``) accept an ``nni.choice`` for any argument and freeze
back into the plain class.

Forward pass: input activations are fake-quantised to ``act_bits`` with a learnable PACT clip; weights
are magnitude-pruned to ``sparsity`` and then fake-quantised to ``weight_bits`` (one value, or one per
output channel where 0 removes the channel).

A removed channel also shrinks the *next* layer: give that layer ``in_channel_bits``, the per-channel bits
of the layer that feeds it (in a model space, the same ``channel_bits_choice`` list, so the decision is
tied). Its weights on removed input channels are masked out and its cost counts only the kept inputs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ParametrizedModule
from torch import nn

from nni_udc.functional import fake_quantize_activation, fake_quantize_weight, magnitude_mask
from nni_udc.nn._checks import check_act_bits, check_channel_bits, check_sparsity

__all__ = ["ActivationQuantizer", "MutableQuantConv1d", "MutableQuantConv2d", "MutableQuantLinear", "QuantConv1d", "QuantConv2d",
           "QuantLinear"]


class ActivationQuantizer(nn.Module):
    """PACT activation fake-quantiser with a learnable clipping range that always stays positive.

    The clip starts at the largest magnitude of the first *training* batch it sees (or at ``init_clip`` when it
    is given; an evaluation pass before training uses its own batch's range and fixes nothing), then learns as
    ``clip = exp(log_clip)``: an optimiser step changes it by a factor, never through zero. (A plain clip
    parameter, moved by Adam's fixed-size steps, was driven to ``<= 0`` in 8 of 32 uniform trainings, and every
    activation then quantised to 0.)
    ``bits=32`` is the identity.

    Example:
        >>> q = ActivationQuantizer(4, signed=False)
        >>> y = q(torch.rand(8, 3))
        >>> len(torch.unique(y)) <= 16
        True
        >>> with torch.no_grad():
        ...     _ = q.log_clip.fill_(-1e4)      # whatever an optimiser does to it
        >>> float(q.clip) > 0
        True
    """

    #: the smallest clip: keeps the quantisation step representable in float32
    MIN_CLIP = 1e-6

    def __init__(self, bits: int = 32, *, signed: bool = True, init_clip: float | None = None) -> None:
        super().__init__()
        self.bits = check_act_bits(bits)
        self.signed = signed
        if init_clip is not None and not init_clip > 0:
            raise ValueError(f"init_clip must be a positive number, but got {init_clip!r}")
        self.log_clip = nn.Parameter(torch.tensor(math.log(init_clip) if init_clip else 0.0))
        self.register_buffer("initialized", torch.tensor(init_clip is not None))

    @property
    def clip(self) -> torch.Tensor:
        """The clipping range (positive, with gradient to ``log_clip``)."""
        return self.log_clip.exp().clamp_min(self.MIN_CLIP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= 32:
            return x
        if not bool(self.initialized):
            first = x.detach().abs().max().clamp_min(1e-3)
            if not self.training:  # an evaluation pass (a cost probe on zeros) must not fix the clip for training
                return fake_quantize_activation(x, self.bits, first, signed=self.signed)
            with torch.no_grad():
                self.log_clip.fill_(math.log(float(first)))
                self.initialized.fill_(True)  # type: ignore[operator]
        return fake_quantize_activation(x, self.bits, self.clip, signed=self.signed)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class _Compressed(nn.Module):
    """Shared behaviour of the quantised layers: the weight actually used in the forward pass."""

    weight: torch.Tensor
    input_mask: torch.Tensor
    weight_bits: int | list[int]
    sparsity: float

    def _setup_compression(self, in_channels: int, out_channels: int, weight_bits, act_bits: int, sparsity: float,
                           act_signed: bool, in_channel_bits) -> None:
        if isinstance(weight_bits, Sequence):
            weight_bits = list(weight_bits)
        self.weight_bits = check_channel_bits(weight_bits, out_channels)
        self.sparsity = check_sparsity(sparsity)
        self.act_bits = check_act_bits(act_bits)
        self.act_quant = ActivationQuantizer(self.act_bits, signed=act_signed)
        self.in_channel_bits = None
        if in_channel_bits is not None:
            groups = getattr(self, "groups", 1)
            if groups != 1:
                raise ValueError(f"in_channel_bits needs groups=1, but got groups={groups}")
            bits = check_channel_bits(list(in_channel_bits), in_channels, field="in_channel_bits")
            self.in_channel_bits = bits
            self.register_buffer("input_mask", torch.tensor([float(b > 0) for b in bits]),  # type: ignore[union-attr]
                                 persistent=False)

    def compressed_weight(self) -> torch.Tensor:
        """The pruned, fake-quantised weight (what the hardware would store)."""
        w = self.weight
        if self.in_channel_bits is None:
            if self.sparsity > 0:
                w = w * magnitude_mask(w, self.sparsity)
            return fake_quantize_weight(w, self.weight_bits)
        # Inputs removed upstream are never stored; the sparsity applies to the weights that remain.
        kept = self.input_mask.bool()
        mask = torch.zeros_like(w)
        mask[:, kept] = magnitude_mask(w[:, kept], self.sparsity) if self.sparsity > 0 else 1.0
        return fake_quantize_weight(w * mask, self.weight_bits)

    def compressed_bias(self) -> torch.Tensor | None:
        """The bias used: zero on removed (0-bit) output channels, which store nothing, so that the layer, its
        cost and its exported file agree (a removed channel outputs exactly 0)."""
        bias: torch.Tensor | None = getattr(self, "bias", None)
        if bias is None or not isinstance(self.weight_bits, list) or all(b > 0 for b in self.weight_bits):
            return bias
        return bias * torch.tensor([float(b > 0) for b in self.weight_bits], dtype=bias.dtype, device=bias.device)

    def _compression_repr(self) -> str:
        kept_inputs = "" if self.in_channel_bits is None else f", kept_inputs={int(self.input_mask.sum())}"
        return f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, sparsity={self.sparsity}{kept_inputs}"


class _QuantConv(_Compressed):
    """The quantised conv of any dimension: ``nn.Conv1d``/``nn.Conv2d``'s arguments plus the compression ones.

    Mixed in before the torch conv class (``QuantConv2d(_QuantConv, nn.Conv2d)``), so one ``__init__`` and one
    ``forward`` serve every dimension (torch's ``_conv_forward`` picks the right convolution).
    """

    _conv_forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    bias: torch.Tensor | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 weight_bits: int | Sequence[int] = 8, act_bits: int = 32, sparsity: float = 0.0,
                 act_signed: bool = True, in_channel_bits: Sequence[int] | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)
        self._setup_compression(in_channels, out_channels, weight_bits, act_bits, sparsity, act_signed, in_channel_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), self.compressed_weight(), self.compressed_bias())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._compression_repr()}"


class QuantConv1d(_QuantConv, nn.Conv1d):
    """``nn.Conv1d`` with weight bits (per layer or per output channel), activation bits and sparsity.

    Example:
        >>> conv = QuantConv1d(1, 8, 5, padding=2, weight_bits=[4] * 6 + [0, 0], act_bits=8, sparsity=0.5)
        >>> y = conv(torch.randn(2, 1, 40))
        >>> y.shape, bool((y[:, 6:] == 0).all())   # channels 6 and 7 removed: they output nothing
        (torch.Size([2, 8, 40]), True)
    """


class QuantConv2d(_QuantConv, nn.Conv2d):
    """``nn.Conv2d`` with weight bits (per layer or per output channel), activation bits and sparsity.

    Example:
        >>> conv = QuantConv2d(3, 8, 3, padding=1, weight_bits=4, act_bits=8, sparsity=0.5)
        >>> conv(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 8, 8, 8])
    """


class QuantLinear(_Compressed, nn.Linear):
    """``nn.Linear`` with weight bits (per layer or per output feature), activation bits and sparsity.

    Example:
        >>> fc = QuantLinear(16, 4, weight_bits=[8, 4, 0, 2])
        >>> fc(torch.randn(2, 16))[:, 2].abs().max().item()   # output 2 removed: no weights, no bias
        0.0
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_bits: int | Sequence[int] = 8, act_bits: int = 32, sparsity: float = 0.0,
                 act_signed: bool = True, in_channel_bits: Sequence[int] | None = None) -> None:
        super().__init__(in_features, out_features, bias)
        self._setup_compression(in_features, out_features, weight_bits, act_bits, sparsity, act_signed, in_channel_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.compressed_weight(), self.compressed_bias())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._compression_repr()}"


class MutableQuantConv1d(ParametrizedModule, QuantConv1d, wraps=QuantConv1d):  # type: ignore[call-arg]
    """:class:`QuantConv1d` whose arguments may be ``nni.choice``; ``freeze()`` returns a plain ``QuantConv1d``."""


class MutableQuantConv2d(ParametrizedModule, QuantConv2d, wraps=QuantConv2d):  # type: ignore[call-arg]
    """:class:`QuantConv2d` whose arguments may be ``nni.choice``; ``freeze()`` returns a plain ``QuantConv2d``.

    Example:
        >>> import nni
        >>> from nni.nas.nn.pytorch import ModelSpace
        >>> class Net(ModelSpace, label_prefix=None):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = MutableQuantConv2d(3, 8, 3, weight_bits=nni.choice('b', [2, 4, 8]))
        >>> conv = Net().freeze({'b': 4}).conv
        >>> type(conv).__name__, conv.weight_bits
        ('QuantConv2d', 4)
    """


class MutableQuantLinear(ParametrizedModule, QuantLinear, wraps=QuantLinear):  # type: ignore[call-arg]
    """:class:`QuantLinear` whose arguments may be ``nni.choice``; ``freeze()`` returns a plain ``QuantLinear``."""
