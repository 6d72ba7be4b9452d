"""Hardware-cost penalties for the one-shot search: a linear weight, or a target reached by dual ascent.

Both read the *expected* cost (a tensor with gradient to the architecture parameters, see
:class:`~nni_udc.strategies.expected_cost.ExpectedCost`) relative to a ``reference`` cost, normally the
same space's uncompressed float architecture, so their knobs are scale-free.

Example:
    >>> import torch
    >>> penalty = TargetPenalty(target=0.25, reference=1000.0, step_size=2.0)
    >>> cost = torch.tensor(500.0, requires_grad=True)
    >>> _ = penalty(cost); penalty.update(cost)   # 0.5 of the reference, target 0.25: λ grows
    >>> penalty.weight
    0.5
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LinearPenalty", "TargetPenalty"]


def _check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, but got {value!r}")
    return float(value)


@dataclass
class LinearPenalty:
    """``λ · cost / reference``: a fixed exchange rate between task loss and relative cost.

    Args:
        weight: λ; 0 searches for accuracy alone.
        reference: the cost that counts as 1 (e.g. the float architecture's cost).
    """

    weight: float
    reference: float

    def __post_init__(self) -> None:
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or self.weight < 0:
            raise ValueError(f"weight must be a number >= 0, but got {self.weight!r}")
        self.reference = _check_positive("reference", self.reference)

    def __call__(self, cost: torch.Tensor) -> torch.Tensor:
        return self.weight * cost / self.reference

    def update(self, cost: torch.Tensor) -> None:
        """Nothing to adapt (kept so both penalties are used alike)."""


@dataclass
class TargetPenalty:
    """Drive ``cost <= target · reference`` with a multiplier λ adapted by dual ascent (augmented Lagrangian).

    With ``g = cost / reference - target`` and ``ρ = step_size``, the penalty is
    ``(max(0, λ + ρ·g)² - λ²) / (2ρ)`` and after each architecture step ``λ ← max(0, λ + ρ·g)``.
    Above the target the push on the cost grows until the cost comes down; below it the push fades, so
    accuracy is not traded away for nothing. The quadratic term damps the oscillation that plain dual
    ascent shows once softmax probabilities saturate.

    λ never goes below 0: a search under budget feels no push at all, and never a reward for spending more
    (a negative λ turns the penalty into one, and pushed earlier searches toward float and 8-bit dense
    options). The export then spends what is left of the budget on the most probable architecture.

    Args:
        target: the allowed cost as a fraction of ``reference`` (e.g. 0.25).
        reference: the cost that counts as 1.
        step_size: dual-ascent rate of λ.
        weight: the starting λ (>= 0).
    """

    target: float
    reference: float
    step_size: float = 1.0
    weight: float = 0.0

    def __post_init__(self) -> None:
        self.target = _check_positive("target", self.target)
        self.reference = _check_positive("reference", self.reference)
        self.step_size = _check_positive("step_size", self.step_size)
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or not self.weight >= 0:
            raise ValueError(f"weight must be a number >= 0, but got {self.weight!r}")

    def violation(self, cost: torch.Tensor) -> torch.Tensor:
        """How far the relative cost is above the target (negative below it)."""
        return cost / self.reference - self.target

    def __call__(self, cost: torch.Tensor) -> torch.Tensor:
        g = self.violation(cost)
        shifted = torch.clamp(self.weight + self.step_size * g, min=0.0)
        return (shifted**2 - self.weight**2) / (2 * self.step_size)

    def update(self, cost: torch.Tensor) -> None:
        """One dual-ascent step on λ from the current expected cost."""
        self.weight = max(0.0, self.weight + self.step_size * float(self.violation(cost.detach())))
