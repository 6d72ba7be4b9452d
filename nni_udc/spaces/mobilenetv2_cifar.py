"""A MobileNetV2 space for ``(3, 32, 32)`` images: inverted residual blocks, in NNI syntax with nni-udc's layers.

Stem (3×3 conv) → stages of inverted residual blocks (1×1 expand, BN, ReLU6, k×k depthwise, BN, ReLU6, 1×1
project, BN, + input when the shape is kept) → 1×1 conv → global mean → classifier.

Searchable: each stage's depth (NNI ``Repeat``, label ``depth{s}``, from 1 block); each block's operator
(``LayerChoice``, label ``op_{name}``) among ``e{E}k{K}`` (expansion ratio × depthwise kernel size) and ``sparse``,
DASS's sparse block (all three convs DASS :class:`~nni_udc.nn.MutableSparseConv2d`, sparsity ``sd_{name}``, at
the largest expansion and the smallest kernel); the weight bits of the pointwise convs (``b_{name}``) and of the
depthwise conv (``bdw_{name}``), and the sparsity of each (``s_{name}``, ``sdw_{name}``), each label shared by the
block's candidates; the 1×1 conv before the classifier has a bit-width per group of channels (labels
``last_g{i}``, 0 removes the group, and the classifier drops its inputs: the channel-wise mixed precision of
:class:`~nni_udc.strategies.ChannelMixedPrecision`). Widths are those of ``stages``: a depthwise conv's ``groups``
follows its width, and the one-shot mixed op (:mod:`nni_udc.strategies.supernet`) cannot search ``groups``.
``MobileNetV2CifarSpace(stem=32, stages=MOBILENETV2_STAGES, last_channels=1280)`` is MobileNetV2 for CIFAR
(stride 1 in the stem and the second stage).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
from torch import nn

from nni_udc.nn import (
    MutableQuantConv2d,
    MutableQuantLinear,
    MutableSparseConv2d,
    bits_choice,
    channel_bits_choice,
    sparsity_choice,
)

__all__ = ["MOBILENETV2_STAGES", "MobileNetV2CifarSpace"]

#: MobileNetV2's stages for 32×32 inputs: (channels, most blocks, stride of the first block)
MOBILENETV2_STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


def _conv_bn(conv: nn.Module, channels: int, relu: bool) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), *([nn.ReLU6()] if relu else []))


class _InvertedResidual(nn.Module):
    """expand → depthwise → project, added to the input when stride is 1 and the width is kept."""

    def __init__(self, expand: nn.Module, depthwise: nn.Module, project: nn.Module, hidden: int, cout: int,
                 residual: bool) -> None:
        super().__init__()
        self.expand = _conv_bn(expand, hidden, True)
        self.depthwise = _conv_bn(depthwise, hidden, True)
        self.project = _conv_bn(project, cout, False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class _Options:
    def __init__(self, expansions: Sequence[int], kernel_sizes: Sequence[int], weight_bits: Sequence[int],
                 sparsity: Sequence[float], dass_sparsity: Sequence[float], act_bits: int) -> None:
        self.expansions, self.kernel_sizes, self.weight_bits = expansions, kernel_sizes, weight_bits
        self.sparsity, self.dass_sparsity, self.act_bits = sparsity, dass_sparsity, act_bits

    def block(self, name: str, cin: int, cout: int, stride: int) -> LayerChoice:
        """Block ``name``: a ``LayerChoice`` of dense blocks (expansion × kernel) and DASS's sparse block."""
        bits, dw_bits = bits_choice(f"b_{name}", self.weight_bits), bits_choice(f"bdw_{name}", self.weight_bits)
        sparsity, dw_sparsity = sparsity_choice(f"s_{name}", self.sparsity), sparsity_choice(f"sdw_{name}", self.sparsity)
        quant: dict[str, Any] = dict(act_bits=self.act_bits, act_signed=False)  # every input follows a ReLU6 (or the stem)
        residual = stride == 1 and cin == cout
        candidates: dict[str, nn.Module] = {}
        for e in self.expansions:
            for k in self.kernel_sizes:
                hidden = cin * e
                candidates[f"e{e}k{k}"] = _InvertedResidual(
                    MutableQuantConv2d(cin, hidden, 1, bias=False, weight_bits=bits, sparsity=sparsity, **quant),
                    MutableQuantConv2d(hidden, hidden, k, stride=stride, padding=k // 2, groups=hidden, bias=False,
                                       weight_bits=dw_bits, sparsity=dw_sparsity, **quant),
                    MutableQuantConv2d(hidden, cout, 1, bias=False, weight_bits=bits, sparsity=sparsity, **quant),
                    hidden, cout, residual)
        hidden, k = cin * max(self.expansions), min(self.kernel_sizes)
        dass = sparsity_choice(f"sd_{name}", self.dass_sparsity)
        candidates["sparse"] = _InvertedResidual(
            MutableSparseConv2d(cin, hidden, 1, bias=False, sparsity=dass, weight_bits=bits),
            MutableSparseConv2d(hidden, hidden, k, stride=stride, padding=k // 2, groups=hidden, bias=False,
                                sparsity=dass, weight_bits=dw_bits),
            MutableSparseConv2d(hidden, cout, 1, bias=False, sparsity=dass, weight_bits=bits),
            hidden, cout, residual)
        return LayerChoice(candidates, label=f"op_{name}")


class MobileNetV2CifarSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """MobileNetV2 space for ``(3, 32, 32)`` inputs: stem → ``stages`` of inverted residuals → 1×1 conv → classifier.

    Args:
        stem: channels of the stem conv (stride 1).
        stages: per stage ``(channels, most blocks, stride of its first block)`` (labels ``depth{s}``, from 1).
        expansions: candidate expansion ratios of the dense blocks.
        kernel_sizes: candidate depthwise kernel sizes of the dense blocks (odd).
        weight_bits: candidate weight bit-widths of every conv and of the classifier.
        sparsity: candidate sparsity ratios of the dense blocks' convs (pointwise and depthwise labels apart).
        dass_sparsity: candidate sparsity ratios of DASS's sparse block.
        last_channels: channels of the 1×1 conv before the classifier.
        last_groups: groups of that conv's channels that take one bit-width each (labels ``last_g{i}``).
        channel_bits: candidate bit-widths of those groups (0 removes a group).
        act_bits: activation bits of the layers after a ReLU6 (fixed; 32 = float).
        num_classes: classifier outputs.

    Costs at the defaults (``exact_costs`` on the smallest and largest sample; checked in ``tests/test_zoo.py``):

    ============  ===========  =============
    sample        params       memory_bits
    ============  ===========  =============
    smallest      3 938        19 832
    largest       12 354       125 728
    ============  ===========  =============

    (smallest: one block per stage, every block the sparse one at the largest sparsity, 2 bits, one group of the
    last conv's channels kept; largest: most blocks, ``e{max}k{max}`` at 8 bits, no sparsity.)

    Example:
        >>> space = MobileNetV2CifarSpace()
        >>> labels = space.simplify()
        >>> labels['depth1'].values, labels['op_s1b0'].values
        ([1, 2], ['e2k3', 'e2k5', 'e4k3', 'e4k5', 'sparse'])
        >>> space.random()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, stem: int = 8, stages: Sequence[tuple[int, int, int]] = ((8, 1, 1), (12, 2, 2), (16, 2, 2)),
                 expansions: Sequence[int] = (2, 4), kernel_sizes: Sequence[int] = (3, 5),
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5),
                 dass_sparsity: Sequence[float] = (0.5, 0.75), last_channels: int = 32, last_groups: int = 4,
                 channel_bits: Sequence[int] = (0, 2, 4, 8), act_bits: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        if not kernel_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, but got {kernel_sizes!r}")
        if not expansions or any(not isinstance(e, int) or e < 1 for e in expansions):
            raise ValueError(f"expansions must be positive integers, but got {expansions!r}")
        if not stages or any(len(s) != 3 or min(s) < 1 or s[2] > 2 for s in stages):
            raise ValueError(f"stages must be (channels, most blocks, stride 1 or 2) triples, but got {stages!r}")
        if not isinstance(last_groups, int) or not 1 <= last_groups <= last_channels or last_channels % last_groups:
            raise ValueError(f"last_groups must divide last_channels ({last_channels}), but got {last_groups!r}")
        options = _Options(expansions, kernel_sizes, weight_bits, sparsity, dass_sparsity, act_bits)
        # the image itself is not quantised: the stem keeps float inputs
        self.stem = _conv_bn(MutableQuantConv2d(3, stem, 3, padding=1, bias=False,
                                                weight_bits=bits_choice("b_stem", weight_bits)), stem, True)
        blocks, cin = [], stem
        for s, (cout, most, stride) in enumerate(stages):
            blocks.append(Repeat(
                lambda i, s=s, cin=cin, cout=cout, stride=stride: options.block(
                    f"s{s}b{i}", cin if i == 0 else cout, cout, stride if i == 0 else 1),
                (1, most), label=f"depth{s}"))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        kept = channel_bits_choice("last", last_channels, channel_bits, group_size=last_channels // last_groups)
        self.last = _conv_bn(MutableQuantConv2d(cin, last_channels, 1, bias=False, act_bits=act_bits, act_signed=False,
                                                weight_bits=kept), last_channels, True)
        self.head = MutableQuantLinear(last_channels, num_classes, weight_bits=bits_choice("b_head", weight_bits),
                                       act_bits=act_bits, act_signed=False, in_channel_bits=kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))).mean((2, 3)))
