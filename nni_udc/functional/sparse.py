"""Unstructured sparsity: magnitude masks with an exact zero count, and DASS-style learnable masks."""
from __future__ import annotations

import torch

__all__ = ["magnitude_mask", "n_zeros_for", "topk_mask_ste"]


def n_zeros_for(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a layer at ``sparsity`` sets to zero (rounded to nearest)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), but got {sparsity!r}")
    return int(round(sparsity * numel))


def _keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """1 for the ``numel - n_zeros`` largest scores, 0 for the rest; ties broken by position."""
    k = n_zeros_for(scores.numel(), sparsity)
    mask = torch.ones(scores.numel(), dtype=scores.dtype, device=scores.device)
    if k > 0:
        drop = torch.topk(scores.detach().flatten(), k, largest=False, sorted=False).indices
        mask[drop] = 0.0
    return mask.view_as(scores)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask zeroing exactly ``round(sparsity * numel)`` weights of smallest magnitude.

    The mask carries no gradient: ``weight * mask`` passes gradient to the kept weights only.

    Example:
        >>> w = torch.tensor([0.1, -3.0, 0.5, 2.0])
        >>> magnitude_mask(w, 0.5).tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    return _keep_mask(weight.abs(), sparsity)


def topk_mask_ste(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Hard top-k mask of ``|scores|`` whose gradient flows straight through to ``scores`` (DASS/HYDRA style).

    Forward: exactly ``round(sparsity * numel)`` zeros. Backward: identity to ``scores``, so a weight
    that was masked can grow its score back.
    """
    hard = _keep_mask(scores.abs(), sparsity)
    return hard + (scores - scores.detach())
