"""A small EDSR-style super-resolution space: ``(3, H, W)`` → ``(3, sH, sW)`` with a pixel shuffle.

Head (3×3 conv to ``width``) → residual blocks (3×3 conv, ReLU, 3×3 conv, scaled by ``res_scale``, + input) → 3×3
conv, + the head's output (EDSR's global skip) → 3×3 conv to ``3·s²`` channels → pixel shuffle by ``s``.
EDSR (Lim et al., 2017) keeps no batch norm in its blocks; neither does this space. Its upsampler uses one
conv and one shuffle for every scale (EDSR chains ×2 steps for ×4), which keeps the tail one layer.

Searchable: the width (label ``width``: every conv but the last), the number of residual blocks (NNI ``Repeat``,
label ``depth``, from 1), each conv's weight bits and sparsity (``b_{name}``, ``s_{name}``). Fully
convolutional: any ``H × W`` runs; the registered input shape, ``(3, 24, 24)``, is a low-resolution patch.
``EdsrSpace(widths=(64,), max_depth=16)`` is EDSR-baseline's body at ×``scale``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import ModelSpace, Repeat
from nni.nas.profiler.pytorch.utils.shape import MutableShape, ShapeTensor
from torch import nn

from nni_udc.nn import MutableQuantConv2d, bits_choice, sparsity_choice

__all__ = ["EdsrSpace", "PixelShuffle"]


class PixelShuffle(nn.PixelShuffle):
    """``torch.nn.PixelShuffle`` with the shape formula NNI's profiler needs (NNI 3.0 has none for it)."""

    def _shape_forward(self, input: ShapeTensor) -> MutableShape:
        n, c, h, w = input.real_shape
        r = self.upscale_factor
        return MutableShape(n, c // (r * r), h * r, w * r)


class _Convs:
    def __init__(self, weight_bits: Sequence[int], sparsity: Sequence[float], act_bits: int) -> None:
        self.weight_bits, self.sparsity, self.act_bits = weight_bits, sparsity, act_bits

    def __call__(self, name: str, cin: Any, cout: Any, after_relu: bool = False) -> MutableQuantConv2d:
        """A 3×3 conv with searched bits and sparsity; its input is quantised (unsigned) only after a ReLU."""
        quant: dict[str, Any] = dict(act_bits=self.act_bits, act_signed=False) if after_relu else {}
        return MutableQuantConv2d(cin, cout, 3, padding=1, weight_bits=bits_choice(f"b_{name}", self.weight_bits),
                                  sparsity=sparsity_choice(f"s_{name}", self.sparsity), **quant)


class _ResBlock(nn.Module):
    def __init__(self, index: int, width: Any, convs: _Convs, res_scale: float) -> None:
        super().__init__()
        self.conv1 = convs(f"r{index}c1", width, width)
        self.conv2 = convs(f"r{index}c2", width, width, after_relu=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x))) * self.res_scale


class EdsrSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """EDSR-style space: head → 1..``max_depth`` residual blocks → conv (+ head) → upsampler (conv, pixel shuffle).

    Args:
        scale: the upscaling factor (2, 3 or 4).
        widths: candidate widths (label ``width``).
        max_depth: most residual blocks (label ``depth``, from 1).
        weight_bits: candidate weight bit-widths of every conv.
        sparsity: candidate sparsity ratios of every conv.
        res_scale: the residual scaling of EDSR's blocks (0.1 in its wide models).
        act_bits: activation bits of the convs after a ReLU (fixed; 32 = float).

    Costs at the defaults (``exact_costs`` on the smallest and largest sample; checked in ``tests/test_zoo.py``):

    ============  ===========  =============
    sample        params       memory_bits
    ============  ===========  =============
    smallest      2 852        7 728
    largest       13 788       114 624
    ============  ===========  =============

    (smallest: narrowest, one block, 2 bits, sparsest; largest: widest, most blocks, 8 bits, dense.)

    Example:
        >>> space = EdsrSpace(scale=3)
        >>> labels = space.simplify()
        >>> labels['depth'].values, labels['width'].values
        ([1, 2], [8, 16])
        >>> space.random()(torch.zeros(2, 3, 10, 12)).shape
        torch.Size([2, 3, 30, 36])
    """

    def __init__(self, scale: int = 2, widths: Sequence[int] = (8, 16), max_depth: int = 2,
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5), res_scale: float = 1.0,
                 act_bits: int = 8) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, but got {scale!r}")
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, but got {max_depth!r}")
        convs = _Convs(weight_bits, sparsity, act_bits)
        width = nni.choice("width", list(widths))
        self.scale = scale
        self.head = convs("head", 3, width)  # the image itself is not quantised
        self.body = Repeat(lambda i: _ResBlock(i, width, convs, res_scale), (1, max_depth), label="depth")
        self.body_end = convs("body", width, width)
        self.upsample = nn.Sequential(convs("up", width, 3 * scale * scale), PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        return self.upsample(features + self.body_end(self.body(features)))
