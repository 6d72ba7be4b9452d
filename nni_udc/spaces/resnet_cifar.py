"""A CIFAR ResNet space (the ResNet-8/20 family) for ``(3, 32, 32)`` images, in NNI syntax with nni-udc's layers.

Stem (3×3 conv) → three stages of basic blocks (3×3 conv, BN, ReLU, 3×3 conv, BN, + shortcut, ReLU); the first block
of stages 2 and 3 halves the resolution and its shortcut is a 1×1 conv (the first block of stage 1 has one only when
the stage is wider than the stem) → global mean → classifier.

Searchable: each stage's width (label ``width{s}``) and depth (NNI ``Repeat``, label ``depth{s}``, from 1 block);
every 3×3 conv of a block is a ``LayerChoice`` (label ``op_{name}``) of a quantised conv (weight bits ``b_{name}``,
sparsity ``s_{name}``) and a low-rank conv (rank ``r_{name}``; the bits label is shared by both candidates, so
the bits learn whichever op the search favours); the stem, shortcuts and classifier search their weight bits.
MLPerf Tiny's ResNet-8 is the sample with widths (16, 32, 64) and one block per stage, HALOC's ResNet-20 (with
1×1-conv shortcuts) the one with three blocks per stage: ``ResNetCifarSpace(widths=RESNET20_WIDTHS, max_depth=3)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm2d, Repeat
from torch import nn

from nni_udc.nn import (
    MutableLowRankConv2d,
    MutableQuantConv2d,
    MutableQuantLinear,
    bits_choice,
    rank_choice,
    sparsity_choice,
)

__all__ = ["RESNET20_WIDTHS", "ResNetCifarSpace"]

#: the widths of ResNet-8/20 (one candidate per stage)
RESNET20_WIDTHS: tuple[tuple[int, ...], ...] = ((16,), (32,), (64,))


class _Options:
    """The candidate lists every conv of the space draws its labels from."""

    def __init__(self, weight_bits: Sequence[int], sparsity: Sequence[float], ranks: Sequence[int],
                 act_bits: int) -> None:
        self.weight_bits, self.sparsity, self.ranks, self.act_bits = weight_bits, sparsity, ranks, act_bits

    def conv(self, name: str, cin: Any, cout: Any, stride: int, min_width: int) -> LayerChoice:
        """A 3×3 conv: quantised (bits, sparsity) or low-rank (rank, the same bits label)."""
        bits = bits_choice(f"b_{name}", self.weight_bits)
        ranks = [r for r in self.ranks if r <= min_width]
        return LayerChoice({
            "conv": MutableQuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, weight_bits=bits,
                                       sparsity=sparsity_choice(f"s_{name}", self.sparsity),
                                       act_bits=self.act_bits, act_signed=False),
            "lowrank": MutableLowRankConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, weight_bits=bits,
                                            rank=rank_choice(f"r_{name}", ranks, max_rank=min_width)),
        }, label=f"op_{name}")


class _BasicBlock(nn.Module):
    """conv → BN → ReLU → conv → BN, plus the shortcut (a 1×1 quantised conv when the shape changes), ReLU."""

    def __init__(self, name: str, cin: Any, cout: Any, stride: int, projection: bool, min_width: int,
                 options: _Options) -> None:
        super().__init__()
        self.conv1 = options.conv(f"{name}c1", cin, cout, stride, min_width)
        self.bn1 = MutableBatchNorm2d(cout)
        self.conv2 = options.conv(f"{name}c2", cout, cout, 1, min_width)
        self.bn2 = MutableBatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if projection:
            self.shortcut = nn.Sequential(
                MutableQuantConv2d(cin, cout, 1, stride=stride, bias=False, act_bits=options.act_bits, act_signed=False,
                                   weight_bits=bits_choice(f"b_{name}sc", options.weight_bits)),
                MutableBatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ResNetCifarSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """ResNet space for ``(3, 32, 32)`` inputs: stem → 3 stages of 1..``max_depth`` basic blocks → classifier.

    Args:
        widths: candidate widths of each of the three stages (the stem takes stage 1's).
        max_depth: most blocks per stage (labels ``depth0..2``, from 1).
        weight_bits: candidate weight bit-widths of every conv and of the classifier.
        sparsity: candidate sparsity ratios of the quantised 3×3 convs.
        ranks: candidate ranks of the low-rank 3×3 convs (those above a stage's smallest width are dropped).
        act_bits: activation bits of the layers after a ReLU (fixed; 32 = float).
        num_classes: classifier outputs.

    Costs at the defaults (``exact_costs`` on the smallest and largest sample; checked in ``tests/test_zoo.py``):

    ============  ===========  =============
    sample        params       memory_bits
    ============  ===========  =============
    smallest      1 342        7 368
    largest       43 810       364 320
    ============  ===========  =============

    (smallest: narrowest stages, one block each, low-rank at the smallest rank, 2 bits; largest: widest stages,
    two blocks each, dense convs at 8 bits, no sparsity.)

    Example:
        >>> space = ResNetCifarSpace()
        >>> labels = space.simplify()
        >>> labels['depth0'].values, labels['width2'].values, labels['op_s0b0c1'].values
        ([1, 2], [16, 32], ['conv', 'lowrank'])
        >>> model = space.random()
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, widths: Sequence[Sequence[int]] = ((4, 8), (8, 16), (16, 32)), max_depth: int = 2,
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5),
                 ranks: Sequence[int] = (2, 4), act_bits: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        if len(widths) != 3 or any(not w or any(not isinstance(c, int) or c < 1 for c in w) for w in widths):
            raise ValueError(f"widths must be three non-empty lists of positive channel counts, but got {widths!r}")
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, but got {max_depth!r}")
        if not ranks or min(ranks) > min(min(w) for w in widths):
            raise ValueError(f"ranks must hold a rank no larger than the narrowest width {min(min(w) for w in widths)},"
                             f" but got {ranks!r}")
        options = _Options(weight_bits, sparsity, ranks, act_bits)
        stage_widths = [nni.choice(f"width{s}", list(w)) for s, w in enumerate(widths)]
        # the image itself is not quantised: the stem keeps float inputs
        self.stem = nn.Sequential(
            MutableQuantConv2d(3, stage_widths[0], 3, padding=1, bias=False,
                               weight_bits=bits_choice("b_stem", weight_bits)),
            MutableBatchNorm2d(stage_widths[0]), nn.ReLU())
        stages = []
        for s, width in enumerate(stage_widths):
            cin, stride, smallest = (stage_widths[s - 1] if s else width), (2 if s else 1), min(widths[s])
            stages.append(Repeat(
                lambda i, s=s, cin=cin, width=width, stride=stride, smallest=smallest: _BasicBlock(
                    f"s{s}b{i}", cin if i == 0 else width, width, stride if i == 0 else 1, i == 0 and s > 0,
                    smallest, options),
                (1, max_depth), label=f"depth{s}"))
        self.stages = nn.Sequential(*stages)
        self.head = MutableQuantLinear(stage_widths[2], num_classes, weight_bits=bits_choice("b_head", weight_bits),
                                       act_bits=act_bits, act_signed=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))
