"""A VGG-style space for ``(3, 32, 32)`` images (the VGG-16 of HALOC's CIFAR experiments at paper scale).

A plain stack of 3×3 conv → BN → ReLU layers with 2×2 max pools between blocks (``config``: channel counts and
``"M"`` for a pool, as torchvision's VGG configurations read) → global mean → classifier.

Searchable, per layer (the HALOC space): every conv after the first is a ``LayerChoice`` (label ``op{i}``) of a
quantised conv (weight bits ``b{i}``, sparsity ``s{i}``) and a low-rank conv (rank ``r{i}``, same bits label); the
first conv and the classifier search their bits. Widths are those of ``config``: HALOC searches ranks, not widths.
``VggCifarSpace(config=VGG16)`` is VGG-16's conv stack.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from nni_udc.nn import (
    MutableLowRankConv2d,
    MutableQuantConv2d,
    MutableQuantLinear,
    bits_choice,
    rank_choice,
    sparsity_choice,
)

__all__ = ["VGG16", "VggCifarSpace"]

#: VGG-16's conv stack (channels; "M" is a 2×2 max pool)
VGG16: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VggCifarSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """VGG space for ``(3, 32, 32)`` inputs: ``config``'s conv stack, searching each layer's op, bits, sparsity, rank.

    Args:
        config: channel counts of the 3×3 convs and ``"M"`` for a 2×2 max pool (at most five pools on 32×32).
        weight_bits: candidate weight bit-widths of every layer.
        sparsity: candidate sparsity ratios of the quantised convs.
        rank_fractions: candidate ranks of a low-rank conv as fractions of its output channels (rounded, at least 1).
        act_bits: activation bits of the layers after a ReLU (fixed; 32 = float).
        num_classes: classifier outputs.

    Costs at the defaults (``exact_costs`` on the smallest and largest sample; checked in ``tests/test_zoo.py``):

    ============  ===========  =============
    sample        params       memory_bits
    ============  ===========  =============
    smallest      2 306        7 952
    largest       6 306        53 536
    ============  ===========  =============

    (smallest: low-rank convs at the smallest rank, 2 bits; largest: dense convs at 8 bits, no sparsity.)

    Example:
        >>> space = VggCifarSpace()
        >>> labels = space.simplify()
        >>> labels['op1'].values, labels['r1'].values
        (['conv', 'lowrank'], [4, 8])
        >>> space.random()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: Sequence[int | str] = (8, "M", 16, "M", 32, "M"), weight_bits: Sequence[int] = (2, 4, 8),
                 sparsity: Sequence[float] = (0.0, 0.5), rank_fractions: Sequence[float] = (0.25, 0.5),
                 act_bits: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        convs = [c for c in config if c != "M"]
        if not convs or any(not (c == "M" or (isinstance(c, int) and c > 0)) for c in config):
            raise ValueError(f"config must list positive channel counts and 'M' (a max pool), but got {config!r}")
        if list(config).count("M") > 5:
            raise ValueError(f"config has {list(config).count('M')} max pools; 32×32 inputs take at most 5")
        if not rank_fractions or any(not 0 < f <= 1 for f in rank_fractions):
            raise ValueError(f"rank_fractions must be fractions in (0, 1], but got {rank_fractions!r}")
        layers: list[nn.Module] = []
        cin, index = 3, 0
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            cout = int(item)
            bits = bits_choice(f"b{index}", weight_bits)
            if index == 0:  # the image itself is not quantised, and 27 inputs leave little rank to search
                conv: nn.Module = MutableQuantConv2d(cin, cout, 3, padding=1, bias=False, weight_bits=bits)
            else:
                ranks = sorted({max(1, round(f * cout)) for f in rank_fractions})
                conv = LayerChoice({
                    "conv": MutableQuantConv2d(cin, cout, 3, padding=1, bias=False, weight_bits=bits,
                                               sparsity=sparsity_choice(f"s{index}", sparsity), act_bits=act_bits,
                                               act_signed=False),
                    "lowrank": MutableLowRankConv2d(cin, cout, 3, padding=1, bias=False, weight_bits=bits,
                                                    rank=rank_choice(f"r{index}", ranks, max_rank=cout)),
                }, label=f"op{index}")
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU()]
            cin, index = cout, index + 1
        self.features = nn.Sequential(*layers)
        self.head = MutableQuantLinear(cin, num_classes, weight_bits=bits_choice("b_head", weight_bits),
                                       act_bits=act_bits, act_signed=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))
