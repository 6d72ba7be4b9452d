"""Low-rank factorisation of Conv2d and Linear weights from the dense weight's SVD.

A ``k×k`` conv ``C_in → C_out`` becomes a ``k×k`` conv ``C_in → rank`` followed by a ``1×1`` conv
``rank → C_out``; a linear ``in → out`` becomes ``in → rank → out``. The singular values are split
evenly (``sqrt(S)``) between the two factors, so both start at the same scale.
"""
from __future__ import annotations

import torch

__all__ = ["factorize_conv2d", "factorize_linear", "max_rank"]


def max_rank(out_features: int, in_features: int, kernel_size: int | tuple[int, int] = 1) -> int:
    """Largest rank worth factorising at: ``min(out, in · kh · kw)``; beyond it nothing is gained."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return min(out_features, in_features * kh * kw)


def _split_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    limit = min(matrix.shape)
    if not 1 <= rank <= limit:
        raise ValueError(f"rank must lie in [1, {limit}] for a {tuple(matrix.shape)} weight, but got {rank!r}")
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = (root[:, None] * vh[:rank]).to(matrix.dtype)   # (rank, in)
    second = (u[:, :rank] * root[None, :]).to(matrix.dtype)  # (out, rank)
    return first, second


def factorize_linear(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an ``(out, in)`` weight into ``(rank, in)`` and ``(out, rank)`` factors (best rank-r approximation).

    Example:
        >>> w = torch.randn(6, 4)
        >>> a, b = factorize_linear(w, 4)
        >>> bool(torch.allclose(b @ a, w, atol=1e-5))
        True
    """
    return _split_svd(weight, rank)


def factorize_conv2d(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an ``(out, in, kh, kw)`` conv weight into a ``(rank, in, kh, kw)`` conv and a ``(out, rank, 1, 1)`` conv."""
    out_c, in_c, kh, kw = weight.shape
    first, second = _split_svd(weight.reshape(out_c, in_c * kh * kw), rank)
    return first.reshape(rank, in_c, kh, kw), second.reshape(out_c, rank, 1, 1)
