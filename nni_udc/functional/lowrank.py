"""Low-rank factorisation of convolution (1-D or 2-D) and Linear weights from the dense weight's SVD.

A ``k×k`` conv ``C_in → C_out`` becomes a ``k×k`` conv ``C_in → rank`` followed by a ``1×1`` conv
``rank → C_out`` (a 1-D conv likewise, with a ``k`` then a ``1`` kernel); a linear ``in → out`` becomes
``in → rank → out``. The singular values are split evenly (``sqrt(S)``) between the two factors, so both start at the same scale.
"""
from __future__ import annotations

import torch

__all__ = ["factorize_conv", "factorize_conv2d", "factorize_linear", "max_rank"]


def max_rank(out_features: int, in_features: int, kernel_size: int | tuple[int, ...] = 1) -> int:
    """Largest rank worth factorising at: ``min(out, in · prod(kernel))``; beyond it nothing is gained.

    An integer ``kernel_size`` means a square ``k×k`` kernel; give a 1-D conv's kernel as a tuple ``(k,)``.

    Example:
        >>> max_rank(16, 2, 3), max_rank(16, 2, (3,))
        (16, 6)
    """
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    size = 1
    for k in kernel:
        size *= k
    return min(out_features, in_features * size)


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


def factorize_conv(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an ``(out, in, *kernel)`` conv weight (1-D, 2-D, ...) into a ``(rank, in, *kernel)`` conv and an
    ``(out, rank, 1, ...)`` pointwise conv.

    Example:
        >>> w = torch.randn(6, 2, 3)           # a Conv1d weight: 6 outputs, 2 inputs, kernel 3
        >>> a, b = factorize_conv(w, 6)
        >>> a.shape, b.shape
        (torch.Size([6, 2, 3]), torch.Size([6, 6, 1]))
        >>> bool(torch.allclose((b[:, :, 0] @ a.reshape(6, -1)).reshape(w.shape), w, atol=1e-5))
        True
    """
    out_c, in_c, *kernel = weight.shape
    first, second = _split_svd(weight.reshape(out_c, -1), rank)
    return first.reshape(rank, in_c, *kernel), second.reshape(out_c, rank, *(1 for _ in kernel))


def factorize_conv2d(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an ``(out, in, kh, kw)`` conv weight into a ``(rank, in, kh, kw)`` conv and a ``(out, rank, 1, 1)`` conv."""
    if weight.dim() != 4:
        raise ValueError(f"factorize_conv2d needs an (out, in, kh, kw) weight, but got shape {tuple(weight.shape)}")
    return factorize_conv(weight, rank)
