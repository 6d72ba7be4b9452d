"""A small CNN space for 8×8 images (scikit-learn's digits) that mixes NNI's mutables with ours.

Searchable: stem width (``MutableConv2d``), block operator (``LayerChoice`` of a quantised/sparse conv,
a low-rank conv or a DASS sparse conv), weight bits and sparsity of each quantised layer, per-channel
bits of the strided conv (0 bits removes a group of its channels, and the classifier's inputs with them) and
of the classifier. The block's bit-width is one label shared by its three candidates, so every candidate op
is quantised and the bits learn whichever op the search favours.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm2d, MutableConv2d
from torch import nn

from nni_udc.nn import (
    MutableLowRankConv2d,
    MutableQuantConv2d,
    MutableQuantLinear,
    MutableSparseConv2d,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)

__all__ = ["DigitsSpace"]


class DigitsSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """CNN space for ``(1, 8, 8)`` inputs: stem → searchable block → strided quantised conv → classifier.

    Args:
        widths: candidate stem widths (channels of the first two stages).
        weight_bits: candidate weight bit-widths of the quantised convs.
        sparsity: candidate sparsity ratios of the quantised convs.
        head_bits: candidate per-channel bits of the classifier (0 removes a class logit's weights).
        act_bits: activation bits of the quantised layers (fixed; 32 = float).
        num_classes: classifier outputs.
        stem_bits: candidate weight bit-widths of the stem conv (its own label ``b_stem``: first layers are
            the most sensitive to quantisation and among the smallest, so a mixed choice pays off there);
            ``None`` keeps the stem float, as the first release did.
        down_groups: the strided conv's 32 output channels are decided in this many groups (labels
            ``down_g0``…), each at one of ``weight_bits`` or 0 bits (removed, together with the classifier's weights
            on those channels: Risso et al.'s channel-wise precision, where a pruned channel is a 0-bit channel).
            ``None`` (default): one bit-width label ``b_down`` for the whole layer. Removing channels is what
            uniform compression cannot do (its grid keeps every channel: the grid of ``down_groups=4`` is the
            default space's grid). Trained alone (16 epochs, seeds 0-2, BatchNorm re-estimated), width 8 with a
            4-bit block and half of these channels removed reaches 0.963 mean test accuracy in 9,856 bits (0.968 in
            10,144 with an 8-bit stem); with the other half at 2 bits instead, 0.974 in 13,568; the uniform 4-bit
            model with all of them, 0.979 in 15,872.

    Example:
        >>> space = DigitsSpace()
        >>> sorted(space.simplify())[:4]
        ['b_block', 'b_down', 'b_stem', 'head_g0']
        >>> model = space.random()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, widths: Sequence[int] = (8, 16, 24), weight_bits: Sequence[int] = (2, 4, 8),
                 sparsity: Sequence[float] = (0.0, 0.5, 0.75), head_bits: Sequence[int] = (4, 8),
                 act_bits: int = 8, num_classes: int = 10, stem_bits: Sequence[int] | None = (2, 4, 8),
                 down_groups: int | None = None) -> None:
        super().__init__()
        width = nni.choice("width", list(widths))
        rank = rank_choice("rank", [r for r in (2, 4, 8) if r <= min(widths)], max_rank=min(widths))
        quant: dict[str, Any] = dict(act_bits=act_bits, act_signed=False)  # inputs of these layers follow a ReLU
        stem = (MutableConv2d(1, width, 3, padding=1) if stem_bits is None else  # the image itself is not quantised
                MutableQuantConv2d(1, width, 3, padding=1, weight_bits=bits_choice("b_stem", stem_bits)))
        self.stem = nn.Sequential(stem, MutableBatchNorm2d(width), nn.ReLU())
        block_bits = bits_choice("b_block", weight_bits)  # one label for every candidate: each op is quantised
        self.block = LayerChoice({
            "conv": MutableQuantConv2d(width, width, 3, padding=1, weight_bits=block_bits,
                                       sparsity=sparsity_choice("s_block", sparsity), **quant),
            "lowrank": MutableLowRankConv2d(width, width, 3, padding=1, rank=rank, weight_bits=block_bits),
            "sparse": MutableSparseConv2d(width, width, 3, padding=1, sparsity=sparsity_choice("s_dass", [0.5, 0.75]),
                                          weight_bits=block_bits),
        }, label="op")
        self.block_act = nn.Sequential(MutableBatchNorm2d(width), nn.ReLU())
        if down_groups is None:
            down_bits: Any = bits_choice("b_down", weight_bits)
            kept = None
        else:
            if not isinstance(down_groups, int) or isinstance(down_groups, bool) or down_groups < 1 or 32 % down_groups:
                raise ValueError(f"down_groups must divide the strided conv's 32 channels (1, 2, 4, 8, 16 or 32) or be "
                                 f"None, but got {down_groups!r}")
            down_bits = kept = channel_bits_choice("down", 32, [0, *weight_bits], group_size=32 // down_groups)
        self.down = MutableQuantConv2d(width, 32, 3, stride=2, padding=1, weight_bits=down_bits,
                                       sparsity=sparsity_choice("s_down", sparsity), **quant)
        self.down_act = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU())
        self.head = MutableQuantLinear(32, num_classes, weight_bits=channel_bits_choice("head", num_classes, head_bits, group_size=5),
                                       in_channel_bits=kept, **quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_act(self.block(self.stem(x)))
        x = self.down_act(self.down(x))
        return self.head(x.mean((2, 3)))
