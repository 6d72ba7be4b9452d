"""A small EDSR-style super-resolution space: ``(3, H, W)`` → ``(3, sH, sW)`` with a pixel shuffle.

Head (3×3 conv to ``width``) → residual blocks (3×3 conv, ReLU, 3×3 conv, scaled by ``res_scale``, + input) → 3×3
conv, + the head's output (EDSR's global skip) → 3×3 conv to ``3·s²`` channels → pixel shuffle by ``s``, + the
bicubic upsample of the input (``skip='bicubic'``, the default). EDSR (Lim et al., 2017) keeps no batch norm in
its blocks; neither does this space. Its upsampler uses one conv and one shuffle for every scale (EDSR chains ×2
steps for ×4), which keeps the tail one layer.

**Why the bicubic skip.** With it the network learns only the residual between the bicubic upsample and the
high-resolution image, as VDSR (Kim et al., 2016) and other small SR networks do, and its last conv starts at
zero, so an untrained model *is* bicubic upsampling. Without it, a network of this size has to learn to
reproduce the image itself from 2–8-bit weights: on ``examples/udc-sr.yaml`` (bundled images, ×2,
``nni-udc pareto``) every searched and every uniform model scored 21.8–27.4 dB test PSNR, below plain bicubic
upsampling at 30.77 dB (34.69 dB val); with the skip, the same run's 29 models score 30.84–31.42 dB test.
The skip is ``F.interpolate(x, scale_factor=s, mode='bicubic', align_corners=False)`` (no weights: it adds nothing
to any cost), the counterpart of the antialiased bicubic downscaling that makes the LR input
(:func:`nni_udc.data.sr.degrade`). ``skip=None`` is the network without it. (A weight-sharing supernet builds
its own layers at the largest width: its last conv starts from its own initialisation, its bias at zero.)

Searchable: the width (label ``width``: every conv but the last), the number of residual blocks (NNI ``Repeat``,
label ``depth``, from 1), each conv's weight bits and sparsity (``b_{name}``, ``s_{name}``). Fully
convolutional: any ``H × W`` runs; the registered input shape, ``(3, 24, 24)``, is an example low-resolution
patch, and a data set of other patch sizes (``data.args.patch``) is accepted (:attr:`EdsrSpace.any_input_size`).
``EdsrSpace(widths=(64,), max_depth=16)`` is EDSR-baseline's body at ×``scale``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace, Repeat
from nni.nas.profiler.pytorch.utils.shape import MutableShape, ShapeTensor
from torch import nn

from nni_udc.nn import MutableQuantConv2d, bits_choice, sparsity_choice

__all__ = ["SKIPS", "BicubicUpsample", "EdsrSpace", "PixelShuffle"]

#: the global skips offered (``None``: none)
SKIPS = ("bicubic", None)


class PixelShuffle(nn.PixelShuffle):
    """``torch.nn.PixelShuffle`` with the shape formula NNI's profiler needs (NNI 3.0 has none for it)."""

    def _shape_forward(self, input: ShapeTensor) -> MutableShape:
        n, c, h, w = input.real_shape
        r = self.upscale_factor
        return MutableShape(n, c // (r * r), h * r, w * r)


class BicubicUpsample(nn.Module):
    """``F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False)`` as a module, with the shape
    formula NNI's profiler needs. It has no weights.

    Example:
        >>> x = torch.rand(1, 3, 4, 5)
        >>> BicubicUpsample(2)(x).shape
        torch.Size([1, 3, 8, 10])
        >>> bool(torch.allclose(BicubicUpsample(2)(torch.full((1, 3, 4, 4), 0.3)), torch.tensor(0.3)))
        True
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def _shape_forward(self, input: ShapeTensor) -> MutableShape:
        n, c, h, w = input.real_shape
        return MutableShape(n, c, h * self.scale, w * self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class _Convs:
    def __init__(self, weight_bits: Sequence[int], sparsity: Sequence[float], act_bits: int) -> None:
        self.weight_bits, self.sparsity, self.act_bits = weight_bits, sparsity, act_bits

    def __call__(self, name: str, cin: Any, cout: Any, after_relu: bool = False) -> MutableQuantConv2d:
        """A 3×3 conv with searched bits and sparsity; its input is quantised (unsigned) only after a ReLU."""
        quant: dict[str, Any] = dict(act_bits=self.act_bits, act_signed=False) if after_relu else {}
        return MutableQuantConv2d(cin, cout, 3, padding=1, weight_bits=bits_choice(f"b_{name}", self.weight_bits),
                                  sparsity=sparsity_choice(f"s_{name}", self.sparsity), **quant)


@torch.no_grad()
def _zero_weights(conv: nn.Module) -> None:
    """Zero a conv's own weight and bias (its activation quantiser's clip, in a submodule, is kept)."""
    for parameter in conv.parameters(recurse=False):
        parameter.zero_()


class _ResBlock(nn.Module):
    def __init__(self, index: int, width: Any, convs: _Convs, res_scale: float) -> None:
        super().__init__()
        self.conv1 = convs(f"r{index}c1", width, width)
        self.conv2 = convs(f"r{index}c2", width, width, after_relu=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x))) * self.res_scale


class EdsrSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """EDSR-style space: head → 1..``max_depth`` residual blocks → conv (+ head) → upsampler (conv, pixel shuffle)
    (+ bicubic upsample of the input).

    Args:
        scale: the upscaling factor (2, 3 or 4).
        widths: candidate widths (label ``width``).
        max_depth: most residual blocks (label ``depth``, from 1).
        weight_bits: candidate weight bit-widths of every conv.
        sparsity: candidate sparsity ratios of every conv.
        res_scale: the residual scaling of EDSR's blocks (0.1 in its wide models).
        act_bits: activation bits of the convs after a ReLU (fixed; 32 = float).
        skip: ``'bicubic'``: add the bicubic upsample of the input to the output, and start the last conv at zero
            (an untrained model outputs exactly the bicubic upsample); ``None``: no global skip, default init.

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
        >>> x = torch.rand(1, 3, 8, 8)    # untrained: the last conv is zero, the output is the bicubic upsample
        >>> bool(torch.equal(space.random()(x), BicubicUpsample(3)(x)))
        True
    """

    #: fully convolutional: a data set of any ``(3, H, W)`` fits (nni_udc/experiment.py checks the channels only)
    any_input_size = True

    def __init__(self, scale: int = 2, widths: Sequence[int] = (8, 16), max_depth: int = 2,
                 weight_bits: Sequence[int] = (2, 4, 8), sparsity: Sequence[float] = (0.0, 0.5), res_scale: float = 1.0,
                 act_bits: int = 8, skip: str | None = "bicubic") -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, but got {scale!r}")
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, but got {max_depth!r}")
        if skip not in SKIPS:
            raise ValueError(f"skip must be 'bicubic' or None, but got {skip!r}")
        convs = _Convs(weight_bits, sparsity, act_bits)
        width = nni.choice("width", list(widths))
        self.scale = scale
        self.head = convs("head", 3, width)  # the image itself is not quantised
        self.body = Repeat(lambda i: _ResBlock(i, width, convs, res_scale), (1, max_depth), label="depth")
        self.body_end = convs("body", width, width)
        tail = convs("up", width, 3 * scale * scale)
        self.upsample = nn.Sequential(tail, PixelShuffle(scale))
        self.skip = BicubicUpsample(scale) if skip == "bicubic" else None
        if self.skip is not None:  # the residual starts at zero: an untrained model is bicubic upsampling
            _zero_weights(tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        residual = self.upsample(features + self.body_end(self.body(features)))
        return residual if self.skip is None else residual + self.skip(x)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """NNI's freeze; a model frozen from the space itself (its searched layers are built afresh) also starts
        its last conv at zero with the skip. A supernet's freeze keeps its trained weights: a strategy has then
        replaced that conv by its own op (nni_udc/strategies/supernet.py), which is left alone."""
        model = super().freeze(sample)
        if self.skip is not None and type(self.upsample[0]) is MutableQuantConv2d:
            _zero_weights(model.upsample[0])
        return model
