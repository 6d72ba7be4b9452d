"""A DS-CNN space for keyword spotting (MLPerf Tiny): ``(1, 49, 10)`` MFCC frames, depthwise-separable blocks.

Stem (10×4 conv, stride 2, BN, ReLU) → depthwise-separable blocks (3×3 depthwise, BN, ReLU, 1×1 pointwise, BN,
ReLU) → global mean → classifier (12 classes: MLPerf Tiny's ten keywords, silence and unknown).

Searchable: the number of blocks (NNI ``Repeat``, label ``depth``, from 1), each depthwise conv's bits and sparsity
(``b_dw{i}``, ``s_dw{i}``), each pointwise conv's bits and sparsity (``b_pw{i}``, ``s_pw{i}``), the stem's and the
classifier's bits. The width is an argument, not a choice: a depthwise conv's ``groups`` follows its width, and
the one-shot mixed op (:mod:`nni_udc.strategies.supernet`) cannot search ``groups``.
``DsCnnSpace(width=64, max_depth=4)`` is MLPerf Tiny's DS-CNN.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from nni.nas.nn.pytorch import ModelSpace, Repeat
from torch import nn

from nni_udc.nn import MutableQuantConv2d, MutableQuantLinear, bits_choice, sparsity_choice

__all__ = ["DsCnnSpace"]


def _block(index: int, width: int, weight_bits: Sequence[int], sparsity: Sequence[float],
           act_bits: int) -> nn.Sequential:
    """Block ``index`` of the ``Repeat``: depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU."""
    quant: dict[str, Any] = dict(act_bits=act_bits, act_signed=False)  # every input follows a ReLU
    return nn.Sequential(
        MutableQuantConv2d(width, width, 3, padding=1, groups=width, bias=False,
                           weight_bits=bits_choice(f"b_dw{index}", weight_bits),
                           sparsity=sparsity_choice(f"s_dw{index}", sparsity), **quant),
        nn.BatchNorm2d(width), nn.ReLU(),
        MutableQuantConv2d(width, width, 1, bias=False, weight_bits=bits_choice(f"b_pw{index}", weight_bits),
                           sparsity=sparsity_choice(f"s_pw{index}", sparsity), **quant),
        nn.BatchNorm2d(width), nn.ReLU())


class DsCnnSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """DS-CNN space for ``(1, 49, 10)`` MFCC inputs: stem → 1..``max_depth`` separable blocks → classifier.

    Args:
        width: channels of the stem and of every block.
        max_depth: most blocks (label ``depth``, from 1).
        weight_bits: candidate weight bit-widths of every layer.
        sparsity: candidate sparsity ratios of the depthwise and pointwise convs.
        act_bits: activation bits of the layers after a ReLU (fixed; 32 = float).
        num_classes: classifier outputs.

    Costs at the defaults (``exact_costs`` on the smallest and largest sample; checked in ``tests/test_zoo.py``):

    ============  ===========  =============
    sample        params       memory_bits
    ============  ===========  =============
    smallest      1 244        5 344
    largest       2 044        22 208
    ============  ===========  =============

    (smallest: one block, 2 bits, sparsest; largest: most blocks, 8 bits, dense.)

    Example:
        >>> space = DsCnnSpace()
        >>> labels = space.simplify()
        >>> labels['depth'].values, labels['s_pw0'].values
        ([1, 2, 3], [0.0, 0.5])
        >>> space.random()(torch.zeros(2, 1, 49, 10)).shape
        torch.Size([2, 12])
    """

    def __init__(self, width: int = 16, max_depth: int = 3,
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5),
                 act_bits: int = 8, num_classes: int = 12) -> None:
        super().__init__()
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, but got {max_depth!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, but got {width!r}")
        # MFCCs are not quantised: the stem keeps float inputs; 10×4 kernel, stride 2 as in MLPerf Tiny's DS-CNN
        self.stem = nn.Sequential(
            MutableQuantConv2d(1, width, (10, 4), stride=2, padding=(5, 1), bias=False,
                               weight_bits=bits_choice("b_stem", weight_bits)),
            nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = Repeat(lambda i: _block(i, width, weight_bits, sparsity, act_bits),
                             (1, max_depth), label="depth")
        self.head = MutableQuantLinear(width, num_classes, weight_bits=bits_choice("b_head", weight_bits),
                                       act_bits=act_bits, act_signed=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))
