"""A 1-D CNN space for MNIST-1D's ``(1, 40)`` sequences, built from nni-udc's compressible 1-D layers.

Searchable: the width (one choice for every layer, with NNI's ``MutableBatchNorm1d`` following it), the depth
(NNI ``Repeat``: how many blocks follow the strided conv), each block's operator (``LayerChoice`` of quantised
convs, one per kernel size, a low-rank conv and a DASS sparse conv), and the weight bits, sparsity and rank of
every layer; the classifier removes output channels in groups (per-channel bits, 0 = removed).
Each block's bit-width is one label shared by its candidates, as in :class:`~nni_udc.spaces.DigitsSpace`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm1d, Repeat
from torch import nn

from nni_udc.nn import (
    MutableLowRankConv1d,
    MutableQuantConv1d,
    MutableQuantLinear,
    MutableSparseConv1d,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)

__all__ = ["Mnist1dSpace"]


def _block(index: int, width: Any, kernel_sizes: Sequence[int], ranks: list[int], max_rank: int,
           weight_bits: Sequence[int], sparsity: Sequence[float], quant: dict[str, Any]) -> nn.Sequential:
    """Block ``index`` of the ``Repeat``: a chosen operator (lengths kept: 'same' padding), BatchNorm, ReLU."""
    bits = bits_choice(f"b_block{index}", weight_bits)  # one label for every candidate: each op is quantised
    ops: dict[str, nn.Module] = {
        f"conv{k}": MutableQuantConv1d(width, width, k, padding=k // 2, weight_bits=bits,
                                       sparsity=sparsity_choice(f"s_block{index}_k{k}", sparsity), **quant)
        for k in kernel_sizes}
    k = max(kernel_sizes)
    ops["lowrank"] = MutableLowRankConv1d(width, width, k, padding=k // 2, weight_bits=bits,
                                          rank=rank_choice(f"rank{index}", ranks, max_rank=max_rank))
    ops["sparse"] = MutableSparseConv1d(width, width, k, padding=k // 2, weight_bits=bits,
                                        sparsity=sparsity_choice(f"s_dass{index}", [0.5, 0.75]))
    return nn.Sequential(LayerChoice(ops, label=f"op{index}"), MutableBatchNorm1d(width), nn.ReLU())


class Mnist1dSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """1-D CNN space for ``(1, 40)`` inputs: stem → strided conv → 1..``max_depth`` blocks → mean → classifier.

    Args:
        widths: candidate widths (channels of every conv; one label, ``width``).
        kernel_sizes: kernel sizes of the blocks' quantised conv candidates (odd: lengths are kept); the low-rank
            and sparse candidates take the largest.
        max_depth: most blocks after the strided conv (label ``depth``, from 1).
        weight_bits: candidate weight bit-widths of the convs.
        sparsity: candidate sparsity ratios of the quantised convs.
        head_bits: candidate per-channel bits of the classifier (0 removes a class logit's weights).
        act_bits: activation bits of the layers after a ReLU (fixed; 32 = float).
        num_classes: classifier outputs.

    Example:
        >>> space = Mnist1dSpace()
        >>> labels = space.simplify()
        >>> labels['depth'].values, labels['op0'].values
        ([1, 2, 3], ['conv3', 'conv5', 'lowrank', 'sparse'])
        >>> model = space.random()
        >>> model(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(self, widths: Sequence[int] = (16, 32), kernel_sizes: Sequence[int] = (3, 5), max_depth: int = 3,
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5),
                 head_bits: Sequence[int] = (4, 8), act_bits: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        if not kernel_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers (lengths are kept), but got {kernel_sizes!r}")
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, but got {max_depth!r}")
        width = nni.choice("width", list(widths))
        ranks = [r for r in (2, 4, 8) if r <= min(widths)]
        quant: dict[str, Any] = dict(act_bits=act_bits, act_signed=False)  # inputs of these layers follow a ReLU
        # The sequence itself is not quantised (standardised floats): the stem keeps float inputs.
        self.stem = nn.Sequential(
            MutableQuantConv1d(1, width, 5, padding=2, weight_bits=bits_choice("b_stem", weight_bits)),
            MutableBatchNorm1d(width), nn.ReLU())
        self.down = nn.Sequential(
            MutableQuantConv1d(width, width, 3, stride=2, padding=1, weight_bits=bits_choice("b_down", weight_bits),
                               sparsity=sparsity_choice("s_down", sparsity), **quant),
            MutableBatchNorm1d(width), nn.ReLU())
        self.blocks = Repeat(lambda i: _block(i, width, kernel_sizes, ranks, min(widths), weight_bits, sparsity, quant),
                             (1, max_depth), label="depth")
        self.head = MutableQuantLinear(width, num_classes, **quant,
                                       weight_bits=channel_bits_choice("head", num_classes, head_bits, group_size=5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.down(self.stem(x)))
        return self.head(x.mean(-1))
