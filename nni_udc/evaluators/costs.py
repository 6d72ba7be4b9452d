"""Cost formulas: pure functions of :class:`LayerSpec` records.

Every formula is written once, with ``+``, ``*``, comparisons and :func:`_minimum` only, so it
evaluates on numbers (exact cost), on NNI ``MutableExpression`` (profilers, constraints) and on
torch tensors (expected cost in a supernet) alike.

Conventions (all per weight layer; a model's cost is the sum over its layers):

``params``
    Stored weights of kept output channels plus their biases. Sparsity does not change it.
``macs``
    Multiply-accumulates of a dense engine: ``positions · kept_out · fan_in``. Sparsity does not
    change it either (unstructured zeros are still multiplied on such hardware).
``bitops``
    ``Σ_c positions · fan_in · weight_bits_c · act_bits`` (MACs weighted by both operand widths).
``memory_bits``
    Weight memory after compression, in bits: exactly the payload of the packed file
    (:mod:`nni_udc.export.packed`, ``docs/packed-format.md``). The weights take the cheaper of two encodings:

    * dense: every weight of a kept channel at its channel's bit-width;
    * bitmap-sparse: the stored (non-pruned) weights only, each at its channel's bit-width, plus one bit per weight
      position of the kept channels marking which are stored. A layer at sparsity ``s`` with ``n`` weight positions
      stores ``n - round(s·n)`` of them, the count its mask keeps (:func:`nni_udc.functional.n_zeros_for`). With
      bits per channel, where it matters which channels the pruned weights fall in, the payload is estimated as
      ``round((1 - s) ·`` the dense payload``)`` (an even spread); the packed file then stores what the mask kept.

    Then, per kept output channel: a quantisation scale of :data:`SCALE_BITS` bits (16: IEEE half) where the channel
    is quantised (2..16 bits; a float, 32-bit channel stores no scale), and a 32-bit bias where the layer stores one.
    Removed (0-bit) channels store nothing. The scale width is configurable: :func:`memory_bits_cost`
    (``scale_bits``), or ``scale_bits:`` on a target file's ``builtin`` ``memory_bits`` cost.

    A layer stores a bias when it has one **or when a BatchNorm takes its output directly** (``LayerSpec.batchnorm``,
    found by :mod:`nni_udc.evaluators.batchnorm_inputs`): export (:func:`nni_udc.export.bake`) folds that BatchNorm
    into the layer's scales and a bias, so a ``bias=False`` conv before a BatchNorm (DS-CNN, MobileNetV2, ResNet,
    torchvision models) stores ``32 × kept channels`` bits of bias. The BatchNorm itself then costs nothing more.
    Only a BatchNorm1d/BatchNorm2d with running statistics folds, and into a linear layer only on ``(N, C)`` outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from nni.mutable import Mutable, MutableExpression

from nni_udc.evaluators.spec import LayerSpec

__all__ = ["BIAS_BITS", "COSTS", "SCALE_BITS", "SCALE_BITS_CHOICES", "CostFn", "bitops", "kept_channels", "macs",
           "memory_bits", "memory_bits_cost", "params", "scaled_channels", "total"]

BIAS_BITS = 32
#: Bits of one stored quantisation scale (one per kept quantised output channel): IEEE half precision.
SCALE_BITS = 16
#: Scale widths the packed file can store: 16 (IEEE half) and 32 (IEEE single).
SCALE_BITS_CHOICES: tuple[int, ...] = (16, 32)
_FLOAT_BITS = 32  # nni_udc.functional.quant.FLOAT_BITS: a float channel (no scale)
CostFn = Callable[[LayerSpec], Any]


def _minimum(a: Any, b: Any) -> Any:
    """min() that also works on NNI expressions and tensors."""
    if isinstance(a, Mutable) or isinstance(b, Mutable):
        return MutableExpression.min(a, b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def _round_value(x: Any) -> Any:
    """Round half to even (Python's ``round``, as :func:`nni_udc.functional.n_zeros_for` counts); on a tensor the
    rounding passes the gradient straight through, so an expected cost stays differentiable."""
    if isinstance(x, torch.Tensor):
        return x + (torch.round(x) - x).detach()
    if isinstance(x, np.ndarray):  # a grid of values at once (nni_udc/strategies/expected_cost.py tabulates so)
        return np.round(x)
    return round(x)


def _round(x: Any) -> Any:
    """:func:`_round_value` that also works on NNI expressions (an expression node that rounds when evaluated)."""
    if isinstance(x, Mutable):
        return MutableExpression(_round_value, "round({})", [x])
    return _round_value(x)


def kept_channels(spec: LayerSpec) -> Any:
    """Output channels that are not removed (per-channel 0 bits removes a channel)."""
    if spec.per_channel:
        return sum((b > 0) * 1 for b in spec.weight_bits)
    return spec.out_channels


def _bits_sum(spec: LayerSpec) -> Any:
    """Σ over output channels of the channel's weight bits (removed channels add 0)."""
    if spec.per_channel:
        return sum(spec.weight_bits)
    return spec.weight_bits * spec.out_channels


def scaled_channels(spec: LayerSpec) -> Any:
    """Output channels that store a quantisation scale: kept and quantised (0 < bits < 32)."""
    if spec.per_channel:
        return sum((b > 0) * 1 * (b < _FLOAT_BITS) for b in spec.weight_bits)
    return kept_channels(spec) * (spec.weight_bits < _FLOAT_BITS)


def _is_one(density: Any) -> bool:
    return isinstance(density, (int, float)) and density == 1


def _kept(positions: Any, density: Any) -> Any:
    """Weights a mask keeps of ``positions`` at ``density``: ``positions - round((1 - density) · positions)``."""
    if _is_one(density):
        return positions
    return positions - _round((1 - density) * positions)


def _stored_bits(spec: LayerSpec) -> Any:
    """The bitmap-sparse payload's values: each kept weight at its channel's bit-width."""
    if spec.per_channel:  # which channels the pruned weights fall in is not known: an even spread, in whole bits
        dense = spec.fan_in * _bits_sum(spec)
        return dense if _is_one(spec.density) else _round(spec.density * dense)
    return spec.weight_bits * _kept(spec.fan_in * kept_channels(spec), spec.density)


def params(spec: LayerSpec) -> Any:
    """Stored parameters (weights and biases of kept channels)."""
    kept = kept_channels(spec)
    return kept * spec.fan_in + (kept if spec.bias else 0)


def macs(spec: LayerSpec) -> Any:
    """Dense multiply-accumulates per input sample."""
    return spec.positions * kept_channels(spec) * spec.fan_in


def bitops(spec: LayerSpec) -> Any:
    """MACs weighted by weight bits × activation bits."""
    return spec.positions * spec.fan_in * _bits_sum(spec) * spec.act_bits


def memory_bits(spec: LayerSpec, scale_bits: int = SCALE_BITS) -> Any:
    """Compressed weight memory in bits: min(dense, bitmap-sparse), plus a ``scale_bits`` scale per kept quantised
    channel and a 32-bit bias per kept channel where the layer stores a bias (its own, or a folded BatchNorm's).

    Example:
        >>> fc = LayerSpec('fc', 'linear', in_channels=10, out_channels=4, weight_bits=[8, 4, 0, 32], bias=True)
        >>> memory_bits(fc)   # 10·(8+4+32) weights + 2 scales·16 + 3 biases·32
        568
        >>> sparse = LayerSpec('conv', 'conv', 8, 8, kernel_size=(3, 3), weight_bits=4, density=0.25)
        >>> memory_bits(sparse)   # 576 positions: 144 kept · 4 bits + a 576-bit bitmap + 8 scales·16
        1280
        >>> before_bn = LayerSpec('conv', 'conv', 8, 8, kernel_size=(3, 3), weight_bits=4, batchnorm=True)
        >>> memory_bits(before_bn)   # 576 weights · 4 bits + 8 scales·16 + 8 folded biases·32
        2688
    """
    dense = spec.fan_in * _bits_sum(spec)
    if _is_one(spec.density):  # unpruned: the bitmap only adds bits (and the expression stays a sum, fast to expect)
        weights = dense
    else:
        weights = _minimum(dense, _stored_bits(spec) + spec.fan_in * kept_channels(spec))
    bias = BIAS_BITS * kept_channels(spec) if spec.stores_bias else 0
    return weights + bias + scale_bits * scaled_channels(spec)


def memory_bits_cost(scale_bits: int = SCALE_BITS) -> CostFn:
    """:func:`memory_bits` counting ``scale_bits`` per stored scale (16 or 32, what the packed file can store).

    Example:
        >>> fc = LayerSpec('fc', 'linear', in_channels=10, out_channels=4, weight_bits=8)
        >>> memory_bits_cost(32)(fc) - memory_bits(fc)   # 4 scales, 16 bits more each
        64
    """
    if scale_bits not in SCALE_BITS_CHOICES or isinstance(scale_bits, bool):
        raise ValueError(f"scale_bits must be one of {list(SCALE_BITS_CHOICES)}, but got {scale_bits!r}")
    if scale_bits == SCALE_BITS:
        return memory_bits

    def cost(spec: LayerSpec) -> Any:
        return memory_bits(spec, scale_bits)

    cost.__name__ = f"memory_bits_scale{scale_bits}"
    return cost


#: The built-in costs by name (units: count, count, BitOps, bits).
COSTS: dict[str, CostFn] = {"params": params, "macs": macs, "bitops": bitops, "memory_bits": memory_bits}


def total(specs: list[LayerSpec], cost: str | CostFn) -> Any:
    """Sum ``cost`` over ``specs``; ``cost`` is a name from :data:`COSTS` or a function of a spec.

    Example:
        >>> from nni_udc.evaluators.spec import LayerSpec
        >>> fc = LayerSpec('fc', 'linear', in_channels=10, out_channels=4, weight_bits=8, bias=True)
        >>> total([fc], 'memory_bits')   # 40 weights × 8 bits + 4 scales × 16 bits + 4 biases × 32 bits
        512
    """
    fn = resolve_cost(cost)
    return sum((fn(s) for s in specs), 0)


def resolve_cost(cost: str | CostFn) -> CostFn:
    """A cost function from its name, or the function itself."""
    if callable(cost):
        return cost
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; known costs: {sorted(COSTS)}")
    return COSTS[cost]
