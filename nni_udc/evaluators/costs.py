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
    Weight memory after compression, in bits, with the cheaper of two documented encodings:

    * dense: every weight of a kept channel at its channel's bit-width;
    * bitmap-sparse: ``density ×`` the dense payload (non-zeros only) plus one bit per weight
      position of the kept channels marking which are non-zero.

    Removed (0-bit) channels store nothing. Biases add 32 bits per kept output channel.
    BatchNorm is assumed folded into the preceding layer and costs nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from nni.mutable import Mutable, MutableExpression

from nni_udc.evaluators.spec import LayerSpec

__all__ = ["BIAS_BITS", "COSTS", "CostFn", "bitops", "kept_channels", "macs", "memory_bits", "params", "total"]

BIAS_BITS = 32
CostFn = Callable[[LayerSpec], Any]


def _minimum(a: Any, b: Any) -> Any:
    """min() that also works on NNI expressions and tensors."""
    if isinstance(a, Mutable) or isinstance(b, Mutable):
        return MutableExpression.min(a, b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


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


def memory_bits(spec: LayerSpec) -> Any:
    """Compressed weight memory in bits: min(dense, bitmap-sparse) plus 32-bit biases."""
    dense = spec.fan_in * _bits_sum(spec)
    sparse = spec.density * dense + spec.fan_in * kept_channels(spec)
    bias = BIAS_BITS * kept_channels(spec) if spec.bias else 0
    return _minimum(dense, sparse) + bias


#: The built-in costs by name (units: count, count, BitOps, bits).
COSTS: dict[str, CostFn] = {"params": params, "macs": macs, "bitops": bitops, "memory_bits": memory_bits}


def total(specs: list[LayerSpec], cost: str | CostFn) -> Any:
    """Sum ``cost`` over ``specs``; ``cost`` is a name from :data:`COSTS` or a function of a spec.

    Example:
        >>> from nni_udc.evaluators.spec import LayerSpec
        >>> fc = LayerSpec('fc', 'linear', in_channels=10, out_channels=4, weight_bits=8, bias=True)
        >>> total([fc], 'memory_bits')   # 40 weights × 8 bits + 4 biases × 32 bits
        448
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
