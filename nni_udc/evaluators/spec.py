"""The layer spec: the small record every cost model reads.

A compressible layer describes itself as a :class:`LayerSpec`. Cost formulas
(:mod:`nni_udc.evaluators.costs`) are pure functions of these records, so one formula gives

- the exact cost of a frozen model (fields are numbers),
- an NNI symbolic expression for profilers and constraints (fields are ``MutableExpression``),
- later, the differentiable expected cost of a supernet (fields are tensors).

A low-rank layer is described as two specs (its two factors), so rank needs no special case:
it is the ``out_channels`` of the first factor and the ``in_channels`` of the second.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LayerSpec"]


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer as the cost models see it (a linear layer is a 1×1 conv at one position).

    Attributes:
        name: module path in the model (``'features.0.conv'``; factors get ``'.first'``/``'.second'``).
        kind: ``'conv'`` or ``'linear'`` (for reports only; the formulas treat both alike).
        in_channels: input channels (or features).
        out_channels: output channels (or features), including removed ones.
        kernel_size: ``(kh, kw)``; ``(1, 1)`` for linear layers.
        groups: conv groups (``in_channels`` for a depthwise conv).
        positions: output positions the weights are applied at (``H_out·W_out``; 1 for a linear layer
            on a vector, ``L`` tokens or ``L_out`` for a sequence).
        weight_bits: weight bit-width, a single value or one per output channel (0 = channel removed).
        act_bits: bit-width of the layer's input activations (32 = float).
        density: fraction of weights that are non-zero (1 - sparsity).
        bias: whether the layer has a bias (stored as 32-bit per kept output channel).
        batchnorm: whether a BatchNorm takes the layer's output directly (export folds it into the layer's scales
            and a bias, so a layer without a bias gains one; see :mod:`nni_udc.evaluators.batchnorm_inputs`).
    """

    name: str
    kind: str
    in_channels: Any
    out_channels: Any
    kernel_size: tuple[int, int] = (1, 1)
    groups: int = 1
    positions: Any = 1
    weight_bits: Any = 32
    act_bits: Any = 32
    density: Any = 1.0
    bias: bool = False
    batchnorm: bool = False

    @property
    def per_channel(self) -> bool:
        """Whether weight bits are given per output channel."""
        return isinstance(self.weight_bits, Sequence) and not isinstance(self.weight_bits, str)

    @property
    def stores_bias(self) -> bool:
        """Whether the deployed layer stores a bias: its own, or one that a folded BatchNorm gives it."""
        return self.bias or self.batchnorm

    @property
    def fan_in(self) -> Any:
        """Weights feeding one output channel: ``in/groups · kh · kw``."""
        kh, kw = self.kernel_size
        return self.in_channels // self.groups * kh * kw
